//! The preparation on real filesystems, through the `oci-volume-hook` binary, as root.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn precreate(f: &Fixture, doc: &Value) -> std::process::Output {
    f.hook(&["precreate"], &serde_json::to_vec(doc).unwrap())
}

/// A config.json whose rootfs is `bundle/rootfs`, given as an absolute path as podman does.
fn doc_for(bundle: &Path, mounts: Vec<Value>, userns: Option<u32>) -> Value {
    let mut d = runc_config("true", mounts, userns);
    d["root"]["path"] = json!(bundle.join("rootfs"));
    d
}

fn output_doc(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "hook failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("precreate prints config.json")
}

#[test]
fn creates_a_missing_file_and_its_parents_for_the_mapped_root() {
    if !root_or_skip("creates_a_missing_file") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
        Some(100000),
    );
    let out = output_doc(&precreate(&f, &doc));
    // Only the source changes: to a root-only staging mount of exactly the checked inode.
    let pinned = pinned_sources(&out, &doc, &f.staging());
    assert_eq!(pinned.len(), 1);
    assert_eq!(inode(&pinned[0].1), inode(&t.join("etc/localtime")));
    assert!(
        is_file(&t.join("etc/localtime")),
        "a file, since the image has a file (through its symlink)"
    );
    assert_eq!(owner_of(&t.join("etc/localtime")), (100000, 100000));
    assert!(is_dir(&t.join("etc")));
    assert_eq!(
        owner_of(&t.join("etc")),
        (100000, 100000),
        "directories the tool created are the container's"
    );
    assert_eq!(owner_of(&t), (0, 0), "the chroot itself is never changed");
    assert!(f.log().contains("created file"), "{}", f.log());
}

#[test]
fn a_destination_missing_from_the_image_gets_a_directory() {
    if !root_or_skip("missing_destination") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let doc = doc_for(&b, vec![bind(&t.join("srv/www"), "/var/www", false)], None);
    output_doc(&precreate(&f, &doc));
    assert!(is_dir(&t.join("srv/www")));
    assert_eq!(
        owner_of(&t.join("srv/www")),
        (0, 0),
        "no user namespace: container root is host root"
    );
}

#[test]
fn an_empty_directory_where_the_image_has_a_file_is_repaired() {
    if !root_or_skip("repair") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap();
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
        Some(100000),
    );
    write_config_json(&b, &doc);
    let plan = f.hook(&["plan", "--bundle", b.to_str().unwrap()], b"");
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(
        text.contains("repair") && text.contains("/etc/localtime"),
        "{text}"
    );
    assert!(is_dir(&t.join("etc/localtime")), "plan touches nothing");

    output_doc(&precreate(&f, &doc));
    assert!(is_file(&t.join("etc/localtime")));
    assert_eq!(owner_of(&t.join("etc/localtime")), (100000, 100000));
}

/// `plan`'s lines name tenant-chosen paths: an escape sequence or a line break in a name
/// reaches the operator's terminal escaped, one line a mount (on the code before, raw).
#[test]
fn plan_text_escapes_what_tenants_named() {
    if !root_or_skip("plan_escapes") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let name = "\u{1b}]2;owned\u{7}\u{1b}[2J\nrepair /etc/shadow";
    std::fs::create_dir_all(t.join(name)).unwrap();
    let b = f.bundle("b");
    let doc = doc_for(&b, vec![bind(&t.join(name), "/data", true)], None);
    write_config_json(&b, &doc);
    let plan = f.hook(&["plan", "--bundle", b.to_str().unwrap()], b"");
    assert!(plan.status.success(), "{}", stderr(&plan));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(!text.lines().any(|l| l.starts_with("repair")), "{text:?}");
    assert!(text.contains("\\u{1b}]2;owned"), "{text:?}");
}

