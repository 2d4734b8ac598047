//! Overhead against plain runc, side by side in one run, as ratios of medians.
//!
//! `cargo bench --bench startup` (as root, runc and busybox-static installed) measures:
//! - pass-through: `oci-volume-runtime --version` vs `runc --version`, for the statically
//!   linked build the packages ship (goal <= 1.15x; built with `cargo build-static`) and
//!   for the dynamic one cargo builds here;
//! - container start with 32 prepared volumes in a chroot, every one pinned (race-free, the
//!   default): `oci-volume-runtime run` vs `runc run` (goal <= 1.10x);
//! - growth: `oci-volume-runtime run` with 256 race-free mounts vs 1 (goal <= 3x), and the
//!   OCI hook mode's preparation alone, 256 vs 1.
//!
//! Runs are interleaved so that drift on the machine hits both sides alike. Without
//! `--bench` (as under `cargo test --all-targets`) it makes a few runs of each, to prove the
//! benchmark works, and checks no goal.

mod common;
use common::unmount_below;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const WRAPPER: &str = env!("CARGO_BIN_EXE_oci-volume-runtime");
const HOOK: &str = env!("CARGO_BIN_EXE_oci-volume-hook");

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !nix::unistd::geteuid().is_root()
        || !Path::new("/usr/sbin/runc").exists() && !Path::new("/usr/bin/runc").exists()
    {
        eprintln!("startup benchmark: needs root and runc; skipped");
        return;
    }
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("ovh-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tenant = d.join("containerdata/user-toto");
    let rootfs = d.join("bundle/rootfs");
    make_rootfs(&rootfs);
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "chroots = [\"{}/containerdata/*\"]\nstaging_dir = \"{0}/staging\"\nruntime = \"{}\"\n[log]\ntarget = \"file\"\nfile = \"{}/hook.log\"\n",
            d.display(),
            runc.display(),
            d.display()
        ),
    )
    .unwrap();
    let (n_pass, n_start, n_hook) = if full { (300, 60, 200) } else { (3, 2, 3) };

    // Pass-through: runc; the dynamic wrapper; env(1), a small dynamically linked C program
    // doing nothing but exec; a static one; the static wrapper — in one interleaved loop, so
    // that the load on this shared machine weighs on all alike.
    let static_bin = static_wrapper(full);
    let exec_c = static_exec_c(d);
    let mut sides: Vec<Box<dyn FnMut() -> Command + '_>> = vec![
        Box::new(|| cmd(&runc, &["--version"])),
        Box::new(|| wrapper(&["--version"], &config, d)),
        Box::new(|| {
            cmd(
                Path::new("/usr/bin/env"),
                &[runc.to_str().unwrap(), "--version"],
            )
        }),
    ];
    if let Some(bin) = &exec_c {
        sides.push(Box::new(|| {
            cmd(bin, &[runc.to_str().unwrap(), "--version"])
        }));
    }
    if let Some(bin) = &static_bin {
        sides.push(Box::new(|| {
            with_config(cmd(bin, &["--version"]), &config, d)
        }));
    }
    let t = compare_all(n_pass, &mut sides);
    drop(sides);
    let (pass, floor) = ((t[0], t[1]), (t[0], t[2]));
    let mut rest = t[3..].iter().map(|s| (t[0], *s));
    let floor_static = exec_c.as_ref().and_then(|_| rest.next());
    let pass_static = static_bin.as_ref().and_then(|_| rest.next());

    // Container start with 32 prepared volumes, all pinned: in directories only root can
    // change, then in a directory the tenant owns.
    let start = start_case(
        &runc,
        &config,
        d,
        &rootfs,
        &tenant.join("vols"),
        "root",
        32,
        n_start,
    );
    let owned = tenant.join("owned");
    std::fs::create_dir_all(&owned).unwrap();
    std::os::unix::fs::chown(&owned, Some(100000), Some(100000)).unwrap();
    let start_pinned = start_case(&runc, &config, d, &rootfs, &owned, "owned", 32, n_start);
    // Growth of a race-free start: 256 pinned mounts against 1, both through the wrapper.
    let start_1 = d.join("one");
    let start_256 = d.join("many-start");
    let wrap_1 = start_bundle(d, &rootfs, &start_1, "w1", 1);
    let wrap_256 = start_bundle(d, &rootfs, &start_256, "w256", 256);
    let state = d.join("state");
    let state = state.to_str().unwrap();
    let k = std::cell::Cell::new(0);
    let growth_start = compare(
        n_start,
        || {
            k.set(k.get() + 1);
            wrapper(
                &["--root", state, "run", &format!("g1-{}", k.get())],
                &config,
                &wrap_1,
            )
        },
        || {
            wrapper(
                &["--root", state, "run", &format!("g256-{}", k.get())],
                &config,
                &wrap_256,
            )
        },
    );

    // Preparation cost growth: 1 vs 256 prepared mounts.
    let doc = |n: usize| {
        let mounts: Vec<Value> = (0..n)
            .map(|i| {
                let src = tenant.join(format!("many/d{}/v{i:03}", i % 16));
                std::fs::create_dir_all(&src).unwrap();
                json!({"destination": format!("/srv/v{i:03}"), "type": "bind", "source": src, "options": ["rbind"]})
            })
            .collect();
        let mut s = spec(mounts);
        s["root"]["path"] = json!(rootfs);
        // A bundle of its own, and the OCI state a hook gets on stdin.
        let b = d.join(format!("hook-bundle-{n}"));
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("config.json"), serde_json::to_vec(&s).unwrap()).unwrap();
        let state = d.join(format!("state-{n}.json"));
        let st = json!({"ociVersion": "1.0.2", "id": format!("hook-{n}"), "status": "creating", "bundle": b});
        std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
        state
    };
    let (one, many) = (doc(1), doc(256));
    // The OCI hook mode: preparation alone, without staging mounts.
    let hook = |state: &Path| {
        let mut c = cmd(
            Path::new(HOOK),
            &["--config", config.to_str().unwrap(), "hook"],
        );
        c.stdin(std::fs::File::open(state).unwrap());
        c
    };
    assert!(run(&mut hook(&many)), "preparing 256 mounts");
    let growth = compare(n_hook, || hook(&one), || hook(&many));

    unmount_below(d);
    println!(
        "{:<58} {:>12} {:>12} {:>7} {:>6}",
        "benchmark (median of interleaved runs)", "baseline", "measured", "ratio", "goal"
    );
    let mut ok = true;
    let no_static = (Duration::ZERO, Duration::ZERO);
    for (name, (a, b), goal) in [
        (
            "pass-through, static build: wrapper vs runc (--version)",
            pass_static.unwrap_or(no_static),
            1.15,
        ),
        (
            "  (floor: a static C program exec'ing runc --version)",
            floor_static.unwrap_or(no_static),
            f64::NAN,
        ),
        ("  (the dynamic build: wrapper vs runc)", pass, f64::NAN),
        (
            "  (reference: env(1) exec'ing runc --version vs runc)",
            floor,
            f64::NAN,
        ),
        (
            "container start, 32 race-free volumes: wrapper vs runc",
            start,
            1.10,
        ),
        (
            "  (the same, sources in a tenant-owned directory)",
            start_pinned,
            f64::NAN,
        ),
        (
            "container start: 256 race-free mounts vs 1",
            growth_start,
            3.0,
        ),
        (
            "  (hook mode, preparation alone: 256 vs 1)",
            growth,
            f64::NAN,
        ),
    ] {
        if a.is_zero() {
            println!("{name:<58} skipped: not built (`cargo build-static`; cc)");
            continue;
        }
        let ratio = b.as_secs_f64() / a.as_secs_f64();
        if goal.is_nan() {
            println!(
                "{name:<58} {:>10.2}ms {:>10.2}ms {ratio:>6.2}x",
                ms(a),
                ms(b)
            );
            continue;
        }
        ok &= ratio <= goal;
        println!(
            "{name:<58} {:>10.2}ms {:>10.2}ms {ratio:>6.2}x {goal:>5.2}x",
            ms(a),
            ms(b)
        );
    }
    if full && !ok {
        println!("some goals were missed");
    }
}

