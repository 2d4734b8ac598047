//! Operator features: seeding from the host, ownership modes, per-container annotations.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

fn precreate(f: &Fixture, doc: &Value) -> std::process::Output {
    f.hook(&["precreate"], &serde_json::to_vec(doc).unwrap())
}

fn doc_for(bundle: &Path, mounts: Vec<Value>, userns: Option<u32>) -> Value {
    let mut d = runc_config("true", mounts, userns);
    d["root"]["path"] = json!(bundle.join("rootfs"));
    d
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "hook failed: {}", stderr(o));
}

/// A host zone file reached through a host symlink; returns the host path to list.
fn host_zone(f: &Fixture) -> PathBuf {
    let zone = f.path().join("host/usr/share/zoneinfo/Europe/Paris");
    std::fs::create_dir_all(zone.parent().unwrap()).unwrap();
    std::fs::write(&zone, b"TZif2 Europe/Paris host data\n").unwrap();
    let link = f.path().join("host/etc/localtime");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    symlink("../usr/share/zoneinfo/Europe/Paris", &link).unwrap();
    link
}

/// `<chroot>` + the host path: where the platform puts the host's file for this tenant.
fn in_chroot(t: &Path, host: &Path) -> PathBuf {
    t.join(host.strip_prefix("/").unwrap())
}

#[test]
fn listed_host_files_are_copied_when_created_and_only_then() {
    if !root_or_skip("seed") {
        return;
    }
    let f = Fixture::new();
    let host = host_zone(&f);
    f.write_config(&format!("seed_from_host = [\"{}\"]", host.display()));
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let src = in_chroot(&t, &host);
    let unlisted = t.join("etc/timezone");
    let doc = doc_for(
        &b,
        vec![
            bind(&src, "/etc/localtime", true),
            bind(&unlisted, "/etc/timezone", true),
        ],
        Some(100000),
    );
    ok(&precreate(&f, &doc));
    assert_eq!(
        std::fs::read(&src).unwrap(),
        b"TZif2 Europe/Paris host data\n"
    );
    assert!(is_file(&src), "a file, never the host's symlink");
    assert_eq!(owner_of(&src), (100000, 100000));
    assert!(
        is_dir(&unlisted),
        "not listed: not seeded (and missing from the image: a directory)"
    );
    assert!(f.log().contains("from the host's"), "{}", f.log());

    // Only on creation: a later change on the host is not pushed into the tenant's file.
    std::fs::write(
        f.path().join("host/usr/share/zoneinfo/Europe/Paris"),
        b"changed",
    )
    .unwrap();
    ok(&precreate(&f, &doc));
    assert_eq!(
        std::fs::read(&src).unwrap(),
        b"TZif2 Europe/Paris host data\n"
    );
}

#[test]
fn a_seeded_path_takes_the_hosts_type_when_the_image_lacks_it_and_repairs_are_seeded() {
    if !root_or_skip("seed_type") {
        return;
    }
    let f = Fixture::new();
    let host = host_zone(&f);
    let host_dir = f.path().join("host/etc/ssl");
    std::fs::create_dir_all(&host_dir).unwrap();
    f.write_config(&format!(
        "seed_from_host = [\"{}\", \"{}\"]",
        host.display(),
        host_dir.display()
    ));
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let src = in_chroot(&t, &host);
    let dir_src = in_chroot(&t, &host_dir);
    let doc = doc_for(
        &b,
        vec![
            bind(&src, "/not/in/image", true),
            bind(&dir_src, "/also/missing", true),
        ],
        None,
    );
    let plan_doc = {
        let mut d = doc.clone();
        d["root"]["path"] = json!("rootfs");
        d
    };
    write_config_json(&b, &plan_doc);
    let o = f.hook(&["plan", "--bundle", b.to_str().unwrap(), "--json"], b"");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/not/in/image")
        .unwrap()
        .clone();
    assert_eq!(m["action"], "create-file");
    assert_eq!(m["seed_from"], json!(host));
    ok(&precreate(&f, &doc));
    assert!(is_file(&src), "the host has a file there");
    assert_eq!(
        std::fs::read(&src).unwrap(),
        b"TZif2 Europe/Paris host data\n"
    );
    assert!(is_dir(&dir_src), "the host has a directory there");

    // An engine-made empty directory is replaced by the host's content.
    let f2 = Fixture::new();
    let host2 = host_zone(&f2);
    f2.write_config(&format!("seed_from_host = [\"{}\"]", host2.display()));
    let t2 = f2.tenant("user-toto");
    let src2 = in_chroot(&t2, &host2);
    std::fs::create_dir_all(&src2).unwrap();
    let b2 = f2.bundle("b");
    ok(&precreate(
        &f2,
        &doc_for(&b2, vec![bind(&src2, "/etc/localtime", true)], None),
    ));
    assert_eq!(
        std::fs::read(&src2).unwrap(),
        b"TZif2 Europe/Paris host data\n"
    );
}

#[test]
fn a_refusal_names_the_seed_when_the_type_came_from_the_host() {
    if !root_or_skip("seed_refusal") {
        return;
    }
    let f = Fixture::new();
    let host = host_zone(&f);
    f.write_config(&format!("seed_from_host = [\"{}\"]", host.display()));
    let t = f.tenant("user-toto");
    let src = in_chroot(&t, &host);
    std::fs::create_dir_all(src.join("keep")).unwrap();
    let b = f.bundle("b");
    // The image has nothing at /bad: the file type comes from the host's seed file.
    let o = precreate(&f, &doc_for(&b, vec![bind(&src, "/bad", true)], None));
    let line = assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["mount /bad", "non-empty directory"],
    );
    assert!(
        line.contains(&format!(
            "the host's {} (seed_from_host) is a file",
            host.display()
        )) && line.contains("the image has nothing at /bad")
            && !line.contains("the image has a file"),
        "{line}"
    );
    assert!(is_dir(&src.join("keep")), "nothing changed");
}

