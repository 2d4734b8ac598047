//! End to end with Docker (dockerd + containerd, userns-remap) and with containerd alone,
//! both running `oci-volume-runtime` as their runtime.

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::path::Path;

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
        d.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            runtime,
            "-v",
            &v,
            "ovh-test:latest",
            "/bin/sh",
            "-c",
            script,
        ])
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