/// A bundle at `bundle` with `count` bind mounts of directories in `sources`, prepared by
/// one unmeasured run through the wrapper.
fn start_bundle(
    d: &Path,
    rootfs: &Path,
    bundle: &Path,
    sources_name: &str,
    count: usize,
) -> PathBuf {
    let sources = d.join("containerdata/user-toto").join(sources_name);
    write_start_bundle(rootfs, bundle, &sources, count);
    bundle.to_path_buf()
}

fn write_start_bundle(rootfs: &Path, bundle: &Path, sources: &Path, count: usize) {
    std::fs::create_dir_all(bundle).unwrap();
    let mounts: Vec<Value> = (0..count)
        .map(|i| {
            let src = sources.join(format!("v{i:03}"));
            std::fs::create_dir_all(&src).unwrap();
            std::fs::create_dir_all(rootfs.join(format!("mnt/v{i:03}"))).unwrap();
            json!({"destination": format!("/mnt/v{i:03}"), "type": "bind", "source": src, "options": ["rbind"]})
        })
        .collect();
    let mut doc = spec(mounts);
    doc["root"]["path"] = json!(rootfs);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

/// `runc run` against `oci-volume-runtime run` for a bundle of `count` bind mounts of
/// directories in `sources`, after one unmeasured run that prepares them.
#[allow(clippy::too_many_arguments)]
fn start_case(
    runc: &Path,
    config: &Path,
    d: &Path,
    rootfs: &Path,
    sources: &Path,
    name: &str,
    count: usize,
    n: usize,
) -> (Duration, Duration) {
    let bundle = d.join(format!("bundle-{name}"));
    write_start_bundle(rootfs, &bundle, sources, count);
    let state = d.join("state");
    let state = state.to_str().unwrap();
    let mut k = 0;
    let mut id = || {
        k += 1;
        format!("bench-{name}-{k}")
    };
    assert!(
        run(&mut wrapper(
            &["--root", state, "run", &id()],
            config,
            &bundle
        )),
        "preparing the {name} case"
    );
    let (mut ids_a, mut ids_b): (Vec<String>, Vec<String>) = (0..n).map(|_| (id(), id())).unzip();
    compare(
        n,
        || {
            let mut c = cmd(runc, &["--root", state, "run", &ids_a.pop().unwrap()]);
            c.current_dir(&bundle);
            c
        },
        || {
            wrapper(
                &["--root", state, "run", &ids_b.pop().unwrap()],
                config,
                &bundle,
            )
        },
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cmd(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn wrapper(args: &[&str], config: &Path, cwd: &Path) -> Command {
    with_config(cmd(Path::new(WRAPPER), args), config, cwd)
}

fn with_config(mut c: Command, config: &Path, cwd: &Path) -> Command {
    c.env("OCI_VOLUME_HOOK_CONFIG", config).current_dir(cwd);
    c
}

/// `argv[1..]` exec'd by a statically linked C program, compiled with `cc -static-pie` (the
/// C toolchain Rust links with); `None` without one.
fn static_exec_c(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("exec.c");
    let bin = dir.join("exec-static");
    let text = "#include <unistd.h>\nint main(int c, char **v) { (void)c; execv(v[1], v + 1); return 127; }\n";
    std::fs::write(&src, text).ok()?;
    let built = Command::new("cc")
        .args(["-O2", "-static-pie", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    built.then_some(bin)
}

/// The statically linked wrapper (`cargo build-static`, .cargo/config.toml), next to the
/// dynamic one cargo built for this benchmark. Built here with `--bench` only (minutes the
/// first time); a quick run uses it when it is already there.
fn static_wrapper(full: bool) -> Option<PathBuf> {
    let target = Path::new(WRAPPER).parent()?.parent()?;
    let bin = target.join("x86_64-unknown-linux-gnu/release/oci-volume-runtime");
    if full {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target)
            .args(["build-static", "--bin", "oci-volume-runtime"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(built, "cargo build-static failed");
    }
    bin.exists().then_some(bin)
}

fn run(c: &mut Command) -> bool {
    c.status().unwrap().success()
}

/// Medians of `n` interleaved runs of each side; the order alternates, so that whatever a
/// run leaves behind (a container being torn down) weighs on both sides alike.
fn compare(
    n: usize,
    a: impl FnMut() -> Command,
    b: impl FnMut() -> Command,
) -> (Duration, Duration) {
    let t = compare_all(n, &mut [Box::new(a), Box::new(b)]);
    (t[0], t[1])
}

/// [`compare`] for any number of sides: each round runs every side once, in an order that
/// rotates and reverses from round to round.
fn compare_all<'a>(n: usize, sides: &mut [Box<dyn FnMut() -> Command + 'a>]) -> Vec<Duration> {
    let k = sides.len();
    let mut times = vec![Vec::with_capacity(n); k];
    for i in 0..n {
        let mut order: Vec<usize> = (0..k).map(|j| (i / 2 + j) % k).collect();
        if i % 2 == 1 {
            order.reverse();
        }
        for j in order {
            let mut c = sides[j]();
            let t = Instant::now();
            assert!(run(&mut c), "benchmark command failed: {c:?}");
            times[j].push(t.elapsed());
        }
    }
    times.into_iter().map(median).collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn make_rootfs(rootfs: &Path) {
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "mnt"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static installed");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true")).unwrap();
}

fn spec(mounts: Vec<Value>) -> Value {
    let mut all = vec![json!({"destination": "/proc", "type": "proc", "source": "proc"})];
    all.extend(mounts);
    json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"]},
        "root": {"path": "rootfs"},
        "mounts": all,
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]}
    })
}
