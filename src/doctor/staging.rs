//! The staging directory: root's, mode 0700, a private mount, and leftovers of killed runs.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{Options, Report, Verdict};
use crate::config::Config;

/// The staging directory: root's, mode 0700, a private mount; leftovers of killed runs.
pub fn staging(config: &Config, opts: &Options, r: &mut Report) {
    let dir = &config.staging_dir;
    let md = match std::fs::symlink_metadata(dir) {
        Ok(md) => md,
        Err(_) => {
            return r.push(
                "staging",
                Verdict::Ok,
                format!(
                    "{} absent: made (root's, 0700, private mount) at the first pinned source",
                    dir.display()
                ),
            );
        }
    };
    if !md.is_dir() || md.uid() != 0 || md.mode() & 0o077 != 0 {
        return r.problem(
            "staging",
            Verdict::Fail,
            format!(
                "{} is not a root-only directory (pinned sources would be refused)",
                dir.display()
            ),
            format!("chown root:root {0} && chmod 700 {0}", dir.display()),
        );
    }
    let mount = match propagation(dir) {
        Some(true) => "a private mount",
        Some(false) => {
            return r.problem(
                "staging",
                Verdict::Fail,
                format!(
                    "{} is a shared mount: staging mounts would propagate to other namespaces",
                    dir.display()
                ),
                format!("mount --make-private {}", dir.display()),
            );
        }
        None => "not yet a mount (made private at the next pinned source)",
    };
    leftovers(dir, mount, opts, r);
}

/// `Some(private)` when `dir` is a mount point, from /proc/self/mountinfo.
fn propagation(dir: &Path) -> Option<bool> {
    let canon = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let line = info.lines().rev().find(|l| {
        l.split(' ').nth(4).map(|p| p.replace("\\040", " "))
            == Some(canon.to_string_lossy().into_owned())
    })?;
    let optional = line.split(' ').skip(6).take_while(|f| *f != "-");
    Some(!optional.into_iter().any(|f| f.starts_with("shared:")))
}

/// Staging keys of the wrapper live only while `runc create` runs; older ones were left by a
/// killed wrapper. precreate keys live as long as their podman container.
fn leftovers(dir: &Path, mount: &str, opts: &Options, r: &mut Report) {
    let now = SystemTime::now();
    let (mut stale, mut podman) = (Vec::new(), 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // The tool's own lasting entries (`@slots`, `@runtime-features`): no key has an `@`.
        if name.starts_with('@') {
            continue;
        }
        if name.starts_with("precreate-") {
            podman += 1;
            continue;
        }
        let age = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok());
        if age.is_none_or(|a| a > Duration::from_secs(600)) {
            stale.push(name);
        }
    }
    let shown = dir.display();
    let summary = format!("{shown}: root's, 0700, {mount}; {podman} podman container(s) staged");
    if stale.is_empty() {
        return r.push("staging", Verdict::Ok, summary);
    }
    stale.sort();
    let config = opts
        .config
        .as_ref()
        .map(|c| format!(" --config {}", c.display()))
        .unwrap_or_default();
    let fix = format!(
        "for k in {}; do printf '{{\"id\":\"%s\"}}' \"$k\" | oci-volume-hook{config} cleanup; done",
        stale.join(" ")
    );
    r.problem(
        "staging",
        Verdict::Warn,
        format!(
            "{summary}; {} leftover(s) of killed runs older than 10 min: {}",
            stale.len(),
            stale.join(", ")
        ),
        fix,
    );
}
