//! `ownership = "recursive-on-mismatch"` against `chown -R`, on a generated tree of 200k
//! entries of which half already have the wanted owner (goal: at least 2x faster), and the
//! cost when the top already matches (goal: O(1), the same as a one-entry volume).
//!
//! Then `ownership = "idmap"` against `recursive-on-mismatch`: whole container starts through
//! the wrapper and runc >= 1.2 (the sid tree, `$OCI_VOLUME_HOOK_SID_TREE`, skipped without
//! it) on a root-owned volume of 1,000,000 entries (`$OCI_VOLUME_HOOK_BENCH_ENTRIES`);
//! goal: idmap's start time independent of the tree's size, and no inode changed.
//!
//! `cargo bench --bench ownership` as root. Without `--bench` (under `cargo test
//! --all-targets`) it runs on a small tree once, to prove the benchmark works.

mod common;
use common::unmount_below;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const HOOK: &str = env!("CARGO_BIN_EXE_oci-volume-hook");
const UID: u32 = 100000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("ownership benchmark: needs root; skipped");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ovh-bench-own-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let tenant = d.join("containerdata/user-toto");
    let tree = tenant.join("data");
    let (dirs, files) = if full { (200, 999) } else { (4, 9) }; // 200 * (999 + 1) = 200k entries
    for i in 0..dirs {
        let sub = tree.join(format!("d{i:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for j in 0..files {
            std::fs::File::create(sub.join(format!("f{j:03}"))).unwrap();
        }
    }
    let rootfs = d.join("rootfs");
    std::fs::create_dir_all(rootfs.join("data")).unwrap();
    std::fs::create_dir_all(tenant.join("small")).unwrap();
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "chroots = [\"{}/containerdata/*\"]\nstaging_dir = \"{0}/staging\"\nownership = \"recursive-on-mismatch\"\n[log]\ntarget = \"file\"\nfile = \"{}/hook.log\"\n",
            d.display(),
            d.display()
        ),
    )
    .unwrap();
    let spec = |src: &Path| {
        let doc = json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"},
            "root": {"path": rootfs},
            "mounts": [{"destination": "/data", "type": "bind", "source": src, "options": ["rbind"]}],
            "linux": {
                "namespaces": [{"type": "user"}, {"type": "mount"}],
                "uidMappings": [{"containerID": 0, "hostID": UID, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": UID, "size": 65536}]
            }
        });
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        let b = d.join(format!("bundle-{name}"));
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("config.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
        let state = d.join(format!("state-{name}.json"));
        let st = json!({"ociVersion": "1.0.2", "id": name, "status": "creating", "bundle": b});
        std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
        state
    };
    let (big, small) = (spec(&tree), spec(&tenant.join("small")));
    // The OCI hook mode: ownership work alone, without staging mounts.
    let hook = |state: &PathBuf| {
        let mut c = Command::new(HOOK);
        c.args(["--config", config.to_str().unwrap(), "hook"])
            .stdin(std::fs::File::open(state).unwrap())
            .stdout(Stdio::null());
        c
    };
    let chown_r = || {
        let mut c = Command::new("chown");
        c.arg("-R").arg(format!("{UID}:{UID}")).arg(&tree);
        c
    };
    // Half right: every other directory's files, and the top wrong.
    let reset = || {
        assert!(
            Command::new("chown")
                .arg("-R")
                .arg("0:0")
                .arg(&tree)
                .status()
                .unwrap()
                .success()
        );
        for i in (0..dirs).step_by(2) {
            let sub = tree.join(format!("d{i:03}"));
            assert!(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{UID}:{UID}"))
                    .arg(&sub)
                    .status()
                    .unwrap()
                    .success()
            );
        }
    };
    let n = if full { 5 } else { 1 };
    let (mut t_chown, mut t_tool) = (Vec::new(), Vec::new());
    for i in 0..n {
        for first in [i % 2 == 0, i % 2 != 0] {
            reset();
            sync();
            let (mut c, out) = if first {
                (chown_r(), &mut t_chown)
            } else {
                (hook(&big), &mut t_tool)
            };
            out.push(time(&mut c));
        }
    }
    let meta = std::fs::metadata(tree.join("d001/f000")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        UID,
        "the tool changed the tree"
    );
    // Top already right: a walk would cost as much as above; it must cost what a tiny volume does.
    let (mut t_top, mut t_small) = (Vec::new(), Vec::new());
    for _ in 0..(n * 20) {
        t_top.push(time(&mut hook(&big)));
        t_small.push(time(&mut hook(&small)));
    }
    let entries = dirs * (files + 1);
    println!(
        "{:<62} {:>12} {:>12} {:>8}",
        format!("ownership benchmark ({entries} entries, medians)"),
        "baseline",
        "measured",
        "speed-up"
    );
    let (a, b) = (median(t_chown), median(t_tool));
    println!(
        "{:<62} {:>10.1}ms {:>10.1}ms {:>7.2}x  (goal >= 2x)",
        "recursive-on-mismatch vs chown -R, half already right",
        ms(a),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    );
    unmount_below(d);
    let (a, b) = (median(t_small), median(t_top));
    println!(
        "{:<62} {:>10.2}ms {:>10.2}ms {:>7.2}x  (goal ~1x: O(1))",
        "top already right: 200k-entry volume vs 1-entry volume",
        ms(a),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    );
    idmap_vs_recursive(full);
}

