//! The real runtime: finding it, exec'ing it, running it as a child with signals forwarded.
//!
//! Forwarding needs no signal handler: the signals an engine sends a runtime, and SIGCHLD,
//! are blocked before the bundle's config.json is replaced, so none can kill the wrapper
//! between the replacement and the put-back; the wrapper then takes them one by one with
//! sigwait(2) and passes each on, until SIGCHLD says the runtime is gone.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{Result, bail};
use nix::sys::signal::{SigSet, Signal, kill, raise};
use nix::unistd::Pid;

use crate::names::RUNTIME as BIN;

/// The signals an engine sends a runtime that the wrapper passes on.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Finds the runtime to exec: an absolute path, or a name on PATH — never this wrapper.
pub fn find_runtime(name: &str, path_var: Option<&std::ffi::OsStr>) -> Result<PathBuf> {
    let me = std::fs::metadata("/proc/self/exe")
        .ok()
        .map(|m| (m.dev(), m.ino()));
    // One stat per candidate (this runs before every runtime call): None when it is not an
    // executable file, else whether it is this very binary.
    let probe = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        (m.is_file() && m.mode() & 0o111 != 0).then(|| me == Some((m.dev(), m.ino())))
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return match probe(&p) {
            Some(true) => {
                bail!("runtime {name} is {BIN} itself; set `runtime` to the real runtime")
            }
            Some(false) => Ok(p),
            None => bail!("runtime {name} is not an executable file"),
        };
    }
    let dirs = path_var
        .map(|p| p.to_os_string())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&dirs) {
        let p = dir.join(name);
        if probe(&p) == Some(false) {
            return Ok(p);
        }
    }
    bail!("runtime {name:?} not found on PATH (other than {BIN} itself)")
}

/// Replaces this process with the runtime, argv unchanged; returns only the reason it could
/// not.
pub fn exec(runtime: &Path, args: &[OsString]) -> anyhow::Error {
    let err = Command::new(runtime).arg0(runtime).args(args).exec();
    anyhow::Error::new(err).context(format!("exec {}", runtime.display()))
}

/// Proof that the forwarded signals, SIGCHLD and SIGALRM are blocked on this thread (the wrapper's
/// only one by then). They stay blocked until the process exits: one arriving after the
/// runtime is gone must not cut short putting config.json back.
pub struct Blocked(SigSet);

/// Blocks the forwarded signals and SIGCHLD; one sent from now on waits, pending, until
/// [`supervise`] passes it on.
pub fn block_signals() -> Result<Blocked> {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGALRM);
    set.thread_block()
        .map_err(|e| anyhow::Error::new(e).context("blocking signals"))?;
    Ok(Blocked(set))
}

/// How the runtime child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Killed(Signal),
}

/// Runs the runtime as a child with the argv unchanged (stdio and every inherited descriptor
/// pass through; std gives it an empty signal mask), passes on every forwarded signal sent
/// to the wrapper, and returns how it ended.
pub fn supervise(runtime: &Path, args: &[OsString], signals: &Blocked) -> Result<Ended> {
    let spawned = Command::new(runtime).arg0(runtime).args(args).spawn();
    let mut child = spawned
        .map_err(|e| anyhow::Error::new(e).context(format!("running {}", runtime.display())))?;
    let pid = Pid::from_raw(child.id() as i32);
    tick();
    loop {
        match signals.0.wait().map_err(|e| waiting(e.into()))? {
            Signal::SIGCHLD | Signal::SIGALRM => match reap(&mut child)? {
                Some(ended) => return Ok(ended),
                None => tick(),
            },
            // Until the wrapper reaps it, the pid cannot name another process.
            sig => drop(kill(pid, sig)),
        }
    }
}

/// A SIGALRM in a second: with SIGCHLD ignored (inherited from the engine as SIG_IGN) the
/// kernel sends none, and the wrapper would wait for ever for a child already reaped.
fn tick() {
    nix::unistd::alarm::set(1);
}

/// The child's end, once it has ended (SIGCHLD also comes for a stop or a resume).
fn reap(child: &mut Child) -> Result<Option<Ended>> {
    let Some(status) = child.try_wait().map_err(waiting)? else {
        return Ok(None);
    };
    Ok(Some(match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(sig)) => Signal::try_from(sig).map_or(Ended::Exited(128 + sig), Ended::Killed),
        _ => Ended::Exited(1),
    }))
}

fn waiting(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("waiting for the runtime")
}

/// Dies of `sig`, as the runtime child did, so that the engine sees the same wait status;
/// returns 128 + sig if the signal does not kill (its disposition is not the default one).
pub fn die_like(sig: Signal) -> i32 {
    let mut one = SigSet::empty();
    one.add(sig);
    // Raised while blocked it is pending; unblocking delivers it before the call returns.
    let _ = raise(sig);
    let _ = one.thread_unblock();
    128 + sig as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn never_finds_itself() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(find_runtime(me.to_str().unwrap(), None).is_err());
        let dir = me.parent().unwrap().as_os_str().to_os_string();
        let name = me.file_name().unwrap().to_str().unwrap();
        assert!(find_runtime(name, Some(&dir)).is_err());
        assert!(find_runtime("sh", Some(OsStr::new("/nonexistent:/bin:/usr/bin"))).is_ok());
    }
}
