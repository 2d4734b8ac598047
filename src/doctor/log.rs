//! Where log lines go: the sink the binaries would pick, never a container's stdio.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use super::node::config_path;
use super::{Options, Report, Verdict};
use crate::config::{Config, LogTarget};

/// Where log lines go now, following the fallbacks the binaries take — and that it is not
/// a container's stdio (the wrapper's stderr is the container's under Docker/containerd).
pub fn log(config: &Config, opts: &Options, r: &mut Report) {
    let cfg = config_path(opts);
    let fix = format!(
        "set [log] target = \"file\" and file = \"/var/log/oci-volume-hook.log\" in {} (or run systemd-journald or a syslog daemon)",
        cfg.display()
    );
    let journald = opts.host(&config.log.journald_socket);
    let syslog = opts.host(&config.log.syslog_socket);
    let stdio =
        "stderr, which under Docker, containerd and Kubernetes is the container's own output";
    let (from_journald, from_syslog) = match config.log.target {
        LogTarget::Auto => (true, true),
        LogTarget::Journald => (true, true),
        LogTarget::Syslog => (false, true),
        LogTarget::Stderr => {
            return r.problem(
                "log",
                Verdict::Fail,
                format!("target = \"stderr\": log lines go to {stdio}"),
                fix,
            );
        }
        LogTarget::None => {
            return r.problem(
                "log",
                Verdict::Warn,
                "target = \"none\": refusals are logged nowhere",
                fix,
            );
        }
        LogTarget::File => return log_file(config.log.file.as_deref(), r, &fix),
    };
    if from_journald && answers(&journald) {
        return r.push(
            "log",
            Verdict::Ok,
            format!("journald ({})", journald.display()),
        );
    }
    if from_syslog && answers(&syslog) {
        return r.push("log", Verdict::Ok, format!("syslog ({})", syslog.display()));
    }
    // auto (and journald/syslog when theirs is gone) never falls back to stderr: the log
    // file, else the wrapper's runtime --log file, else nowhere.
    let default = Path::new(crate::logging::DEFAULT_FILE);
    let file = match config.log.target {
        LogTarget::Auto => config.log.file.as_deref().unwrap_or(default),
        _ => Path::new(""),
    };
    let usable =
        !file.as_os_str().is_empty() && (file.is_file() || file.parent().is_some_and(Path::is_dir));
    if usable {
        return r.push(
            "log",
            Verdict::Ok,
            format!(
                "file {} (neither {} nor {} answers)",
                file.display(),
                journald.display(),
                syslog.display()
            ),
        );
    }
    r.problem(
        "log",
        Verdict::Warn,
        format!(
            "neither {} nor {} answers and no log file can be written: lines go to the wrapper's runtime --log file (the bundle's log.json) or nowhere",
            journald.display(),
            syslog.display()
        ),
        fix,
    );
}

/// Whether a datagram socket is there and accepts a connection (what the log sinks do).
fn answers(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && UnixDatagram::unbound()
            .and_then(|s| s.connect(path))
            .is_ok()
}

fn log_file(file: Option<&Path>, r: &mut Report, fix: &str) {
    let Some(file) = file else {
        return r.problem(
            "log",
            Verdict::Fail,
            "target = \"file\" without log.file",
            fix,
        );
    };
    let shown = file.display();
    let real = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let stdio = [
        "/dev/stdout",
        "/dev/stderr",
        "/dev/stdin",
        "/dev/tty",
        "/dev/console",
        "/dev/fd",
        "/proc",
    ];
    if stdio
        .iter()
        .any(|s| file.starts_with(s) || real.starts_with(s))
        || std::fs::metadata(file)
            .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() != 0x103)
    {
        return r.problem(
            "log",
            Verdict::Fail,
            format!("log.file {shown} is a terminal or a process's stdio"),
            fix,
        );
    }
    let parent_ok = file.parent().is_some_and(|p| p.is_dir());
    if file.is_file() || parent_ok {
        r.push("log", Verdict::Ok, format!("file {shown}"));
    } else {
        r.problem(
            "log",
            Verdict::Fail,
            format!("log.file {shown}: its directory does not exist (lines would go to stderr)"),
            fix,
        );
    }
}