/// Container starts (wrapper + runc 1.3 `run` of `true`) on a root-owned volume: idmap
/// against recursive-on-mismatch (which chowns every entry to the mapped root).
fn idmap_vs_recursive(full: bool) {
    let sid = PathBuf::from(
        std::env::var_os("OCI_VOLUME_HOOK_SID_TREE")
            .unwrap_or("/var/tmp/oci-volume-hook-sid".into()),
    );
    if !sid.join(".ready").exists() {
        eprintln!(
            "idmap benchmark: no sid tree at {} (runc >= 1.2); skipped",
            sid.display()
        );
        return;
    }
    let entries: usize = match std::env::var("OCI_VOLUME_HOOK_BENCH_ENTRIES") {
        Ok(n) => n.parse().expect("OCI_VOLUME_HOOK_BENCH_ENTRIES: a number"),
        Err(_) if full => 1_000_000,
        Err(_) => 100,
    };
    let dir = tempfile::Builder::new()
        .prefix("ovh-bench-idmap-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(d, mode).unwrap();
    let tenant = d.join("containerdata/user-toto");
    let (big, small) = (tenant.join("big"), tenant.join("small"));
    std::fs::create_dir_all(&small).unwrap();
    let per_dir = 1000.min(entries);
    for i in 0..entries.div_ceil(per_dir) {
        let sub = big.join(format!("d{i:04}"));
        std::fs::create_dir_all(&sub).unwrap();
        for j in 0..per_dir.min(entries - i * per_dir) {
            std::fs::File::create(sub.join(format!("f{j:04}"))).unwrap();
        }
    }
    let rootfs = d.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("data")).unwrap();
    for sub in ["proc", "dev", "sys"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true")).unwrap();
    let runc = sid.join("usr/sbin/runc");
    let config = |mode: &str| {
        let p = d.join(format!("{mode}.toml"));
        std::fs::write(
            &p,
            format!(
                "chroots = [\"{}/containerdata/*\"]\nstaging_dir = \"{0}/staging\"\nownership = \"{mode}\"\nruntime = \"{}\"\n[log]\ntarget = \"file\"\nfile = \"{0}/{mode}.log\"\n",
                d.display(),
                runc.display()
            ),
        )
        .unwrap();
        p
    };
    let bundle = |src: &Path| {
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        let b = d.join(format!("bundle-{name}"));
        std::fs::create_dir_all(&b).unwrap();
        let doc = json!({
            "ociVersion": "1.2.0",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/",
                        "env": ["PATH=/bin"], "terminal": false},
            "root": {"path": rootfs},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                {"destination": "/data", "type": "bind", "source": src, "options": ["rbind"]}
            ],
            "linux": {
                "namespaces": [{"type": "user"}, {"type": "mount"}, {"type": "pid"}],
                "uidMappings": [{"containerID": 0, "hostID": UID, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": UID, "size": 65536}]
            }
        });
        std::fs::write(b.join("config.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
        b
    };
    let (b_big, b_small) = (bundle(&big), bundle(&small));
    let mut id = 0;
    let mut start = |cfg: &Path, b: &Path| {
        id += 1;
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0/usr/lib/x86_64-linux-gnu" /usr/lib/x86_64-linux-gnu && exec "$@""#)
            .arg(&sid)
            .arg(env!("CARGO_BIN_EXE_oci-volume-runtime"))
            .arg("--root")
            .arg(d.join("state"))
            .args(["run", &format!("ovh-bench-{id}")])
            .env("OCI_VOLUME_HOOK_CONFIG", cfg)
            .current_dir(b)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        time(&mut c)
    };
    let root_owned = || {
        assert!(
            Command::new("chown")
                .args(["-R", "0:0"])
                .arg(&big)
                .status()
                .unwrap()
                .success()
        );
        sync();
    };
    let (idmap, recursive) = (config("idmap"), config("recursive-on-mismatch"));
    let n = if full { 3 } else { 1 };
    let (mut t_idmap, mut t_small, mut t_rec) = (Vec::new(), Vec::new(), Vec::new());
    root_owned();
    let probe = big.join("d0000/f0000");
    let ctime = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (
            std::os::unix::fs::MetadataExt::uid(&m),
            std::os::unix::fs::MetadataExt::ctime_nsec(&m),
        )
    };
    let before = ctime(&probe);
    for _ in 0..(n * 3) {
        t_idmap.push(start(&idmap, &b_big));
        t_small.push(start(&idmap, &b_small));
    }
    assert_eq!(
        ctime(&probe),
        before,
        "idmap changed an inode of the volume"
    );
    for _ in 0..n {
        root_owned();
        t_rec.push(start(&recursive, &b_big));
        assert_eq!(
            ctime(&probe).0,
            UID,
            "recursive-on-mismatch chowned the volume"
        );
    }
    let (a, b, c) = (median(t_small), median(t_idmap), median(t_rec));
    println!(
        "{:<62} {:>10.1}ms {:>10.1}ms {:>7.2}x  (goal ~1x: O(1))",
        format!("idmap start: {entries}-entry volume vs 1-entry volume"),
        ms(a),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "{:<62} {:>10.1}ms {:>10.1}ms {:>7.2}x",
        format!("start, {entries} root-owned entries: recursive-on-mismatch vs idmap"),
        ms(c),
        ms(b),
        c.as_secs_f64() / b.as_secs_f64()
    );
}

fn sync() {
    nix::unistd::sync();
}

fn time(c: &mut Command) -> Duration {
    let t = Instant::now();
    assert!(c.status().unwrap().success(), "{c:?} failed");
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
