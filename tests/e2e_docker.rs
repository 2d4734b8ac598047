//! End to end with Docker (dockerd + containerd, userns-remap) and with containerd alone,
//! both running `oci-volume-runtime` as their runtime.

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use daemons::Daemons;
use serde_json::json;

fn engines(test: &str, names: &[&str]) -> Option<Vec<std::path::PathBuf>> {
    names.iter().map(|n| engine(test, n)).collect()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The engines, a fixture whose config runs runc, and containerd (plus dockerd with
/// `daemon_json`) whose environment points the wrapper at that config. Bound as
/// `(bins, f, d)`, the daemons drop (stop) before the fixture is removed.
fn setup(
    test: &str,
    daemon_json: Option<serde_json::Value>,
) -> Option<(Vec<std::path::PathBuf>, Fixture, Daemons)> {
    let bins = engines(test, &["containerd", "dockerd", "docker", "ctr", "runc"])?;
    let f = Fixture::new();
    f.write_config("runtime = \"runc\"");
    let cfg = f.config_path();
    let d = Daemons::start(
        &f.path().join("d"),
        &[("OCI_VOLUME_HOOK_CONFIG", cfg.as_path())],
        daemon_json,
        [
            bins[0].clone(),
            bins[1].clone(),
            bins[2].clone(),
            bins[3].clone(),
        ],
    );
    Some((bins, f, d))
}

#[test]
fn docker_with_the_wrapper_gets_prepared_volumes() {
    let Some((_, f, d)) = setup(
        "docker",
        Some(json!({"runtimes": {"ovh": {"path": wrapper_bin()}}, "userns-remap": "default"})),
    ) else {
        return;
    };
    let t = f.tenant("user-toto");
    let rootfs = f.bundle("img").join("rootfs");
    d.import(&rootfs, "ovh-test:latest");
    let remapped = daemons::dockremap_root();
    let run = |runtime: &str, volume: &Path, dest: &str, script: &str| {
        let v = format!("{}:{dest}", volume.display());
        d.docker_sh(runtime, &v, "ovh-test:latest", script)
    };

    // 1. -v onto a file of the image: dockerd makes a directory, runc fails.
    let lt = t.join("etc/localtime");
    let o = run("runc", &lt, "/etc/localtime", "cat /etc/localtime");
    assert!(!o.status.success());
    eprintln!("plain runc: {}", text(&o));
    assert!(text(&o).contains("not a directory"), "{}", text(&o));
    assert!(is_dir(&lt), "dockerd left a directory behind");
    let o = run(
        "ovh",
        &lt,
        "/etc/localtime",
        "test -f /etc/localtime && echo file-mounted",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "file-mounted\n");
    assert!(is_file(&lt));
    assert_eq!(owner_of(&lt), (remapped, remapped));

    // 2. A platform-made, root-owned volume: remapped root cannot write it with plain runc.
    let data = t.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let o = run("runc", &data, "/data", "touch /data/x && echo wrote");
    assert!(!o.status.success());
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    let o = run("ovh", &data, "/data", "touch /data/x && echo wrote");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(owner_of(&data.join("x")), (remapped, remapped));

    // 3. A mount that cannot be fixed: the tool's reason reaches `docker run`, data intact.
    let zone = t.join("zone");
    std::fs::create_dir_all(zone.join("keep")).unwrap();
    std::fs::write(zone.join("keep/file"), "precious").unwrap();
    let o = run("ovh", &zone, "/etc/localtime", "echo should-not-start");
    assert!(!o.status.success());
    let out = text(&o);
    eprintln!("refused: {out}");
    assert!(
        out.contains("oci-volume-runtime: mount /etc/localtime")
            && out.contains("non-empty directory"),
        "{out}"
    );
    assert!(!out.contains("should-not-start"));
    assert_eq!(
        f.staging_left(),
        (vec![], vec![]),
        "no staging survives a failed create"
    );
    assert_eq!(
        std::fs::read_to_string(zone.join("keep/file")).unwrap(),
        "precious"
    );

    // 4. A versioned layout inside the chroot mounts the right release.
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(t.join("releases").join(v)).unwrap();
        std::fs::write(t.join("releases").join(v).join("VERSION"), v).unwrap();
    }
    std::os::unix::fs::symlink("releases/v2", t.join("current")).unwrap();
    let o = run("ovh", &t.join("current"), "/app", "cat /app/VERSION");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "v2");

    // 5. A volume below a directory the tenant owns (it could swap it for a link): the
    // wrapper pins it, runs runc as a child for containerd's shim, and leaves nothing behind.
    let owned = t.join("home");
    std::fs::create_dir_all(owned.join("app")).unwrap();
    std::fs::write(owned.join("app/hello"), "pinned\n").unwrap();
    std::os::unix::fs::chown(&owned, Some(remapped), Some(remapped)).unwrap();
    let o = run(
        "ovh",
        &owned.join("app"),
        "/app",
        "cat /app/hello && touch /app/written",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "pinned\n");
    assert_eq!(owner_of(&owned.join("app/written")), (remapped, remapped));
    assert!(
        f.log().contains("pinned under"),
        "the source was pinned: {}",
        f.log()
    );
    assert_eq!(
        f.staging_left(),
        (vec![], vec![]),
        "no staging survives a pinned docker run --rm"
    );

    // 6. A volume outside the chroots is untouched.
    let outside = f.path().join("outside/vol");
    std::fs::create_dir_all(&outside).unwrap();
    let before = snapshot(&f.path().join("outside"));
    let o = run("ovh", &outside, "/out", "ls /out && echo listed");
    assert!(o.status.success(), "{}", text(&o));
    assert_unchanged(
        &before,
        &snapshot(&f.path().join("outside")),
        "volume outside the chroots",
    );
    assert_eq!(
        f.staging_left(),
        (vec![], vec![]),
        "no staging survives docker run --rm"
    );
}

