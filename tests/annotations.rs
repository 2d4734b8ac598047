//! Tenant input can only narrow: `io.oci-volume-hook.*` annotations, set by whoever writes
//! the pod or container, planted as an attacker would, through the real runc.

mod common;

use common::*;
use serde_json::{Value, json};

const ENABLED: &str = "io.oci-volume-hook.enabled";

/// A bundle running `script` with `mounts` and these annotations (besides the fixture's).
fn bundle_with(
    f: &Fixture,
    name: &str,
    script: &str,
    mounts: Vec<Value>,
    userns: Option<u32>,
    annotations: &[(&str, &str)],
) -> (std::path::PathBuf, Value) {
    let b = f.bundle(name);
    let mut doc = runc_config(script, mounts, userns);
    for (k, v) in annotations {
        doc["annotations"][*k] = json!(v);
    }
    write_config_json(&b, &doc);
    (b, doc)
}

/// The host directory a tenant's symlink points at, holding a secret.
fn host_secret(f: &Fixture) -> std::path::PathBuf {
    let host = f.path().join("host-private");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret"), "host-secret\n").unwrap();
    host
}

#[test]
fn disabled_by_annotation_the_host_dir_behind_a_tenant_symlink_is_never_mounted() {
    let Some(runc) = engine("annotations_disabled", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-toto");
    let host = host_secret(&f);
    // `<chroot>/vol -> /…/host-private`: the host would follow it to its own directory.
    std::os::unix::fs::symlink(&host, t.join("vol")).unwrap();
    let off = [(ENABLED, "false")];

    // Nothing of that name in the chroot: creating is off, so the container is refused
    // before runc runs (on the old code runc followed the link: "host-secret").
    let (b, _) = bundle_with(
        &f,
        "missing",
        "cat /data/secret",
        vec![bind(&t.join("vol"), "/data", true)],
        Some(100000),
        &off,
    );
    let o = wrapper_run(&f, &b, "ovh-ann-missing");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("host-secret"));
    assert_one_line_error(
        &o,
        "oci-volume-runtime",
        &["mount /data", ENABLED, "would need create-dir"],
    );
    assert!(!b.join("state/ovh-ann-missing").exists(), "runc never ran");
    let inside = t.join(host.strip_prefix("/").unwrap());
    assert!(!inside.exists(), "nothing created in the chroot");
    assert!(f.log().contains(ENABLED), "the refusal is logged");

    // `plan` says the same: resolved inside the chroot, refused.
    let o = f.hook(&["plan", "--bundle", b.to_str().unwrap(), "--json"], b"");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["settings"]["enabled"], false);
    let m = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap();
    assert_eq!(m["action"], "refuse");
    assert_eq!(m["chroot"], json!(t));
    assert_eq!(m["resolved_source"], json!(inside));

    // The same path inside the chroot exists: that is what the container gets, pinned, and
    // its owner is left alone (ownership off too).
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(inside.join("secret"), "tenant-file\n").unwrap();
    let (b, _) = bundle_with(
        &f,
        "present",
        "cat /data/secret",
        vec![bind(&t.join("vol"), "/data", true)],
        Some(100000),
        &off,
    );
    let o = wrapper_run(&f, &b, "ovh-ann-present");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "tenant-file\n");
    assert_eq!(owner_of(&inside), (0, 0), "no chown with enabled=false");
    assert_eq!(f.staging_left(), (vec![], vec![]));

    // An OCI hook cannot rewrite the mount: refused there, whatever the annotation.
    let state =
        json!({"ociVersion": "1.0.2", "id": "ovh-ann-hook", "status": "creating", "bundle": b});
    let o = f.hook(&[], &serde_json::to_vec(&state).unwrap());
    assert_one_line_error(&o, "oci-volume-hook", &["mount /data", "symlink"]);
}

#[test]
fn an_annotation_the_operator_did_not_allow_refuses_the_container() {
    let Some(runc) = engine("annotations_not_allowed", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-toto");
    for (key, value) in [
        ("io.oci-volume-hook.ownership", "recursive-on-mismatch"),
        ("io.oci-volume-hook.owner", "process-user"),
    ] {
        let (b, _) = bundle_with(
            &f,
            "widen",
            "true",
            vec![bind(&t.join("data"), "/data", false)],
            Some(100000),
            &[(key, value)],
        );
        let o = wrapper_run(&f, &b, "ovh-ann-widen");
        assert_one_line_error(
            &o,
            "oci-volume-runtime",
            &[key, "not allowed", "allowed_annotations"],
        );
        assert!(!t.join("data").exists(), "{key}: nothing created");
        assert!(!b.join("state/ovh-ann-widen").exists(), "runc never ran");
        std::fs::remove_dir_all(&b).unwrap();
    }
    // The same annotation once the operator lists it: the container runs.
    f.write_config(&format!(
        "runtime = \"{}\"\nallowed_annotations = [\"io.oci-volume-hook.ownership\"]",
        runc.display()
    ));
    let (b, _) = bundle_with(
        &f,
        "listed",
        "true",
        vec![bind(&t.join("data"), "/data", false)],
        Some(100000),
        &[("io.oci-volume-hook.ownership", "recursive-on-mismatch")],
    );
    let o = wrapper_run(&f, &b, "ovh-ann-listed");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(owner_of(&t.join("data")), (100000, 100000));
}

#[test]
fn process_user_by_annotation_without_a_user_namespace_is_refused() {
    let Some(runc) = engine("annotations_process_user", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!(
        "runtime = \"{}\"\nallowed_annotations = [\"io.oci-volume-hook.owner\"]",
        runc.display()
    ));
    let t = f.tenant("user-toto");
    let owner = [("io.oci-volume-hook.owner", "process-user")];
    let mounts = || vec![bind(&t.join("home"), "/data", false)];
    // No user namespace: process.user is a host uid the container names (here 4242).
    let (b, mut doc) = bundle_with(&f, "host-ids", "true", mounts(), None, &owner);
    doc["process"]["user"] = json!({"uid": 4242, "gid": 4242});
    write_config_json(&b, &doc);
    let o = wrapper_run(&f, &b, "ovh-ann-hostids");
    assert_one_line_error(
        &o,
        "oci-volume-runtime",
        &["io.oci-volume-hook.owner", "no user namespace"],
    );
    assert!(!t.join("home").exists(), "no volume for host uid 4242");

    // In a user namespace the process user maps inside the container's own range.
    let (b, mut doc) = bundle_with(&f, "userns", "true", mounts(), Some(100000), &owner);
    doc["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    write_config_json(&b, &doc);
    let o = wrapper_run(&f, &b, "ovh-ann-userns");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(owner_of(&t.join("home")), (101000, 101000));
    // A process user outside the container's mappings is refused.
    let (b, mut doc) = bundle_with(&f, "unmapped", "true", mounts(), Some(100000), &owner);
    doc["process"]["user"] = json!({"uid": 70000, "gid": 70000});
    write_config_json(&b, &doc);
    let o = wrapper_run(&f, &b, "ovh-ann-unmapped");
    assert_one_line_error(&o, "oci-volume-runtime", &["70000", "not mapped"]);
}
