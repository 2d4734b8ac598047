//! `oci-volume-hook configure docker` through the binary: merge, idempotence, backup, and
//! the failure contract on bad input.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn configure(args: &[&str]) -> std::process::Output {
    Command::new(hook_bin())
        .args(["configure", "docker"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn configure_docker_merges_once_and_refuses_bad_json() {
    let t = tempfile::tempdir().unwrap();
    let dj = t.path().join("daemon.json");
    let path = dj.to_str().unwrap();
    std::fs::write(
        &dj,
        r#"{"userns-remap": "default", "runtimes": {"oci-volume": {"path": "/old"}}}"#,
    )
    .unwrap();

    let o = configure(&["--path", path, "--default"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("restart dockerd"));
    let v: Value = serde_json::from_slice(&std::fs::read(&dj).unwrap()).unwrap();
    assert_eq!(v["userns-remap"], "default");
    assert_eq!(
        v["runtimes"]["oci-volume"]["path"], "/usr/bin/oci-volume-runtime",
        "an old entry is brought up to date"
    );
    assert_eq!(v["default-runtime"], "oci-volume");
    let backup = t.path().join("daemon.json.oci-volume-hook.bak");
    assert!(std::fs::read_to_string(&backup).unwrap().contains("/old"));

    // Idempotent: nothing written the second time.
    let before = std::fs::metadata(&dj).unwrap().modified().unwrap();
    let o = configure(&["--path", path, "--default"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing changed"));
    assert_eq!(std::fs::metadata(&dj).unwrap().modified().unwrap(), before);

    // Invalid JSON: one clear line, the file as it was.
    std::fs::write(&dj, "{\"log-level\": ").unwrap();
    let o = configure(&["--path", path]);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &[path, "not valid JSON", "left unchanged"],
    );
    assert_eq!(std::fs::read_to_string(&dj).unwrap(), "{\"log-level\": ");
}