#[test]
fn containerd_with_the_wrapper_as_runc_binary() {
    let Some((bins, f, d)) = setup("containerd", None) else {
        return;
    };
    let t = f.tenant("user-toto");
    let rootfs = f.bundle("img").join("rootfs");
    let src = t.join("etc/localtime");
    let mount = format!(
        "type=bind,src={},dst=/etc/localtime,options=rbind:ro",
        src.display()
    );
    let run = |id: &str, runc_binary: &str| {
        d.ctr(&[
            "run",
            "--rm",
            "--runc-binary",
            runc_binary,
            "--mount",
            &mount,
            "--rootfs",
            rootfs.to_str().unwrap(),
            id,
            "/bin/sh",
            "-c",
            "test -f /etc/localtime && echo file-mounted",
        ])
    };
    let o = run("ovh-plain", bins[4].to_str().unwrap());
    assert!(!o.status.success());
    assert!(
        text(&o)
            .to_lowercase()
            .contains("no such file or directory"),
        "{}",
        text(&o)
    );
    let o = run("ovh-wrapped", wrapper_bin());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "file-mounted\n");
    assert!(is_file(&src));
    assert_eq!(
        owner_of(&src),
        (0, 0),
        "no user namespace: container root is host root"
    );
}

/// The runc a test's engines run: (major, minor) from `runc --version`.
fn runc_version(runc: &Path) -> (u32, u32) {
    let o = std::process::Command::new(runc)
        .arg("--version")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let v = out
        .strip_prefix("runc version ")
        .unwrap_or_else(|| panic!("{}: {out}", runc.display()));
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap();
    (next(), next())
}

/// A root-owned volume of `dirs` x `files` entries (0755 directories, empty 0644 files:
/// mknod, the quickest way to make many inodes).
fn big_volume(dir: &Path, dirs: usize, files: usize) {
    use nix::sys::stat::{Mode, SFlag, mknod};
    for d in 0..dirs {
        let sub = dir.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..files {
            let mode = Mode::from_bits_truncate(0o644);
            mknod(&sub.join(format!("f{i}")), SFlag::S_IFREG, mode, 0).unwrap();
        }
    }
}

/// An entry's path, uid, gid, ctime and atime.
type InodeState = (PathBuf, u32, u32, (i64, i64), (i64, i64));

/// (uid, gid, ctime, atime) of each entry of a [`big_volume`], the top left out: a chown
/// moves the ctime, reading a directory moves its atime (relatime: it is older than the
/// directory's mtime until someone reads it). Named, not listed: this reads no directory.
fn inode_states(dir: &Path, dirs: usize, files: usize) -> Vec<InodeState> {
    let mut paths = Vec::new();
    for d in 0..dirs {
        let sub = dir.join(format!("d{d}"));
        paths.extend((0..files).map(|i| sub.join(format!("f{i}"))));
        paths.push(sub);
    }
    let state = |p: PathBuf| {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let (ctime, atime) = ((m.ctime(), m.ctime_nsec()), (m.atime(), m.atime_nsec()));
        (p, m.uid(), m.gid(), ctime, atime)
    };
    paths.into_iter().map(state).collect()
}