#[test]
fn a_non_empty_directory_is_refused_and_kept() {
    if !root_or_skip("non_empty") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap();
    std::fs::write(t.join("etc/localtime/precious"), "data").unwrap();
    // A second, fixable mount before it: nothing may be done for it either.
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![
            bind(&t.join("first"), "/first", false),
            bind(&t.join("etc/localtime"), "/etc/localtime", true),
        ],
        Some(100000),
    );
    let before = snapshot(&t);
    let o = precreate(&f, &doc);
    let line = assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["/etc/localtime", "non-empty directory"],
    );
    assert!(o.stdout.is_empty(), "no config on stdout after a failure");
    assert_unchanged(&before, &snapshot(&t), "refused container");
    assert_eq!(
        std::fs::read_to_string(t.join("etc/localtime/precious")).unwrap(),
        "data"
    );
    let msg = line.trim_start_matches("oci-volume-hook: ");
    assert!(
        f.log().contains(msg),
        "the log has the same message: {}",
        f.log()
    );
}

#[test]
fn a_file_where_the_image_has_a_directory_is_refused() {
    if !root_or_skip("file_for_dir") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::write(t.join("data"), "x").unwrap();
    let b = f.bundle("b");
    let doc = doc_for(&b, vec![bind(&t.join("data"), "/data", false)], None);
    let o = precreate(&f, &doc);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["mount /data", "regular file", "directory"],
    );
    assert_eq!(std::fs::read_to_string(t.join("data")).unwrap(), "x");
}

#[test]
fn a_second_run_changes_nothing() {
    if !root_or_skip("idempotent") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap();
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![
            bind(&t.join("etc/localtime"), "/etc/localtime", true),
            bind(&t.join("a/b/c"), "/data", false),
        ],
        Some(100000),
    );
    output_doc(&precreate(&f, &doc));
    let first = snapshot(&t);
    output_doc(&precreate(&f, &doc));
    assert_unchanged(&first, &snapshot(&t), "second run");
    write_config_json(&b, &doc);
    let plan = f.hook(&["plan", "--bundle", b.to_str().unwrap(), "--json"], b"");
    let v: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let actions: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["action"].as_str().unwrap())
        .collect();
    assert!(actions.iter().all(|a| *a == "nothing"), "{actions:?}");
}

#[test]
fn ownership_follows_the_configured_owner() {
    if !root_or_skip("process_user") {
        return;
    }
    let f = Fixture::new();
    f.write_config("owner = \"process-user\"");
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("home")).unwrap();
    let b = f.bundle("b");
    let mut doc = doc_for(
        &b,
        vec![bind(&t.join("home"), "/home", false)],
        Some(100000),
    );
    doc["process"]["user"] = json!({"uid": 1000, "gid": 1001});
    output_doc(&precreate(&f, &doc));
    assert_eq!(owner_of(&t.join("home")), (101000, 101001));

    // Without a user namespace the process user's ids are the host's.
    let mut doc = doc_for(&b, vec![bind(&t.join("home"), "/home", false)], None);
    doc["process"]["user"] = json!({"uid": 33, "gid": 34});
    output_doc(&precreate(&f, &doc));
    assert_eq!(owner_of(&t.join("home")), (33, 34));
}

#[test]
fn an_unmapped_id_is_an_error_that_changes_nothing() {
    if !root_or_skip("unmapped") {
        return;
    }
    let f = Fixture::new();
    f.write_config("owner = \"process-user\"");
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let mut doc = doc_for(
        &b,
        vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
        Some(100000),
    );
    doc["process"]["user"] = json!({"uid": 70000, "gid": 0});
    let before = snapshot(&t);
    let o = precreate(&f, &doc);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["/etc/localtime", "uid 70000 is not mapped"],
    );
    assert_unchanged(&before, &snapshot(&t), "unmapped uid");
}