#[test]
fn ownership_none_changes_no_owner() {
    if !root_or_skip("ownership_none") {
        return;
    }
    let f = Fixture::new();
    f.write_config("ownership = \"none\"");
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("data")).unwrap();
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![
            bind(&t.join("data"), "/data", false),
            bind(&t.join("new/file"), "/etc/passwd", true),
        ],
        Some(100000),
    );
    ok(&precreate(&f, &doc));
    assert_eq!(owner_of(&t.join("data")), (0, 0));
    assert!(is_file(&t.join("new/file")), "the type is still fixed");
    assert_eq!(owner_of(&t.join("new/file")), (0, 0));
    assert_eq!(owner_of(&t.join("new")), (0, 0));
}

#[test]
fn recursive_on_mismatch_walks_only_when_the_top_is_wrong() {
    if !root_or_skip("recursive") {
        return;
    }
    let f = Fixture::new();
    f.write_config("ownership = \"recursive-on-mismatch\"");
    let t = f.tenant("user-toto");
    let data = t.join("data");
    std::fs::create_dir_all(data.join("a/b")).unwrap();
    std::fs::write(data.join("a/b/file"), "x").unwrap();
    std::fs::write(data.join("right"), "x").unwrap();
    std::os::unix::fs::chown(data.join("right"), Some(100000), Some(100000)).unwrap();
    let host_file = f.path().join("host-secret");
    std::fs::write(&host_file, "s").unwrap();
    symlink(&host_file, data.join("link-out")).unwrap();
    let b = f.bundle("b");
    let doc = doc_for(&b, vec![bind(&data, "/data", false)], Some(100000));
    write_config_json(&b, &{
        let mut d = doc.clone();
        d["root"]["path"] = json!("rootfs");
        d
    });
    let plan = f.hook(&["plan", "--bundle", b.to_str().unwrap()], b"");
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("everything below it too"),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );

    ok(&precreate(&f, &doc));
    for p in ["", "a", "a/b", "a/b/file", "right", "link-out"] {
        assert_eq!(owner_of(&data.join(p)), (100000, 100000), "{p}");
    }
    assert_eq!(owner_of(&host_file), (0, 0), "links are not followed");

    // The top is right now: a root-owned file planted deep inside is not looked for.
    std::fs::write(data.join("a/b/late"), "x").unwrap();
    ok(&precreate(&f, &doc));
    assert_eq!(owner_of(&data.join("a/b/late")), (0, 0));
}

#[test]
fn annotations_control_one_container() {
    if !root_or_skip("annotations") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let with = |pairs: &[(&str, &str)], mounts: Vec<Value>| {
        let mut d = doc_for(&b, mounts, Some(100000));
        for (k, v) in pairs {
            d["annotations"][*k] = json!(v);
        }
        d
    };
    // Disabled: nothing is created or given an owner; a source that would need creating
    // is refused (never handed to the runtime unresolved), one already there is used.
    std::fs::create_dir(t.join("there")).unwrap();
    let before = snapshot(&t);
    let off = [("io.oci-volume-hook.enabled", "false")];
    ok(&precreate(
        &f,
        &with(&off, vec![bind(&t.join("there"), "/there", false)]),
    ));
    let o = precreate(&f, &with(&off, vec![bind(&t.join("x"), "/x", false)]));
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["mount /x", "io.oci-volume-hook.enabled", "create-dir"],
    );
    assert_unchanged(&before, &snapshot(&t), "disabled container");

    // Owner and ownership chosen per container, where the operator allows it.
    f.write_config(
        "allowed_annotations = [\"io.oci-volume-hook.owner\", \"io.oci-volume-hook.ownership\"]",
    );
    let mut d = with(
        &[("io.oci-volume-hook.owner", "process-user")],
        vec![bind(&t.join("home"), "/home", false)],
    );
    d["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    ok(&precreate(&f, &d));
    assert_eq!(owner_of(&t.join("home")), (101000, 101000));
    ok(&precreate(
        &f,
        &with(
            &[("io.oci-volume-hook.ownership", "none")],
            vec![bind(&t.join("plain"), "/plain", false)],
        ),
    ));
    assert_eq!(owner_of(&t.join("plain")), (0, 0));

    // Unknown values and keys are errors naming the annotation, and change nothing.
    let before = snapshot(&t);
    for (k, v) in [
        ("io.oci-volume-hook.ownership", "everything"),
        ("io.oci-volume-hook.enable", "false"),
    ] {
        let o = precreate(&f, &with(&[(k, v)], vec![bind(&t.join("y"), "/y", false)]));
        assert_one_line_error(&o, "oci-volume-hook", &[k]);
    }
    assert_unchanged(&before, &snapshot(&t), "bad annotations");

    // The operator can turn per-container control off.
    f.write_config("allow_annotations = false");
    let o = precreate(
        &f,
        &with(&[("io.oci-volume-hook.enabled", "false")], vec![]),
    );
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["io.oci-volume-hook.enabled", "not allowed"],
    );
}
