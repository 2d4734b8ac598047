//! `oci-volume-runtime`: a runc-compatible wrapper. For `create` and `run` it prepares the
//! bundle's bind-mount sources, then execs the real runtime with the argv unchanged; every
//! other subcommand execs the runtime at once.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::config::{Config, ENV_PATH};
use crate::hook;
use crate::logging::{self, Sink};
use crate::runc_args::{self, Invocation};
use crate::spec;
use crate::staging;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::unistd::Pid;
use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, Ordering};

pub const BIN: &str = "oci-volume-runtime";

/// Finds the runtime to exec: an absolute path, or a name on PATH — never this wrapper.
pub fn find_runtime(name: &str, path_var: Option<&OsStr>) -> Result<PathBuf> {
    let me = std::fs::metadata("/proc/self/exe")
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let is_me =
        |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino())) == me && me.is_some();
    let is_exe =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0);
    if name.contains('/') {
        let p = PathBuf::from(name);
        if is_me(&p) {
            bail!("runtime {name} is {BIN} itself; set `runtime` to the real runtime");
        }
        if !is_exe(&p) {
            bail!("runtime {name} is not an executable file");
        }
        return Ok(p);
    }
    let dirs = path_var
        .map(|p| p.to_os_string())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&dirs) {
        let p = dir.join(name);
        if is_exe(&p) && !is_me(&p) {
            return Ok(p);
        }
    }
    bail!("runtime {name:?} not found on PATH (other than {BIN} itself)")
}

/// The wrapper's main: never returns on success (the runtime replaces it); returns the exit
/// status otherwise.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let inv = runc_args::parse(&args);
    // Pass-through: the config is read only for the runtime's name.
    let config = match Config::load(None) {
        Ok(c) => c,
        Err(e) => return fail(&inv, Sink::Stderr, &e),
    };
    let runtime = match find_runtime(&config.runtime, std::env::var_os("PATH").as_deref()) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                &inv,
                Sink::Stderr,
                &e.context(format!("config {}", config_path_hint())),
            );
        }
    };
    if let Some(why) = inv.refusal() {
        let sink = logging::init(&config.log, BIN);
        return fail(
            &inv,
            sink,
            &anyhow::anyhow!("{why}; refused: runc's bundle is not certain"),
        );
    }
    if inv.prepares() {
        let sink = logging::init(&config.log, BIN);
        let id = inv.id().unwrap_or("-").to_string();
        let span = tracing::info_span!("container", id = %id).entered();
        match prepare_bundle(&config, &inv) {
            Err(e) => return fail(&inv, sink, &e),
            // Staging mounts are needed only while runc mounts: run it as a child, then
            // take them away and put config.json back as it was, whatever the outcome.
            Ok(Some(original)) => return run_then_cleanup(&runtime, &args, &config, &id, original),
            Ok(None) => {}
        }
        drop(span);
    } else if let runc_args::Action::Delete { id } = &inv.action {
        // A wrapper killed during `create` left its staging mounts: `delete` follows.
        if staging::check_key(id).is_ok() && config.staging_dir.join(id).exists() {
            let _ = staging::cleanup(&config.staging_dir, id);
        }
    }
    let err = std::process::Command::new(&runtime)
        .arg0(&runtime)
        .args(&args)
        .exec();
    fail(
        &inv,
        Sink::Stderr,
        &anyhow::Error::new(err).context(format!("exec {}", runtime.display())),
    )
}

fn config_path_hint() -> String {
    std::env::var(ENV_PATH).unwrap_or_else(|_| crate::config::DEFAULT_PATH.into())
}

/// config.json as the engine wrote it, to put back once the runtime has read the pinned one.
struct Original {
    bundle: PathBuf,
    doc: serde_json::Value,
}

/// Prepares the bundle's sources and, when a source must point elsewhere, replaces
/// config.json (atomically, in the bundle) with the edited document. `Some` when sources
/// were pinned under the container's staging directory.
fn prepare_bundle(config: &Config, inv: &Invocation) -> Result<Option<Original>> {
    let bundle = match inv.bundle() {
        Some(b) => b.to_path_buf(),
        None => std::env::current_dir().context("working directory")?,
    };
    let mut doc = spec::read_bundle_config(&bundle)?;
    let id = inv.id().unwrap_or_default();
    let before = doc.clone();
    let result = hook::rewrite(config, &mut doc, &bundle, id).and_then(|_| {
        if doc != before {
            write_config(&bundle, &doc)?;
        }
        Ok(())
    });
    let staged = config.staging_dir.join(id);
    if let Err(e) = result {
        if staging::check_key(id).is_ok() {
            let _ = staging::cleanup(&config.staging_dir, id);
        }
        return Err(e);
    }
    let pinned = config.pin_sources && staging::check_key(id).is_ok() && staged.exists();
    Ok(pinned.then_some(Original {
        bundle,
        doc: before,
    }))
}

