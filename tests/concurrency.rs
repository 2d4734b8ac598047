//! Many containers of one tenant preparing the same source at the same moment.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

fn race(f: &Fixture, doc: &Value, n: usize) {
    let input = serde_json::to_vec(doc).unwrap();
    let mut children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(hook_bin())
                .args(["--config", f.config_path().to_str().unwrap(), "precreate"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Release them all at once: each blocks reading stdin until its input arrives.
    let stdins: Vec<_> = children
        .iter_mut()
        .map(|c| c.stdin.take().unwrap())
        .collect();
    for mut s in stdins {
        s.write_all(&input).unwrap();
    }
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "a concurrent run failed: {}",
            stderr(&o)
        );
        let out: Value = serde_json::from_slice(&o.stdout).unwrap();
        // Only the source may change (pinned or not, depending on who owns its parents).
        pinned_sources(&out, doc, &f.staging());
    }
}

#[test]
fn concurrent_preparers_of_one_missing_source_all_succeed() {
    if !root_or_skip("concurrency") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    for round in 0..5 {
        let src = t.join(format!("r{round}/deep/etc/localtime"));
        let mut doc = runc_config(
            "true",
            vec![bind(&src, "/etc/localtime", true)],
            Some(100000),
        );
        doc["root"]["path"] = json!(b.join("rootfs"));
        race(&f, &doc, 16);
        assert!(is_file(&src));
        assert_eq!(owner_of(&src), (100000, 100000));
        let entries: Vec<_> = std::fs::read_dir(src.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1, "one file, nothing else");
        for d in [
            src.parent().unwrap(),
            src.parent().unwrap().parent().unwrap(),
        ] {
            assert_eq!(owner_of(d), (100000, 100000), "{}", d.display());
        }
    }
}

#[test]
fn concurrent_repairs_of_one_empty_directory_all_succeed() {
    if !root_or_skip("concurrent_repair") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    for round in 0..5 {
        let src = t.join(format!("r{round}/localtime"));
        std::fs::create_dir_all(&src).unwrap();
        let mut doc = runc_config(
            "true",
            vec![bind(&src, "/etc/localtime", true)],
            Some(100000),
        );
        doc["root"]["path"] = json!(b.join("rootfs"));
        race(&f, &doc, 16);
        assert!(is_file(&src));
        assert_eq!(owner_of(&src), (100000, 100000));
    }
}

#[test]
fn first_containers_of_a_new_tenant_all_succeed_together() {
    if !root_or_skip("concurrent_first_containers") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let b = f.bundle("b");
    for round in 0..3 {
        // The tenant's chroot does not exist yet: every preparer may be the one creating it.
        let t = f.base().join(format!("user-new{round}"));
        let src = t.join("etc/localtime");
        let mut doc = runc_config(
            "true",
            vec![
                bind(&src, "/etc/localtime", true),
                bind(&t.join("data"), "/data", false),
            ],
            Some(100000),
        );
        doc["root"]["path"] = json!(b.join("rootfs"));
        race(&f, &doc, 16);
        assert_eq!(owner_of(&t), (0, 0), "the chroot is root's");
        let mode = std::fs::metadata(&t).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        assert!(is_file(&src));
        assert_eq!(owner_of(&src), (100000, 100000));
        assert_eq!(owner_of(&t.join("data")), (100000, 100000));
    }
}

#[test]
fn first_containers_of_a_new_tenant_all_start_through_the_wrapper() {
    let Some(runc) = engine("concurrent_first_runc", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.base().join("user-first");
    let children: Vec<_> = (0..16)
        .map(|i| {
            let b = f.bundle(&format!("b{i}"));
            write_config_json(
                &b,
                &runc_config(
                    "test -f /etc/localtime && touch /data/ok && echo started",
                    vec![
                        bind(&t.join("etc/localtime"), "/etc/localtime", true),
                        bind(&t.join("data"), "/data", false),
                    ],
                    Some(100000),
                ),
            );
            let state = b.join("state");
            Command::new(wrapper_bin())
                .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
                .args(["--root", state.to_str().unwrap(), "run"])
                .arg(format!("ovh-first-{i}"))
                .current_dir(&b)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "started\n");
    }
    assert_eq!(owner_of(&t), (0, 0));
    assert_eq!(owner_of(&t.join("data/ok")), (100000, 100000));
}
