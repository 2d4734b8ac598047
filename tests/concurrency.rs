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