/// The child runtime, for the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // kill(2) is async-signal-safe.
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::try_from(sig).ok());
    }
}

/// Runs the runtime as a child with the argv unchanged (stdio and every inherited
/// descriptor pass through), forwards signals to it, takes the staging mounts away once it
/// exits, and exits as it did.
fn run_then_cleanup(
    runtime: &Path,
    args: &[OsString],
    config: &Config,
    id: &str,
    original: Original,
) -> i32 {
    const FORWARDED: [Signal; 7] = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ];
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in FORWARDED {
        // SAFETY: the handler only reads an atomic and calls kill(2).
        let _ = unsafe { sigaction(sig, &action) };
    }
    let status = std::process::Command::new(runtime)
        .arg0(runtime)
        .args(args)
        .spawn()
        .and_then(|mut child| {
            CHILD.store(child.id() as i32, Ordering::SeqCst);
            child.wait()
        });
    if let Err(e) = staging::cleanup(&config.staging_dir, id) {
        tracing::error!("taking staging mounts away: {e:#}");
    }
    // The staging paths are gone: a later create from this bundle starts from the original.
    if let Err(e) = write_config(&original.bundle, &original.doc) {
        tracing::error!("putting config.json back: {e:#}");
    }
    match status {
        Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(code), _) => code,
            (None, Some(sig)) => {
                // Die of the same signal, as the runtime did.
                let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
                if let Ok(sig) = Signal::try_from(sig) {
                    let _ = unsafe { sigaction(sig, &default) };
                    let _ = nix::sys::signal::raise(sig);
                }
                128 + sig
            }
            _ => 1,
        },
        Err(e) => {
            let err = anyhow::Error::new(e).context(format!("running {}", runtime.display()));
            logging::report_failure(Sink::Stderr, BIN, &err);
            1
        }
    }
}

fn write_config(bundle: &Path, doc: &serde_json::Value) -> Result<()> {
    let path = bundle.join("config.json");
    let tmp = bundle.join(format!(
        ".config.json.{}.oci-volume-runtime",
        std::process::id()
    ));
    let write = || -> Result<()> {
        let mode = std::fs::metadata(&path)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0o644);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        serde_json::to_writer(&mut f, doc)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        // No fsync: the bundle lives as long as the container does, and a crash ends both.
        std::fs::rename(&tmp, &path)?;
        Ok(())
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("rewriting {}", path.display()))
}

/// Reports a failure: stderr, the log, and runc's `--log` file where containerd reads it.
fn fail(inv: &Invocation, sink: Sink, err: &anyhow::Error) -> i32 {
    logging::report_failure(sink, BIN, err);
    if let Some(log) = &inv.log {
        let msg = format!("{BIN}: {}", logging::one_line(&format!("{err:#}")));
        let _ = append_runtime_log(log, inv.log_format.as_deref(), &msg);
    }
    1
}

/// One line in runc's log format: JSON (`--log-format json`) or logrus text.
pub fn runtime_log_line(format: Option<&str>, msg: &str, now: SystemTime) -> String {
    let time = rfc3339(now);
    if format == Some("json") {
        serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
    } else {
        format!("time={:?} level=error msg={:?}", time, msg)
    }
}

fn append_runtime_log(path: &Path, format: Option<&str>, msg: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{}", runtime_log_line(format, msg, SystemTime::now()))
}

/// UTC RFC 3339 with seconds, e.g. 2026-11-24T02:03:04Z.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_485_784);
        let line = runtime_log_line(Some("json"), "oci-volume-runtime: mount /x: bad", t);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "oci-volume-runtime: mount /x: bad");
        assert_eq!(v["time"], "2026-11-24T02:03:04Z");
        let text = runtime_log_line(None, "a \"q\"", t);
        assert_eq!(
            text,
            "time=\"2026-11-24T02:03:04Z\" level=error msg=\"a \\\"q\\\"\""
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

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
