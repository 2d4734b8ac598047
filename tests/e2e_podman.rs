//! End to end with the real podman (4.3 and 5.8): the precreate hook stage and the wrapper as
//! podman's runtime, with a user namespace.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// The wrapper registered as podman's runtime (`[engine] runtime` in containers.conf, as an
/// operator's drop-in does). podman 5 with a user namespace hands a precreate hook a root.path
/// that is still an empty intermediate mount point, so the hook cannot see the image there;
/// the runtime is called where the rootfs is mounted, so the wrapper repairs the engine-made
/// directory the image has a file for, and pins it, on podman 4 and 5 alike.
#[test]
fn podman_with_the_wrapper_as_runtime_repairs_under_a_user_namespace() {
    let Some(bin) = engine("podman_runtime", "podman") else {
        return;
    };
    let runc = engine("podman_runtime", "runc").expect("podman runs runc here");
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap();
    std::os::unix::fs::chown(t.join("etc"), Some(200000), Some(200000)).unwrap();
    let rootfs = f.bundle("b").join("rootfs");
    chown_tree(&rootfs, 200000);
    // conmon does not pass podman 4's environment on: the fixture's configuration is named
    // by a launcher script (a package's wrapper reads /etc/oci-volume-hook/config.toml).
    let launcher = f.path().join("oci-volume-runtime");
    std::fs::write(
        &launcher,
        format!(
            "#!/bin/sh\nOCI_VOLUME_HOOK_CONFIG={} exec {} \"$@\"\n",
            f.config_path().display(),
            wrapper_bin()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = f.path().join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[engine]\nruntime = \"oci-volume-runtime\"\n[engine.runtimes]\noci-volume-runtime = [\"{}\"]\n",
            launcher.display()
        ),
    )
    .unwrap();
    let p = f.path();
    let volume = format!("{}:/etc/localtime", t.join("etc/localtime").display());
    let script = "test -f /etc/localtime && echo started-with-a-file";
    let o = Command::new(&bin)
        .env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(p.join("podman/root"))
        .arg("--runroot")
        .arg(p.join("podman/run"))
        .arg("--tmpdir")
        .arg(p.join("podman/tmp"))
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
        .args(["--events-backend", "file"])
        .args(podman_run_args(&volume, &rootfs, script))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started-with-a-file\n");
    assert!(is_file(&t.join("etc/localtime")));
    assert_eq!(owner_of(&t.join("etc/localtime")), (200000, 200000));
    assert!(f.log().contains("pinned under"), "{}", f.log());
    assert_eq!(f.staging_left(), (vec![], vec![]));
}
