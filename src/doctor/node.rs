//! The node's own checks: configuration, chroot patterns, runtime, wrapper, kernel features
//! (where log lines go: `log.rs`; the staging directory: `staging.rs`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

use super::{Options, Report, Verdict};
use crate::chroot::Pattern;
use crate::config::{self, Config};
use crate::logging::one_line;
use crate::resolve::Root;

pub(super) fn config_path(opts: &Options) -> PathBuf {
    opts.config
        .clone()
        .or_else(|| {
            std::env::var_os(config::ENV_PATH)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

/// Loads the configuration the tool would use; the defaults when it is broken (reported).
pub fn config(opts: &Options, r: &mut Report) -> Config {
    let path = config_path(opts);
    match Config::load(opts.config.as_deref()) {
        Ok(c) if path.exists() => {
            r.push("config", Verdict::Ok, format!("{} parses", path.display()));
            c
        }
        Ok(c) => {
            r.push(
                "config",
                Verdict::Ok,
                format!("{} absent: the defaults apply", path.display()),
            );
            c
        }
        Err(e) => {
            r.problem(
                "config",
                Verdict::Fail,
                format!(
                    "{} (the checks below use the defaults)",
                    one_line(&format!("{e:#}"))
                ),
                format!("edit {} (see man 5 oci-volume-hook.toml)", path.display()),
            );
            Config::default()
        }
    }
}

/// On a node whose containerd runs pods: whether `host_sources` is set. Unset, a hostPath
/// that is a tenant's link when containerd creates the container reaches the tool as the
/// link's host target, in no chroot, and is mounted unchecked (SECURITY.md).
pub fn host_sources(config: &Config, opts: &Options, r: &mut Report) {
    match &config.host_sources {
        None => r.problem(
            "host_sources",
            Verdict::Warn,
            "containerd's CRI plugin is on and host_sources is unset: hostPath symlinks \
             containerd resolves itself are unchecked (mounted wherever they lead on the host)",
            format!(
                "list the platform's host paths in host_sources in {} (README: Host sources)",
                config_path(opts).display()
            ),
        ),
        Some(list) => r.push(
            "host_sources",
            Verdict::Ok,
            format!(
                "{} host_sources entries: a bind source in no chroot must match one",
                list.len()
            ),
        ),
    }
}

/// Each pattern's base: exists, root's, not writable by others, no symlink on the way; and
/// how many chroots it matches now.
pub fn chroots(config: &Config, r: &mut Report) {
    for p in &config.chroots {
        let id = format!("chroot:{}", p.as_str());
        let base = p.base();
        // open_chroot checks the way to the base; the base itself, as the parent of every
        // chroot, must be just as safe (a tenant could swap its chroot for a symlink).
        let opened = Root::open_chroot(&base).map_err(anyhow::Error::from);
        let opened = opened.and_then(|root| {
            let st = nix::sys::stat::fstat(root.fd())?;
            if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
                anyhow::bail!("{} is not root's or is writable by others", base.display());
            }
            Ok(root)
        });
        if let Err(e) = opened {
            let fix = chain_fix(&base).unwrap_or_else(|| {
                format!(
                    "make every directory from / to {} root's, not writable by others",
                    base.display()
                )
            });
            r.problem(
                id,
                Verdict::Fail,
                format!("base {}: {e:#}", base.display()),
                fix,
            );
            continue;
        }
        let (dirs, links) = expand(p);
        let mut summary = format!(
            "base {} is root's, not writable by others, no symlink; {} chroot(s) match now",
            base.display(),
            dirs
        );
        if links > 0 {
            summary += &format!(", and {links} symlink(s) that will be refused");
        }
        r.push(
            id,
            if links > 0 {
                Verdict::Warn
            } else {
                Verdict::Ok
            },
            summary,
        );
    }
}

/// The fix for the first directory on the way to `base` that makes it unsafe.
fn chain_fix(base: &Path) -> Option<String> {
    let mut cur = PathBuf::from("/");
    for comp in std::iter::once(None).chain(base.iter().skip(1).map(Some)) {
        if let Some(c) = comp {
            cur.push(c);
        }
        let md = match std::fs::symlink_metadata(&cur) {
            Ok(md) => md,
            Err(_) => return Some(format!("mkdir -p -m 755 {}", base.display())),
        };
        let d = cur.display();
        if md.file_type().is_symlink() {
            return Some(format!(
                "point the pattern at the real directory: {d} is a symlink"
            ));
        }
        if !md.is_dir() {
            return Some(format!("{d} is not a directory: change `chroots`"));
        }
        if md.uid() != 0 {
            return Some(format!("chown root:root {d}"));
        }
        // Sticky directories (/tmp) on the way are fine; the base itself must not be writable.
        let writable = md.mode() & 0o022 != 0;
        if writable && (md.mode() & 0o1000 == 0 || cur == base) {
            return Some(format!("chmod go-w {d}"));
        }
    }
    None
}

/// Counts the directories a pattern matches now, and the symlinks in their place.
fn expand(p: &Pattern) -> (usize, usize) {
    let mut current = vec![PathBuf::from("/")];
    let mut links = 0;
    for comp in p.components() {
        let mut next = Vec::new();
        for dir in &current {
            match comp {
                Some(name) => next.push(dir.join(name)),
                None => next.extend(
                    std::fs::read_dir(dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                ),
            }
        }
        current = next
            .into_iter()
            .filter(|d| match std::fs::symlink_metadata(d) {
                Ok(md) if md.file_type().is_symlink() => {
                    links += 1;
                    false
                }
                Ok(md) => md.is_dir(),
                Err(_) => false,
            })
            .collect();
    }
    (current.len(), links)
}

/// The runtime the wrapper would exec: found, not the wrapper, and its version.
pub fn runtime(config: &Config, opts: &Options, r: &mut Report) {
    let name = &config.runtime;
    let cfg = config_path(opts);
    let wrapper_id = file_id(&opts.wrapper);
    let is_wrapper = |p: &Path| wrapper_id.is_some() && file_id(p) == wrapper_id;
    let found = if name.contains('/') {
        let p = PathBuf::from(name);
        if is_wrapper(&p) {
            let fix = format!("set runtime = \"runc\" in {}", cfg.display());
            return r.problem(
                "runtime",
                Verdict::Fail,
                format!("runtime {name} is the wrapper itself"),
                fix,
            );
        }
        is_executable(&p).then_some(p)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p) && !is_wrapper(p))
    };
    let Some(found) = found else {
        let fix = format!(
            "apt-get install runc (or set runtime = \"/path/to/runc\" in {})",
            cfg.display()
        );
        return r.problem(
            "runtime",
            Verdict::Fail,
            format!("runtime {name:?} not found (other than the wrapper)"),
            fix,
        );
    };
    match version(&found) {
        Some(v) => r.push(
            "runtime",
            Verdict::Ok,
            format!("{name}: {} ({v}), not the wrapper", found.display()),
        ),
        None => r.problem(
            "runtime",
            Verdict::Fail,
            format!("{name}: {} does not answer --version", found.display()),
            format!(
                "check {} by hand: {} --version",
                found.display(),
                found.display()
            ),
        ),
    }
}

/// The wrapper engines are pointed at: there and executable.
pub fn wrapper(opts: &Options, r: &mut Report) {
    let w = &opts.wrapper;
    if is_executable(w) {
        r.push(
            "wrapper",
            Verdict::Ok,
            format!("{} is installed", w.display()),
        );
    } else {
        r.problem(
            "wrapper",
            Verdict::Fail,
            format!("{} is not an executable file", w.display()),
            "install the package (apt-get install ./oci-volume-hook_*.deb), or name it with --wrapper",
        );
    }
}

fn file_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// The first line of `bin --version`, given a few seconds.
fn version(bin: &Path) -> Option<String> {
    let mut child = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.lines().next().unwrap_or_default().trim().to_string())
        .filter(|l| !l.is_empty())
}

/// openat2 (Linux 5.6): resolution in a root in one call; without it the tool walks one
/// component at a time, just as safely.
pub fn kernel(r: &mut Report) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(nix::fcntl::AT_FDCWD, "/", how) {
        Ok(_) => r.push("kernel", Verdict::Ok, format!("Linux {release}: openat2 with RESOLVE_IN_ROOT")),
        Err(Errno::ENOSYS) => r.push(
            "kernel",
            Verdict::Warn,
            format!("Linux {release}: no openat2 (before 5.6): the component-by-component walk is used; its safety against symlink swaps does not depend on openat2"),
        ),
        Err(e) => r.push("kernel", Verdict::Warn, format!("Linux {release}: openat2 fails: {e}")),
    }
}