#[test]
fn sources_through_symlinks_are_rewritten_to_the_path_inside_the_chroot() {
    if !root_or_skip("rewrite") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("releases/v1/data")).unwrap();
    std::fs::create_dir_all(t.join("releases/v2/data")).unwrap();
    symlink("/releases/v2", t.join("current")).unwrap();
    symlink("releases/v1", t.join("previous")).unwrap();
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![
            bind(&t.join("current/data"), "/data", false),
            bind(&t.join("previous/data"), "/old", false),
        ],
        None,
    );
    // Where the tenant owns a directory on the way (here `releases`), it could swap it for a
    // link after the check: the runtime gets staging mounts holding the checked inodes.
    std::os::unix::fs::chown(t.join("releases"), Some(1000), Some(1000)).unwrap();
    let pinned = pinned_sources(&output_doc(&precreate(&f, &doc)), &doc, &f.staging());
    assert_eq!(pinned.len(), 2);
    assert_eq!(inode(&pinned[0].1), inode(&t.join("releases/v2/data")));
    assert_eq!(inode(&pinned[1].1), inode(&t.join("releases/v1/data")));
    // By default every source is pinned, even where only root can change the directories on
    // the way: a tenant container running as host root could still swap them.
    std::os::unix::fs::chown(t.join("releases"), Some(0), Some(0)).unwrap();
    let pinned = pinned_sources(&output_doc(&precreate(&f, &doc)), &doc, &f.staging());
    assert_eq!(pinned.len(), 2, "pinned although root owns every directory");
    // The opt-in heuristic (safe only when no tenant ever runs as host root) hands the
    // runtime the path resolved inside the chroot instead.
    f.write_config("pin_sources = \"when-changeable\"");
    let out = output_doc(&precreate(&f, &doc));
    let n = doc["mounts"].as_array().unwrap().len();
    assert_eq!(
        out["mounts"][n - 2]["source"],
        json!(t.join("releases/v2/data"))
    );
    assert_eq!(
        out["mounts"][n - 1]["source"],
        json!(t.join("releases/v1/data"))
    );
    // Every other field is as it was, unknown ones included, in the same order.
    let mut back = out.clone();
    back["mounts"][n - 2]["source"] = doc["mounts"][n - 2]["source"].clone();
    back["mounts"][n - 1]["source"] = doc["mounts"][n - 1]["source"].clone();
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        serde_json::to_string(&doc).unwrap()
    );
}

#[test]
fn the_oci_hook_fixes_owners_and_refuses_what_it_cannot_rewrite() {
    if !root_or_skip("hook_mode") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("data")).unwrap();
    std::fs::create_dir_all(t.join("releases/v2")).unwrap();
    symlink("releases/v2", t.join("current")).unwrap();
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![
            bind(&t.join("data"), "/data", false),
            bind(&t.join("current"), "/app", false),
        ],
        Some(100000),
    );
    write_config_json(&b, &doc);
    let state = json!({"ociVersion": "1.0.2", "id": "ctr-42", "status": "creating", "bundle": b});
    let o = f.hook(&[], &serde_json::to_vec(&state).unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(owner_of(&t.join("data")), (100000, 100000));
    assert_eq!(
        owner_of(&t.join("releases/v2")),
        (100000, 100000),
        "a relative link the host resolves the same way is fine"
    );
    assert!(
        f.log().contains("ctr-42"),
        "the container id is on the log lines: {}",
        f.log()
    );

    // An absolute link: the host would resolve it outside the chroot; the hook cannot rewrite.
    std::fs::remove_file(t.join("current")).unwrap();
    symlink("/releases/v2", t.join("current")).unwrap();
    let o = f.hook(&["hook"], &serde_json::to_vec(&state).unwrap());
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["mount /app", "symlink", "precreate"],
    );
}

#[test]
fn mounts_outside_the_chroots_are_untouched() {
    if !root_or_skip("outside") {
        return;
    }
    let f = Fixture::new();
    let outside = f.path().join("host/shared");
    std::fs::create_dir_all(&outside).unwrap();
    let other_tree = f.path().join("containerdata2/user-toto/data"); // not matched by the pattern
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![
            bind(&outside, "/shared", false),
            bind(&other_tree, "/other", false),
            bind(&t.join("ok"), "/ok", false),
        ],
        Some(100000),
    );
    let before = snapshot(&f.path().join("host"));
    output_doc(&precreate(&f, &doc));
    assert_unchanged(
        &before,
        &snapshot(&f.path().join("host")),
        "outside the chroots",
    );
    assert!(!f.path().join("containerdata2").exists());
    assert_eq!(owner_of(&t.join("ok")), (100000, 100000));
}

