//! Idmapped bind mounts end to end: an engine's `idmap` mount keeps working through the
//! wrapper, `ownership = "idmap"` gives a root-owned volume to a user-namespaced root without
//! a chown (runc >= 1.2, from the Debian sid tree), and runc 1.1 falls back to chown.
//!
//! runc 1.3 needs sid's glibc: it runs in a private mount namespace where the sid tree's
//! `/usr/lib/x86_64-linux-gnu` is bound over the host's (newer glibc runs the host's
//! binaries too). The tree is `$OCI_VOLUME_HOOK_SID_TREE` (default
//! /var/tmp/oci-volume-hook-sid); setting that variable makes a missing tree a failure.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::{Value, json};

const SID_ENV: &str = "OCI_VOLUME_HOOK_SID_TREE";
const SID_DEFAULT: &str = "/var/tmp/oci-volume-hook-sid";

/// The sid tree holding runc >= 1.2, or `None` (skip) when it is absent and not required.
fn sid_tree(test: &str) -> Option<PathBuf> {
    if !root_or_skip(test) {
        return None;
    }
    let set = std::env::var_os(SID_ENV);
    let tree = PathBuf::from(set.clone().unwrap_or(SID_DEFAULT.into()));
    if tree.join(".ready").exists() && tree.join("usr/sbin/runc").exists() {
        return Some(tree);
    }
    assert!(
        set.is_none() && std::env::var_os("OCI_VOLUME_HOOK_REQUIRE_SID").is_none(),
        "{test}: the sid tree {} (runc >= 1.2) is missing and {SID_ENV} requires it",
        tree.display()
    );
    eprintln!("SKIP {test}: no sid tree at {}", tree.display());
    None
}

/// Runs the wrapper (`run ID` in `bundle`), in the sid libraries' namespace when `sid`.
fn wrapper_run(f: &Fixture, bundle: &Path, id: &str, sid: Option<&Path>) -> Output {
    let state = bundle.join("state");
    let mut cmd = match sid {
        Some(tree) => {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount --bind "$0/usr/lib/x86_64-linux-gnu" /usr/lib/x86_64-linux-gnu && exec "$@""#)
                .arg(tree)
                .arg(wrapper_bin());
            c
        }
        None => Command::new(wrapper_bin()),
    };
    cmd.env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .arg("--root")
        .arg(&state)
        .args(["run", id])
        .current_dir(bundle)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A root-owned volume of `dirs` x `files` entries; returns its path.
fn volume(t: &Path, dirs: usize, files: usize) -> PathBuf {
    let data = t.join("data");
    for d in 0..dirs {
        let dir = data.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..files {
            std::fs::write(dir.join(format!("f{i}")), "x").unwrap();
        }
    }
    data
}

/// (path, uid, gid, ctime) of everything below `dir`, the top included.
fn owners(dir: &Path) -> Vec<(PathBuf, u32, u32, i64)> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        v.push((
            p,
            m.uid(),
            m.gid(),
            m.ctime_nsec() + m.ctime() * 1_000_000_000,
        ));
    }
    v.sort();
    v
}

fn idmapped_bind(source: &Path, destination: &str) -> Value {
    json!({"destination": destination, "type": "bind", "source": source,
           "options": ["rbind", "idmap"]})
}

const WRITE: &str = "touch /data/new && echo y > /data/d0/f0 && stat -c '%u:%g' /data /data/new";

#[test]
fn an_engine_idmapped_volume_stays_writable_by_container_root() {
    // Fails on the code before idmapped mounts were read: the source was chowned to 100000,
    // which the container saw as 65534 through the idmapped mount (Permission denied).
    let Some(tree) = sid_tree("idmap_engine") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!(
        "runtime = \"{}\"",
        tree.join("usr/sbin/runc").display()
    ));
    let t = f.tenant("user-toto");
    let data = volume(&t, 2, 2);
    let b = f.bundle("b");
    let doc = runc_config(WRITE, vec![idmapped_bind(&data, "/data")], Some(100000));
    write_config_json(&b, &doc);
    let o = wrapper_run(&f, &b, "ovh-idmap-engine", Some(&tree));
    assert!(o.status.success(), "{}\n{}", stderr(&o), f.log());
    assert_eq!(
        out(&o),
        "0:0\n0:0\n",
        "the container sees its volume as its own"
    );
    assert_eq!(owner_of(&data), (0, 0), "on disk, container root is 0");
    assert_eq!(owner_of(&data.join("new")), (0, 0));
}

#[test]
fn ownership_idmap_gives_a_root_owned_volume_without_any_chown() {
    let Some(tree) = sid_tree("idmap_ownership") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!(
        "ownership = \"idmap\"\nruntime = \"{}\"",
        tree.join("usr/sbin/runc").display()
    ));
    let t = f.tenant("user-toto");
    let data = volume(&t, 20, 100);
    let before = owners(&data);
    let b = f.bundle("b");
    let doc = runc_config(WRITE, vec![bind(&data, "/data", false)], Some(100000));
    write_config_json(&b, &doc);
    let o = wrapper_run(&f, &b, "ovh-idmap-own", Some(&tree));
    assert!(o.status.success(), "{}\n{}", stderr(&o), f.log());
    assert_eq!(out(&o), "0:0\n0:0\n");
    let after: Vec<_> = owners(&data)
        .into_iter()
        .filter(|(p, ..)| !p.ends_with("new") && !p.ends_with("d0/f0"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(p, ..)| !p.ends_with("d0/f0"))
        .collect();
    // The top's ctime moved with the new entry; nothing else changed at all.
    let changed = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| x != y && x.0 != data)
        .count();
    assert_eq!(changed, 0, "no inode below the volume changed");
    assert!(after.iter().all(|(_, u, g, _)| (*u, *g) == (0, 0)));
    assert!(f.log().contains("made idmapped"), "{}", f.log());
    assert!(
        f.log().contains("pinned under"),
        "the staged inode is what is idmapped"
    );
    assert!(!f.log().contains("falls back"), "{}", f.log());
    assert_eq!(
        std::fs::read(b.join("config.json")).unwrap(),
        serde_json::to_vec_pretty(&doc).unwrap(),
        "config.json is put back as the engine wrote it"
    );
}

#[test]
fn ownership_idmap_falls_back_to_chown_with_runc_1_1_and_says_so() {
    let Some(runc) = engine("idmap_fallback", "runc") else {
        return;
    };
    let version = Command::new(&runc).arg("--version").output().unwrap();
    if !out(&version).starts_with("runc version 1.1.") {
        eprintln!("SKIP idmap_fallback: needs runc 1.1 ({})", out(&version));
        return;
    }
    let f = Fixture::new();
    f.write_config(&format!(
        "ownership = \"idmap\"\nruntime = \"{}\"",
        runc.display()
    ));
    let t = f.tenant("user-toto");
    let data = volume(&t, 3, 3);
    let b = f.bundle("b");
    let doc = runc_config(WRITE, vec![bind(&data, "/data", false)], Some(100000));
    write_config_json(&b, &doc);
    let o = wrapper_run(&f, &b, "ovh-idmap-fallback", None);
    assert!(o.status.success(), "{}\n{}", stderr(&o), f.log());
    assert_eq!(out(&o), "0:0\n0:0\n");
    assert!(
        owners(&data)
            .iter()
            .all(|(_, u, g, _)| (*u, *g) == (100000, 100000)),
        "chowned as recursive-on-mismatch"
    );
    let log = f.log();
    let lines: Vec<_> = log.lines().filter(|l| l.contains("falls back")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("features do not list idmapped mounts"),
        "{log}"
    );
}
