//! Every source in a chroot is race-free by default: a tenant that is root in one of its
//! containers swaps a volume for a symlink to the host's /etc in a loop while other
//! containers of the tenant start (Docker, podman); nothing staged survives killed runs; a
//! shared-propagation volume still propagates.

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use daemons::Daemons;
use serde_json::json;

/// Builds the attacker (tests/helpers/swap.c) statically into `rootfs/bin/swap`.
fn build_swapper(rootfs: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/swap.c");
    let o = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(rootfs.join("bin/swap"))
        .arg(&src)
        .output()
        .expect("cc (gcc and libc6-dev) builds the swap helper");
    assert!(
        o.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A tenant tree for the swap: `vol/` (the volume) and `alt -> /etc`; the host's
/// /etc/passwd starts with `root:` while the volume holds none.
fn swap_tree(t: &Path) {
    std::fs::create_dir_all(t.join("vol")).unwrap();
    std::fs::write(t.join("vol/marker"), "tenant-data\n").unwrap();
    std::os::unix::fs::symlink("/etc", t.join("alt")).unwrap();
}

/// What a victim container prints: the first line of `passwd` in its volume, if any.
const VICTIM: &str = "head -n1 /v/passwd 2>/dev/null; cat /v/marker 2>/dev/null; true";

fn exposed(stdout: &[u8]) -> bool {
    String::from_utf8_lossy(stdout).contains("root:x:0:0")
}

#[test]
fn docker_root_tenant_swapping_a_volume_never_exposes_the_host() {
    if engine("docker_race", "cc").is_none() {
        return;
    }
    let f = Fixture::new();
    f.write_config("runtime = \"runc\"");
    let Some(d) =
        daemons::docker_with_wrapper("docker_race", &f.path().join("d"), &f.config_path())
    else {
        return;
    };
    let rootfs = f.bundle("img").join("rootfs");
    build_swapper(&rootfs);
    d.import(&rootfs, "ovh-race:latest");
    let t = f.tenant("user-rr");
    swap_tree(&t);
    // The attacker: a container of the same tenant without a user namespace (host root)
    // with the whole chroot mounted, exchanging vol and alt as fast as it can.
    let chroot = format!("{}:/t", t.display());
    let o = d.docker(&[
        "run",
        "-d",
        "--name",
        "attacker",
        "--userns=host",
        "--network",
        "none",
        "-v",
        &chroot,
        "ovh-race:latest",
        "/bin/swap",
        "/t/vol",
        "/t/alt",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let volume = format!("{}:/v:ro", t.join("vol").display());
    let victim = |d: &Daemons| d.docker_sh("ovh", &volume, "ovh-race:latest", VICTIM);
    // Without pinning the race bites: the runtime mounts the host's /etc.
    f.write_config("runtime = \"runc\"\npin_sources = false");
    let bitten = (0..80).any(|_| exposed(&victim(&d).stdout));
    assert!(
        bitten,
        "the swap loop never won against unpinned sources: the test proves nothing"
    );
    // Pinned (the default): 0 of 100.
    f.write_config("runtime = \"runc\"");
    let (mut started, mut leaked) = (0, 0);
    for _ in 0..100 {
        let o = victim(&d);
        started += o.status.success() as u32;
        leaked += exposed(&o.stdout) as u32;
    }
    let _ = d.docker(&["rm", "-f", "attacker"]);
    assert_eq!(leaked, 0, "host files exposed in {leaked} of 100 starts");
    assert!(started >= 50, "only {started} of 100 victims started");
    assert_eq!(f.staging_left(), (vec![], vec![]));
}

#[test]
fn podman_precreate_under_a_swap_loop_never_exposes_the_host() {
    let Some(podman) = engine("podman_race", "podman") else {
        return;
    };
    let f = Fixture::new();
    let hooks = podman_hooks(&f, true);
    let t = f.tenant("user-pp");
    swap_tree(&t);
    let rootfs = f.bundle("img").join("rootfs");
    chown_tree(&rootfs, 200000);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, a, b) = (stop.clone(), t.join("vol"), t.join("alt"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &a,
                    nix::fcntl::AT_FDCWD,
                    &b,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
            }
        })
    };
    let volume = format!("{}:/v:ro", t.join("vol").display());
    let run = || podman_run(&podman, &f, &hooks, &volume, &rootfs, VICTIM);
    let (mut started, mut leaked) = (0, 0);
    for _ in 0..100 {
        let o = run();
        started += o.status.success() as u32;
        leaked += exposed(&o.stdout) as u32;
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    assert_eq!(
        leaked, 0,
        "host files exposed in {leaked} of 100 podman starts"
    );
    assert!(
        started >= 50,
        "only {started} of 100 podman containers started"
    );
}

/// Counts mounts at or below `dir` other than `dir` itself.
fn staging_mounts(dir: &Path) -> usize {
    mounts_below(dir)
        .iter()
        .filter(|m| Path::new(m) != dir)
        .count()
}

#[test]
fn killed_creates_leave_no_staging_behind() {
    let Some(runc) = engine("sigkill_sweep", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-kk");
    std::fs::create_dir_all(t.join("data")).unwrap();
    let b = f.bundle("b");
    let mounts = (0..4)
        .map(|i| bind(&t.join(format!("data/v{i}")), &format!("/v{i}"), false))
        .collect();
    write_config_json(&b, &runc_config("sleep 10", mounts, None));
    let root = b.join("state");
    let cycles: u64 = std::env::var("OVH_SIGKILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    for i in 0..cycles {
        let id = format!("ovh-kill-{i}");
        let mut child = Command::new(wrapper_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
            .arg("--root")
            .arg(&root)
            .args(["create", "--bundle"])
            .arg(&b)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        // Kill the wrapper alone, or the wrapper and runc, at some moment of the create.
        std::thread::sleep(Duration::from_micros((i * 7919) % 40_000));
        let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
        let target = if i % 2 == 0 {
            nix::unistd::Pid::from_raw(child.id() as i32)
        } else {
            pgid
        };
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        let _ = Command::new(&runc)
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id])
            .stderr(Stdio::null())
            .status();
    }
    assert_eq!(staging_mounts(&f.staging()), 0, "staging mounts left");
    let (entries, _) = f.staging_left();
    assert_eq!(entries, Vec::<PathBuf>::new(), "staging entries left");
}

#[test]
fn a_shared_volume_still_propagates_mounts_back_to_the_host() {
    let Some(runc) = engine("bidirectional", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-bi");
    let vol = t.join("vol");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    // The volume is a shared mount, as Kubernetes' Bidirectional propagation needs.
    use nix::mount::{MsFlags, mount};
    mount(
        Some(&vol),
        &vol,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    mount(
        None::<&str>,
        &vol,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    let b = f.bundle("b");
    let mut doc = runc_config(
        "mount -t tmpfs -o size=64k ovh-propagated /v/sub && echo mounted",
        vec![
            json!({"destination": "/v", "type": "bind", "source": vol, "options": ["rbind", "rshared"]}),
        ],
        None,
    );
    for set in ["bounding", "effective", "permitted"] {
        doc["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_ADMIN"));
    }
    doc["linux"]["rootfsPropagation"] = json!("shared");
    write_config_json(&b, &doc);
    let o = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .args(["--root"])
        .arg(b.join("state"))
        .args(["run", "ovh-bidi"])
        .current_dir(&b)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mounted\n");
    assert!(
        f.log().contains("pinned under"),
        "the volume was pinned: {}",
        f.log()
    );
    let seen = mounts_below(&vol);
    assert!(
        seen.iter().any(|m| Path::new(m) == vol.join("sub")),
        "the container's mount reached the host: {seen:?}"
    );
    assert_eq!(staging_mounts(&f.staging()), 0);
}

/// One container id in two runtime roots at once (two engines on a node): each container
/// gets its own sources. Staging keyed by the id alone once mounted each other's.
#[test]
fn one_id_in_two_runtime_roots_gets_its_own_sources() {
    let Some(runc) = engine("same_id_two_roots", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let bundle = |tenant: &str, marker: &str| {
        let t = f.tenant(tenant);
        std::fs::create_dir_all(t.join("vol")).unwrap();
        std::fs::write(t.join("vol/marker"), format!("{marker}\n")).unwrap();
        let b = f.bundle(&format!("b-{tenant}"));
        let mut doc = runc_config(
            "sleep 0.3; cat /v/marker",
            vec![bind(&t.join("vol"), "/v", true)],
            None,
        );
        // Two engines keep their containers in cgroups of their own; runc 1.2+ refuses a
        // cgroup (by default named after the id) that already holds processes.
        doc["linux"]["cgroupsPath"] =
            serde_json::json!(format!("/ovh-two-roots-{tenant}-{}", std::process::id()));
        write_config_json(&b, &doc);
        b
    };
    let (ba, bb) = (bundle("user-a", "A"), bundle("user-b", "B"));
    let run = |b: &Path, root: &str, id: &str| {
        Command::new(wrapper_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
            .arg("--root")
            .arg(f.path().join(root))
            .args(["run", id])
            .current_dir(b)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for i in 0..15 {
        let id = format!("ovh-same-{i}");
        let (a, b) = (run(&ba, "root-a", &id), run(&bb, "root-b", &id));
        each_printed(a, b, ["A\n", "B\n"], &format!("pair {i}"));
    }
    assert_eq!(staging_mounts(&f.staging()), 0);
}

/// Waits for two containers started at once; each must have succeeded and printed its own.
fn each_printed(a: std::process::Child, b: std::process::Child, want: [&str; 2], what: &str) {
    for (child, want) in [a, b].into_iter().zip(want) {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{what}");
    }
}

/// Runs `oci-volume-runtime run ID` in bundle `b` with runtime root `root`, output captured.
fn run_in(f: &Fixture, b: &Path, root: &Path, id: &str) -> std::process::Child {
    Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .arg("--root")
        .arg(root)
        .args(["run", id])
        .current_dir(b)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The staging directory is a shared mount (a systemd tmpfs under /run, a later
/// `mount --make-rshared /`): the wrapper's staging mounts must still reach no other
/// namespace. Made shared by hand, the old wrapper's tmpfs and binds propagated to the host
/// and into the other wrapper's namespace, which then mounted the other tenant's volume.
#[test]
fn a_shared_staging_mount_never_hands_one_tenant_anothers_volume() {
    let Some(runc) = engine("shared_staging", "runc") else {
        return;
    };
    use nix::mount::{MsFlags, mount};
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    std::fs::create_dir_all(f.staging()).unwrap();
    std::fs::set_permissions(
        f.staging(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        &f.staging(),
        Some("tmpfs"),
        flags,
        Some("mode=0700"),
    )
    .unwrap();
    mount(
        None::<&str>,
        &f.staging(),
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    let bundle = |tenant: &str| {
        let t = f.tenant(tenant);
        std::fs::create_dir_all(t.join("vol")).unwrap();
        std::fs::write(t.join("vol/marker"), format!("{tenant}\n")).unwrap();
        let b = f.bundle(&format!("b-{tenant}"));
        let script = "sleep 0.2; cat /v/marker";
        write_config_json(
            &b,
            &runc_config(script, vec![bind(&t.join("vol"), "/v", true)], None),
        );
        b
    };
    let (ba, bb) = (bundle("user-a"), bundle("user-b"));
    let root = f.path().join("state");
    for i in 0..40 {
        let a = run_in(&f, &ba, &root, &format!("ovh-sa-{i}"));
        let b = run_in(&f, &bb, &root, &format!("ovh-sb-{i}"));
        each_printed(a, b, ["user-a\n", "user-b\n"], &format!("start {i}"));
    }
    assert_eq!(
        staging_mounts(&f.staging()),
        0,
        "staging mounts on the host"
    );
}

/// One bundle, many creates at once (an engine reusing a bundle, a `runc run` service
/// restarted): each runc reads its own edited config.json. The old wrapper rewrote the
/// bundle's file and put the original back, so a second runc could read the original and
/// follow the tenant's symlink to the host. Killing wrappers at any moment never changes
/// the bundle's file either.
#[test]
fn creates_of_one_bundle_at_once_each_read_their_own_config_and_never_the_hosts() {
    let Some(runc) = engine("bundle_reuse", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let secret = f.path().join("host-secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("secret"), "host data\n").unwrap();
    let t = f.tenant("user-r");
    // Inside the chroot this names <chroot>/<secret>; on the host, the host's directory.
    std::os::unix::fs::symlink(&secret, t.join("vol")).unwrap();
    let b = f.bundle("b");
    let script = "cat /v/secret 2>/dev/null || echo safe";
    write_config_json(
        &b,
        &runc_config(script, vec![bind(&t.join("vol"), "/v", false)], None),
    );
    let config = b.join("config.json");
    let (bytes, written) = (std::fs::read(&config).unwrap(), mtime(&config));
    let root = f.path().join("state");
    for round in 0..25 {
        let runs: Vec<_> = (0..4)
            .map(|i| run_in(&f, &b, &root, &format!("ovh-reuse-{round}-{i}")))
            .collect();
        for (i, run) in runs.into_iter().enumerate() {
            let o = run.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(
                out, "safe\n",
                "round {round}, create {i} read the host's directory"
            );
        }
    }
    for i in 0..40u64 {
        let mut child = run_in(&f, &b, &root, &format!("ovh-reuse-kill-{i}"));
        std::thread::sleep(Duration::from_micros((i * 7919) % 30_000));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
    }
    assert_eq!(
        std::fs::read(&config).unwrap(),
        bytes,
        "config.json changed"
    );
    assert_eq!(mtime(&config), written, "config.json was written");
    let o = run_in(&f, &b, &root, "ovh-reuse-after")
        .wait_with_output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "safe\n",
        "{}",
        stderr(&o)
    );
    assert!(!secret.join("x").exists() && std::fs::read_dir(&secret).unwrap().count() == 1);
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// podman's precreate stages on the host: a staging directory made shared since (a peer
/// mounted elsewhere stands for another namespace) must not carry its mounts to the peer.
/// The previous code made it private only when it was not a mount point yet.
#[test]
fn precreate_staging_under_a_shared_staging_mount_reaches_no_peer() {
    if !root_or_skip("precreate_shared_staging") {
        return;
    }
    use nix::mount::{MsFlags, mount};
    let f = Fixture::new();
    let (staging, peer) = (f.staging(), f.path().join("peer"));
    for d in [&staging, &peer] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::set_permissions(
        &staging,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    mount(
        Some("tmpfs"),
        &staging,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .unwrap();
    mount(
        None::<&str>,
        &staging,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    mount(
        Some(&staging),
        &peer,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let t = f.tenant("user-p");
    std::fs::create_dir_all(t.join("vol")).unwrap();
    let b = f.bundle("b");
    let mut doc = runc_config("true", vec![bind(&t.join("vol"), "/v", false)], None);
    doc["root"]["path"] = json!(b.join("rootfs"));
    let o = f.hook(&["precreate"], &serde_json::to_vec(&doc).unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mounts = out["mounts"].as_array().unwrap();
    let v = mounts.iter().find(|m| m["destination"] == "/v").unwrap();
    let staged = v["source"].as_str().unwrap().to_string();
    assert!(
        staged.starts_with(staging.to_str().unwrap()),
        "pinned: {staged}"
    );
    assert!(
        mounts_below(&staging)
            .iter()
            .any(|m| Path::new(m) == Path::new(&staged))
    );
    assert_eq!(
        mounts_below(&peer),
        vec![peer.to_str().unwrap().to_string()],
        "reached the peer"
    );
}