#[test]
fn bad_input_gets_one_clear_line_and_changes_nothing() {
    if !root_or_skip("bad_input") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let before = snapshot(&t);

    let o = f.hook(&["precreate"], b"{\"mounts\": [");
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["config.json on stdin", "not valid JSON"],
    );
    let o = f.hook(&[], b"not json");
    assert_one_line_error(&o, "oci-volume-hook", &["OCI state", "not valid JSON"]);
    let o = f.hook(&[], br#"{"id": "x", "bundle": "/nonexistent/bundle"}"#);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["/nonexistent/bundle", "config.json"],
    );
    let o = f.hook(&["plan", "--bundle", "/nonexistent/bundle"], b"");
    assert_one_line_error(&o, "oci-volume-hook", &["/nonexistent/bundle"]);

    let mut no_root = doc_for(
        &b,
        vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
        None,
    );
    no_root.as_object_mut().unwrap().remove("root");
    let o = precreate(&f, &no_root);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["mount /etc/localtime", "no root.path"],
    );

    let mut dotdot = doc_for(&b, vec![], None);
    dotdot["mounts"] = json!([bind(&t.join("../user-titi/x"), "/x", false)]);
    let o = precreate(&f, &dotdot);
    assert_one_line_error(&o, "oci-volume-hook", &["mount /x", "`..`"]);

    assert_unchanged(&before, &snapshot(&t), "bad input");
    assert!(
        f.log().contains("no root.path"),
        "errors are logged too: {}",
        f.log()
    );

    // An unknown configuration key is named.
    std::fs::write(
        f.config_path(),
        "chroots = [\"/x/*\"]\nowners = \"process-user\"\n",
    )
    .unwrap();
    let o = f.hook(&["precreate"], b"{}");
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["unknown field", "owners", "config.toml"],
    );
    // An explicitly named configuration that does not exist is an error too.
    let o = std::process::Command::new(hook_bin())
        .args(["--config", "/nonexistent/c.toml", "precreate"])
        .output()
        .unwrap();
    assert_one_line_error(&o, "oci-volume-hook", &["/nonexistent/c.toml"]);
}

#[test]
fn plan_json_is_stable() {
    if !root_or_skip("plan_json") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let doc = runc_config(
        "true",
        vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
        Some(100000),
    );
    write_config_json(&b, &doc);
    let o = f.hook(&["plan", "--bundle", b.to_str().unwrap(), "--json"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["ok"], true);
    let m = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/etc/localtime")
        .unwrap()
        .clone();
    assert_eq!(m["action"], "create-file");
    assert_eq!(m["wanted"], "file");
    assert_eq!(m["owner"], json!({"uid": 100000, "gid": 100000}));
    assert_eq!(m["chroot"], json!(t));
    let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "index",
            "destination",
            "source",
            "chroot",
            "wanted",
            "action",
            "reason",
            "owner",
            "ownership",
            "seed_from",
            "resolved_source",
            // Added within version 1 (idmapped mounts): null unless the mount is idmapped.
            "idmap",
            "idmap_fallback"
        ]
    );
    assert_eq!(
        (&m["idmap"], &m["idmap_fallback"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(m["ownership"], "top");
    assert_eq!(
        v["settings"],
        json!({"enabled": true, "owner": "container-root", "ownership": "top"})
    );
    assert!(!t.join("etc").exists(), "plan touches nothing");
}

/// podman 5 with a user namespace gives precreate a root.path that is still an empty mount
/// point: the engine-made directory cannot be judged against the image, and the log says so
/// and names the way out (the wrapper as podman's runtime).
#[test]
fn an_empty_root_path_is_named_in_the_log_with_the_way_out() {
    if !root_or_skip("empty_root_path") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap();
    let empty = f.path().join("intermediate-mountpoint");
    std::fs::create_dir_all(&empty).unwrap();
    let mut doc = runc_config(
        "true",
        vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
        Some(200000),
    );
    doc["root"]["path"] = json!(empty);
    let o = precreate(&f, &doc);
    let log = f.log();
    assert!(
        log.contains("WARN") && log.contains("is empty") && log.contains("podman's runtime"),
        "{log} {}",
        stderr(&o)
    );
    // With the image visible, no such warning.
    let f2 = Fixture::new();
    let t2 = f2.tenant("user-toto");
    let b = f2.bundle("b");
    let doc = doc_for(&b, vec![bind(&t2.join("etc/x"), "/etc/x", true)], None);
    output_doc(&precreate(&f2, &doc));
    assert!(!f2.log().contains("is empty"), "{}", f2.log());
}
