//! podman's precreate stage: config.json on stdin, the prepared config.json on stdout.
//!
//! podman runs runc in the host's mount namespace, so pinned sources are staged on the host
//! under `<staging_dir>/precreate-<id>-<pid>`. runc needs them only until it has created the
//! container; podman runs no poststop when a start fails after precreate, so a small
//! detached reaper takes them away as soon as runc is done (podman's pid file appears) or
//! podman is gone, and anything older than [`STAGING_TTL`] is swept by the next run.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::chroot::{self, Pattern};
use crate::config::Config;
use crate::prepare::MountPlan;
use crate::sources;
use crate::spec;
use crate::staging;

/// How long precreate staging may stay at most: runc needs it for the seconds of one create.
pub const STAGING_TTL: Duration = Duration::from_secs(120);

/// Runs the stage. Nothing is written to stdout unless preparation succeeded.
pub fn run(config: &Config, stdin: impl io::Read, stdout: &mut impl Write) -> Result<bool> {
    let mut doc = spec::read_config(stdin, "config.json on stdin")?;
    let id = spec::container_id(&doc);
    let _span = tracing::info_span!("container", id = %id).entered();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let podman = podman_ids(&doc, &config.chroots);
    let short = podman.id.clone().unwrap_or_else(|| "unknown".into());
    let key = staging::Key::new(&format!("{}{}", prefix(&short), std::process::id()))?;
    sweep_stale(config);
    warn_if_rootfs_empty(&doc, &cwd);
    let (_, staged) = rewrite(config, &mut doc, &cwd, &key)?;
    serde_json::to_writer(&mut *stdout, &doc).context("writing config.json to stdout")?;
    stdout.flush().context("writing config.json to stdout")?;
    if staged {
        spawn_reaper(config, &key, podman.userdata.as_deref());
    }
    Ok(true)
}

/// podman 5 with a user namespace hands precreate an intermediate mount point, still empty,
/// as root.path: the image's file types cannot be seen there, so an engine-made directory
/// where the image has a file is kept and runc fails. Says so in the log, with the way out.
fn warn_if_rootfs_empty(doc: &Value, cwd: &Path) {
    let Ok(view) = spec::View::of(doc, cwd) else {
        return;
    };
    let Some(rootfs) = view.rootfs.filter(|_| !view.binds.is_empty()) else {
        return;
    };
    if std::fs::read_dir(&rootfs).is_ok_and(|mut d| d.next().is_none()) {
        tracing::warn!(
            "root.path {} is empty when precreate runs (podman 5 with a user namespace mounts \
             the image later): the image's file types cannot be seen; register \
             oci-volume-runtime as podman's runtime (containers.conf [engine] runtime)",
            rootfs.display()
        );
    }
}

/// Prepares the sources of `doc` and stages pinned ones under `<staging_dir>/<stage_key>`;
/// true when something was staged.
pub fn rewrite(
    config: &Config,
    doc: &mut Value,
    bundle: &Path,
    stage_key: &staging::Key,
) -> Result<(Vec<MountPlan>, bool)> {
    let view = spec::View::of(doc, bundle)?;
    // podman's runtime is podman's to choose: it cannot be asked for idmapped mounts.
    let prepared = sources::prepare(config, &view, doc, None)?;
    if prepared.pins.is_empty() {
        return Ok((prepared.plans, false));
    }
    let pins = prepared.staging_pins();
    let name = |index| prepared.name_of(index);
    let dir = config.staging_dir.join(stage_key);
    let staged = staging::stage(&config.staging_dir, stage_key, &pins, &name)
        .with_context(|| format!("staging {}", dir.display()))?;
    sources::point_at(doc, &staged, &dir)?;
    Ok((prepared.plans, true))
}

/// What config.json tells of podman's container: its id and its `userdata` directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodmanIds {
    pub id: Option<String>,
    pub userdata: Option<PathBuf>,
}

/// The destinations podman mounts from the container's own `userdata` directory.
const PODMAN_OWN: [&str; 4] = [
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/run/.containerenv",
];

/// precreate is not told the container id, yet the poststop stage, which takes staging away,
/// only knows the id. podman's own mounts (`/etc/hostname`, `/etc/hosts`...) come from
/// `<runroot>/.../<id>/userdata/...`. Only those are read: a mount at another destination,
/// or from a chroot, or with `..`, is a tenant's volume, whose path the tenant chooses (a
/// chosen id would name its staging after another container, a chosen `userdata` would hand
/// the reaper a pid file the tenant writes). Nothing else in config.json (the hostname, the
/// annotations) is the engine's alone: without such a mount the id is unknown, and staging
/// is keyed by this process's pid.
pub fn podman_ids(doc: &Value, chroots: &[Pattern]) -> PodmanIds {
    let sources = doc
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| {
            let dest = m.get("destination").and_then(Value::as_str);
            dest.is_some_and(|d| PODMAN_OWN.contains(&d))
        })
        .filter_map(|m| m.get("source")?.as_str())
        .filter(|src| {
            let path = Path::new(src);
            path.is_absolute()
                && !path.components().any(|c| c == Component::ParentDir)
                && matches!(chroot::locate(chroots, path), Ok(None))
        });
    for src in sources {
        let parts: Vec<&str> = src.split('/').collect();
        for (i, w) in parts.windows(2).enumerate() {
            if w[1] == "userdata" && w[0].len() == 64 && w[0].bytes().all(|b| b.is_ascii_hexdigit())
            {
                return PodmanIds {
                    id: Some(w[0].to_string()),
                    userdata: Some(PathBuf::from(parts[..i + 2].join("/"))),
                };
            }
        }
    }
    PodmanIds::default()
}

