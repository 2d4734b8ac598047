//! End to end with the real podman 4.3: the precreate hook stage, with a user namespace.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::json;

/// podman with every root, socket and temp dir inside the fixture.
fn podman(bin: &Path, f: &Fixture, hooks_dir: &Path, args: &[&str]) -> Output {
    let p = f.path();
    let conf = p.join("containers.conf");
    if !conf.exists() {
        std::fs::write(&conf, "").unwrap();
    }
    podman_command(bin, f)
        .env("CONTAINERS_CONF", &conf)
        .arg("--hooks-dir")
        .arg(hooks_dir)
        .args(args)
        .output()
        .unwrap()
}

fn hooks_dir(f: &Fixture) -> PathBuf {
    let d = f.path().join("hooks.d");
    std::fs::create_dir_all(&d).unwrap();
    let hook = json!({
        "version": "1.0.0",
        "hook": {"path": hook_bin(), "args": ["oci-volume-hook", "--config", f.config_path(), "precreate"]},
        "when": {"always": true},
        "stages": ["precreate"]
    });
    std::fs::write(
        d.join("oci-volume-hook.json"),
        serde_json::to_vec_pretty(&hook).unwrap(),
    )
    .unwrap();
    let cleanup = json!({
        "version": "1.0.0",
        "hook": {"path": hook_bin(), "args": ["oci-volume-hook", "--config", f.config_path(), "cleanup"]},
        "when": {"always": true},
        "stages": ["poststop"]
    });
    std::fs::write(
        d.join("oci-volume-hook-poststop.json"),
        serde_json::to_vec_pretty(&cleanup).unwrap(),
    )
    .unwrap();
    d
}

#[test]
fn podman_precreate_repairs_an_engine_made_directory_under_a_user_namespace() {
    let Some(bin) = engine("podman_precreate", "podman") else {
        return;
    };
    let _ = engine("podman_precreate", "runc").expect("podman runs runc here");
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap();
    // The tenant owns etc/: it could swap localtime for a link, so the source gets pinned
    // (and the poststop hook must take the staging mount away).
    std::os::unix::fs::chown(t.join("etc"), Some(200000), Some(200000)).unwrap();
    let rootfs = f.bundle("b").join("rootfs");
    chown_tree(&rootfs, 200000); // --uidmap with --rootfs wants the rootfs owned by mapped root
    let empty = f.path().join("no-hooks.d");
    std::fs::create_dir_all(&empty).unwrap();
    let volume = format!("{}:/etc/localtime", t.join("etc/localtime").display());
    let run = |hooks: &Path, script: &str| {
        let args = podman_run_args(&volume, &rootfs, script);
        podman(
            &bin,
            &f,
            hooks,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };

    let o = run(&empty, "echo started");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));

    let hooks = hooks_dir(&f);
    let o = run(&hooks, "test -f /etc/localtime && echo started-with-a-file");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started-with-a-file\n");
    assert!(is_file(&t.join("etc/localtime")));
    assert_eq!(owner_of(&t.join("etc/localtime")), (200000, 200000));
    assert!(f.log().contains("created file"), "{}", f.log());
    assert!(
        f.log().contains("pinned under"),
        "the source was pinned: {}",
        f.log()
    );
    assert_eq!(
        f.staging_left(),
        (vec![], vec![]),
        "the poststop hook took the staging mounts away"
    );

    // A refusal stops the container; the reason is in the hook's log (podman drops stderr).
    std::fs::remove_file(t.join("etc/localtime")).unwrap();
    std::fs::create_dir_all(t.join("etc/localtime/keep")).unwrap();
    let o = run(&hooks, "echo should-not-start");
    assert!(!o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("should-not-start"));
    assert!(f.log().contains("non-empty directory"), "{}", f.log());
    assert!(t.join("etc/localtime/keep").is_dir());
}
