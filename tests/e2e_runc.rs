//! End to end with the real runc: the failures users see without the tool, and the same
//! containers starting with it.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// Runs the precreate stage on the bundle's config.json, as podman would before runc.
fn precreate_bundle(f: &Fixture, bundle: &Path) {
    let doc = std::fs::read(bundle.join("config.json")).unwrap();
    // The working directory is the bundle, so the relative root.path resolves as runc will.
    let mut cmd = std::process::Command::new(hook_bin());
    cmd.arg("--config")
        .arg(f.config_path())
        .arg("precreate")
        .current_dir(bundle);
    let o = run_with_stdin(&mut cmd, &doc);
    assert!(o.status.success(), "precreate failed: {}", stderr(&o));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    write_config_json(bundle, &out);
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn an_engine_made_directory_onto_an_image_file_fails_without_the_tool_and_starts_with_it() {
    let Some(runc) = engine("runc_localtime", "runc") else {
        return;
    };
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap(); // what dockerd leaves behind
    let b = f.bundle("b");
    let doc = runc_config(
        "cat /etc/localtime; echo started",
        vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
        None,
    );
    write_config_json(&b, &doc);

    let o = runc_run(&runc, &b, "ovh-e2e-1");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));

    precreate_bundle(&f, &b);
    assert!(is_file(&t.join("etc/localtime")));
    std::fs::write(t.join("etc/localtime"), "HOST-ZONE\n").unwrap();
    let o = runc_run(&runc, &b, "ovh-e2e-2");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "HOST-ZONE\nstarted\n");
}

#[test]
fn a_missing_source_fails_without_the_tool_and_is_created_with_it() {
    let Some(runc) = engine("runc_missing", "runc") else {
        return;
    };
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let src = t.join("etc/localtime");
    let doc = runc_config(
        "test -f /etc/localtime && echo is-a-file",
        vec![bind(&src, "/etc/localtime", true)],
        Some(100000),
    );
    write_config_json(&b, &doc);

    let o = runc_run(&runc, &b, "ovh-e2e-3");
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .to_lowercase()
            .contains("no such file or directory"),
        "{}",
        stderr(&o)
    );

    precreate_bundle(&f, &b);
    let o = runc_run(&runc, &b, "ovh-e2e-4");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "is-a-file\n");
    assert!(is_file(&src));
    assert_eq!(owner_of(&src), (100000, 100000));
}

#[test]
fn remapped_root_writes_a_platform_made_volume_once_the_hook_ran() {
    let Some(runc) = engine("runc_userns", "runc") else {
        return;
    };
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("data")).unwrap(); // made by the platform, owned by host root
    let b = f.bundle("b");
    let mut doc = runc_config(
        "touch /data/x && echo wrote",
        vec![bind(&t.join("data"), "/data", false)],
        Some(100000),
    );
    write_config_json(&b, &doc);

    let o = runc_run(&runc, &b, "ovh-e2e-5");
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("Permission denied") || stderr(&o).contains("Permission denied"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );

    // As a standard OCI hook at createRuntime: runc has mounted, the owner can still change.
    doc["hooks"] = json!({"createRuntime": [{
        "path": hook_bin(),
        "args": ["oci-volume-hook", "--config", f.config_path(), "hook"]
    }]});
    write_config_json(&b, &doc);
    let o = runc_run(&runc, &b, "ovh-e2e-6");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "wrote\n");
    assert_eq!(owner_of(&t.join("data/x")), (100000, 100000));
    assert_eq!(owner_of(&t.join("data")), (100000, 100000));
    assert!(f.log().contains("ovh-e2e-6"), "{}", f.log());
}

#[test]
fn a_versioned_layout_mounts_the_release_resolved_inside_the_chroot() {
    let Some(runc) = engine("runc_versioned", "runc") else {
        return;
    };
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(t.join("releases").join(v)).unwrap();
        std::fs::write(t.join("releases").join(v).join("VERSION"), v).unwrap();
    }
    // Absolute inside the tenant's view; on the host it would point at /releases/v2.
    symlink("/releases/v2", t.join("current")).unwrap();
    let b = f.bundle("b");
    write_config_json(
        &b,
        &runc_config(
            "cat /app/VERSION",
            vec![bind(&t.join("current"), "/app", true)],
            None,
        ),
    );

    let o = runc_run(&runc, &b, "ovh-e2e-7");
    assert!(
        !o.status.success(),
        "without the tool the host resolves the link: {}",
        stdout(&o)
    );

    precreate_bundle(&f, &b);
    let o = runc_run(&runc, &b, "ovh-e2e-8");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "v2");
}

#[test]
fn a_seeded_localtime_gives_the_container_the_hosts_zone_data() {
    let Some(runc) = engine("runc_seed", "runc") else {
        return;
    };
    let f = Fixture::new();
    // The host's own /etc/localtime where it has one (followed through its symlink), else a
    // zone file of the fixture's reached the same way.
    let host = if std::fs::metadata("/etc/localtime").is_ok_and(|m| m.is_file()) {
        std::path::PathBuf::from("/etc/localtime")
    } else {
        let zone = f.path().join("host/zoneinfo/Europe/Paris");
        std::fs::create_dir_all(zone.parent().unwrap()).unwrap();
        std::fs::write(&zone, b"TZif2 host zone\n").unwrap();
        let link = f.path().join("host/etc/localtime");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink("../zoneinfo/Europe/Paris", &link).unwrap();
        link
    };
    f.write_config(&format!("seed_from_host = [\"{}\"]", host.display()));
    let t = f.tenant("user-toto");
    let src = t.join(host.strip_prefix("/").unwrap());
    let b = f.bundle("b");
    write_config_json(
        &b,
        &runc_config(
            "cat /etc/localtime",
            vec![bind(&src, "/etc/localtime", true)],
            Some(100000),
        ),
    );
    precreate_bundle(&f, &b);
    let o = runc_run(&runc, &b, "ovh-e2e-seed");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        o.stdout,
        std::fs::read(&host).unwrap(),
        "the container reads the host's zone data"
    );
    assert!(!o.stdout.is_empty());
}