#[test]
fn docker_userns_remap_gets_a_root_owned_volume_by_idmapped_mount() {
    // `ownership = "idmap"` through `docker run`: with runc >= 1.2 (Docker 28, sid) the
    // volume is given by an idmapped mount, no inode below it touched, whatever its size;
    // with runc 1.1 (Docker 20.10, Debian 12) the same config chowns and says why, once.
    let Some((bins, f, d)) = setup(
        "docker_idmap",
        Some(json!({"runtimes": {"ovh": {"path": wrapper_bin()}}, "userns-remap": "default"})),
    ) else {
        return;
    };
    let version = runc_version(&bins[4]);
    if std::env::var("OCI_VOLUME_HOOK_ENGINES").as_deref() == Ok("sid") {
        assert!(version >= (1, 2), "the sid stage runs runc {version:?}");
    }
    let idmap = version >= (1, 2);
    f.write_config("runtime = \"runc\"\nownership = \"idmap\"");
    let t = f.tenant("user-toto");
    let data = t.join("data");
    big_volume(&data, 100, 1000);
    let small = t.join("small");
    big_volume(&small, 1, 1);
    let rootfs = f.bundle("img").join("rootfs");
    d.import(&rootfs, "ovh-test:latest");
    let before = inode_states(&data, 100, 1000);

    let script = "echo hello-idmap > /data/d0/f0 && touch /data/new && cat /data/d0/f0 \
                  && stat -c %u:%g /data /data/new";
    let run = |volume: &Path| {
        std::fs::write(f.log_path(), "").unwrap();
        let v = format!("{}:/data", volume.display());
        let start = Instant::now();
        let o = d.docker_sh("ovh", &v, "ovh-test:latest", script);
        (o, start.elapsed())
    };
    let (o, big) = run(&data);
    assert!(o.status.success(), "{}\n{}", text(&o), f.log());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello-idmap\n0:0\n0:0\n",
        "container root wrote its volume and sees it as its own"
    );
    let log = f.log();
    let fallbacks: Vec<_> = log.lines().filter(|l| l.contains("falls back")).collect();
    let after = inode_states(&data, 100, 1000);
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a && !b.0.ends_with("d0/f0"))
        .map(|(b, a)| format!("{b:?} => {a:?}"))
        .collect();
    if idmap {
        assert!(log.contains("made idmapped"), "{log}");
        assert!(fallbacks.is_empty(), "{log}");
        assert!(
            changed.is_empty(),
            "{} inodes changed: {:?}",
            changed.len(),
            &changed[..changed.len().min(5)]
        );
        assert_eq!(owner_of(&data), (0, 0), "the top is the platform's still");
        assert_eq!(
            owner_of(&data.join("new")),
            (0, 0),
            "container root is 0 on disk"
        );
        assert_eq!(owner_of(&data.join("d0/f0")), (0, 0));
        // The atime check can fail: reading a directory on the host does move its atime.
        let probe = data.join("d1");
        let atime = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| (m.atime(), m.atime_nsec()))
                .unwrap()
        };
        let was = atime(&probe);
        let _ = std::fs::read_dir(&probe).unwrap().count();
        assert_ne!(atime(&probe), was, "relatime: a read directory shows it");
    } else {
        assert_eq!(fallbacks.len(), 1, "one line says why: {log}");
        assert!(
            fallbacks[0].contains("features do not list idmapped mounts"),
            "{log}"
        );
        let remapped = daemons::dockremap_root();
        assert!(
            after.iter().all(|e| (e.1, e.2) == (remapped, remapped)),
            "chowned to the remapped root"
        );
    }
    // Start time with the big volume and with a two-entry one, interleaved (printed).
    let mut times: [Vec<Duration>; 2] = [vec![], vec![]];
    for _ in 0..3 {
        for (i, v) in [&small, &data].into_iter().enumerate() {
            let (o, took) = run(v);
            assert!(o.status.success(), "{}\n{}", text(&o), f.log());
            times[1 - i].push(took);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let [mut b, mut s] = times;
    eprintln!(
        "docker run, ownership = idmap ({}), runc {version:?}: first start with 100,100 \
         root-owned entries {big:?}; then 100,100 entries {:?}, 2 entries {:?} (medians of 3)",
        if idmap { "idmapped" } else { "chown fallback" },
        median(&mut b),
        median(&mut s)
    );
}