/// The prefix of the staging keys of a precreate for container `id`; a pid follows, so
/// containers that share a hostname stay apart.
pub fn prefix(id: &str) -> String {
    format!("precreate-{id}-")
}

/// Takes away precreate staging older than [`STAGING_TTL`]. Never fails the caller.
pub fn sweep_stale(config: &Config) {
    match staging::sweep_older_than(&config.staging_dir, "precreate-", STAGING_TTL) {
        Ok(0) => {}
        Ok(n) => tracing::info!("swept {n} stale precreate staging director(ies)"),
        Err(e) => tracing::warn!("sweeping stale precreate staging: {e:#}"),
    }
}

/// Starts the reaper for `key`, detached (own process group, stdio closed: podman reads this
/// hook's stdout to its end). Failing to start it leaves the sweep to do the work.
fn spawn_reaper(config: &Config, key: &staging::Key, userdata: Option<&Path>) {
    let parent = std::os::unix::process::parent_id();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(crate::names::HOOK)
        .args(["reap-precreate", "--staging-dir"])
        .arg(&config.staging_dir)
        .args(["--key", key.as_str(), "--parent"])
        .arg(format!("{parent}:{}", start_time(parent).unwrap_or(0)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if let Some(u) = userdata {
        cmd.arg("--pidfile").arg(u.join("pidfile"));
    }
    if let Err(e) = cmd.spawn() {
        tracing::warn!("starting the precreate reaper: {e}");
    }
}

/// A process's start time (field 22 of /proc/PID/stat), to tell it from a reused pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// The reaper: waits until runc no longer needs the staging (the pid file podman gives runc
/// appears or changes, podman is gone, or [`STAGING_TTL`] passed), then takes it away.
pub fn reap(
    staging_dir: &Path,
    key: &str,
    pidfile: Option<&Path>,
    parent: (u32, u64),
) -> Result<()> {
    let key = staging::Key::new(key)?;
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.mtime_nsec(), m.mtime()))
    };
    let before = pidfile.and_then(stamp);
    let deadline = Instant::now() + STAGING_TTL;
    while Instant::now() < deadline {
        let created = pidfile.is_some_and(|p| stamp(p).is_some() && stamp(p) != before);
        let podman_gone = start_time(parent.0) != Some(parent.1);
        let staging_gone = !staging_dir.join(&key).exists();
        if created || podman_gone || staging_gone {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    staging::cleanup(staging_dir, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn podman_ids_from_its_own_mounts() {
        let id = "865783e794a7b7d0f8facf6dc59888a1b00a2fbfbb8b43c43ee8b8f38eab406b";
        let doc = json!({"hostname": "short", "mounts": [
            {"destination": "/proc", "source": "proc"},
            {"destination": "/etc/hostname", "source": format!("/run/rr/vfs-containers/{id}/userdata/hostname")}
        ]});
        assert_eq!(
            podman_ids(&doc, &[]),
            PodmanIds {
                id: Some(id.into()),
                userdata: Some(PathBuf::from(format!(
                    "/run/rr/vfs-containers/{id}/userdata"
                )))
            }
        );
        // The hostname is the container's to choose: never an id.
        assert_eq!(
            podman_ids(&json!({"hostname": "short"}), &[]),
            PodmanIds::default()
        );
    }

    /// A tenant's volume path shaped like podman's own (`<64 hex>/userdata/...`), listed first,
    /// neither names the staging nor gives the reaper its pid file.
    #[test]
    fn a_tenant_volume_path_never_names_staging_or_the_pid_file() {
        let chroots = [Pattern::parse("/c/*").unwrap()];
        let id = "865783e794a7b7d0f8facf6dc59888a1b00a2fbfbb8b43c43ee8b8f38eab406b";
        let fake = "0".repeat(64);
        let own = json!({"destination": "/etc/hosts", "source": format!("/run/rr/c/{id}/userdata/hosts")});
        let hostile = [
            // In a chroot, at a destination podman uses too.
            json!({"destination": "/etc/hostname", "source": format!("/c/t/{fake}/userdata/hostname")}),
            // Outside the chroots through `..`.
            json!({"destination": "/etc/resolv.conf", "source": format!("/c/t/../../x/{fake}/userdata/r")}),
            // Anywhere, at a destination of the tenant's.
            json!({"destination": "/data", "source": format!("/srv/{fake}/userdata/data")}),
        ];
        for m in &hostile {
            let doc = json!({"mounts": [m, own]});
            let ids = podman_ids(&doc, &chroots);
            assert_eq!(ids.id.as_deref(), Some(id), "{m}");
            let userdata = ids.userdata.unwrap();
            assert_eq!(userdata, Path::new(&format!("/run/rr/c/{id}/userdata")));
            let doc = json!({"mounts": [m]});
            assert_eq!(podman_ids(&doc, &chroots), PodmanIds::default(), "{m}");
        }
    }

    #[test]
    fn start_time_tells_a_live_process() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert_eq!(start_time(u32::MAX), None);
    }
}
