//! Least privilege and descriptor hygiene.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// Descriptors that another test of this binary has open while it spawns a process are
/// inherited, for a moment, by processes this one spawns: one test at a time here.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A stand-in runtime listing its own open descriptors (this is about what the wrapper
/// leaves open across exec, not an end-to-end test).
fn fd_lister(f: &Fixture) -> std::path::PathBuf {
    let p = f.path().join("list-fds");
    // ls lists its own descriptors: what it inherited, plus the one it reads the list with.
    std::fs::write(&p, "#!/bin/sh\nexec ls /proc/self/fd\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn fds_of(cmd: &mut Command) -> String {
    let o = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn nothing_the_wrapper_opened_leaks_into_the_runtime() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip("fd_hygiene") {
        return;
    }
    let f = Fixture::new();
    let lister = fd_lister(&f);
    f.write_config(&format!("runtime = \"{}\"", lister.display()));
    let baseline = fds_of(&mut Command::new(&lister));
    assert!(!baseline.is_empty());

    // Pass-through (exec).
    let through = fds_of(
        Command::new(wrapper_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
            .args(["state", "fd-test"]),
    );
    assert_eq!(through, baseline, "pass-through");

    // create with a prepared, pinned source (the runtime runs as a child after the tool
    // opened the chroot, the image, the checked sources, the log and the staging lock).
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    write_config_json(
        &b,
        &runc_config(
            "true",
            vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
            Some(100000),
        ),
    );
    let created = fds_of(
        Command::new(wrapper_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
            .args(["create", "--bundle", b.to_str().unwrap(), "fd-test"]),
    );
    assert_eq!(created, baseline, "create");
    assert!(is_file(&t.join("etc/localtime")), "the preparation did run");
    assert_eq!(f.staging_left(), (vec![], vec![]));
}

#[test]
fn without_the_capabilities_it_needs_it_says_so_and_changes_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(setpriv) = engine("capabilities", "setpriv") else {
        return;
    };
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let mut doc = runc_config(
        "true",
        vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
        Some(100000),
    );
    doc["root"]["path"] = serde_json::json!(b.join("rootfs"));
    let before = snapshot(&t);
    // uid 0 with every capability dropped, as a root process confined by its engine.
    let mut cmd = Command::new(setpriv);
    cmd.args(["--bounding-set=-all", "--inh-caps=-all", "--"])
        .arg(hook_bin())
        .arg("--config")
        .arg(f.config_path())
        .arg("precreate");
    let o = run_with_stdin(&mut cmd, &serde_json::to_vec(&doc).unwrap());
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &[
            "mount /etc/localtime",
            "missing capabilities",
            "CAP_CHOWN",
            "CAP_SYS_ADMIN",
        ],
    );
    assert_unchanged(&before, &snapshot(&t), "no capabilities");
    assert!(Path::new(&f.log_path()).exists());
}
