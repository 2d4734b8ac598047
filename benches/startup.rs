//! Overhead against plain runc, side by side in one run, as ratios of medians.
//!
//! `cargo bench --bench startup` (as root, runc and busybox-static installed) measures:
//! - pass-through: `oci-volume-runtime --version` vs `runc --version`, for the statically
//!   linked build the packages ship (goal <= 1.15x; built with `cargo build-static`) and
//!   for the dynamic one cargo builds here;
//! - container start with 32 volumes in a chroot, every one pinned (race-free, the
//!   default): `oci-volume-runtime run` vs `runc run` (goal <= 1.10x), and with 256 (goal:
//!   the wrapper's 256-volume start <= 1.5x its 32-volume one); all four in one interleaved
//!   loop, with Debian 12's runc and again with Debian sid's (runc 1.3) when the sid tree
//!   (tests/sid/tree.sh; `OCI_VOLUME_HOOK_SID_TREE`) is there;
//! - the OCI hook mode's preparation alone, 256 mounts vs 1.
//!
//! Runs are interleaved so that drift on the machine hits every side alike. Without
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
    write_config(&config, d, &runc);
    let (n_pass, n_start, n_hook) = if full { (300, 160, 200) } else { (3, 2, 3) };

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
    let mut rest = t[3..].iter().map(|s| (t[0], *s));
    let floor_static = exec_c.as_ref().and_then(|_| rest.next());
    let pass_static = static_bin.as_ref().and_then(|_| rest.next());
    let mut rows = vec![
        match pass_static {
            Some(t) => Row::goal(
                "pass-through, static build: wrapper vs runc (--version)",
                t,
                1.15,
            ),
            None => Row::missing("pass-through, static build: not built (`cargo build-static`)"),
        },
        match floor_static {
            Some(t) => Row::info("  (floor: a static C program exec'ing runc --version)", t),
            None => Row::missing("  (floor: no C compiler)"),
        },
        Row::info("  (the dynamic build: wrapper vs runc)", (t[0], t[1])),
        Row::info(
            "  (reference: env(1) exec'ing runc --version vs runc)",
            (t[0], t[2]),
        ),
    ];

    // Container starts, all sources pinned, with this host's runc.
    // Starts through the build the packages ship (static) when there is one.
    let shipped = Shipped::pick(static_bin.as_deref());
    rows.extend(start_rows(&shipped, &runc, &config, d, &rootfs, n_start));
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

    rows.push(Row::info("hook mode, preparation alone: 256 vs 1", growth));
    // Then with Debian sid's runc (1.3), last: this process's mount namespace gets sid's
    // libraries from here on.
    if let Some(sid_runc) = enter_sid() {
        unmount_below(d);
        let sid_config = d.join("config-sid.toml");
        write_config(&sid_config, d, &sid_runc);
        rows.extend(start_rows(
            &shipped,
            &sid_runc,
            &sid_config,
            d,
            &rootfs,
            n_start,
        ));
    }

    unmount_below(d);
    println!(
        "{:<58} {:>12} {:>12} {:>7} {:>6}",
        "benchmark (median of interleaved runs)", "baseline", "measured", "ratio", "goal"
    );
    let mut ok = true;
    for row in &rows {
        ok &= row.print();
    }
    if full && !ok {
        println!("some goals were missed");
    }
}

/// One line of the report: a ratio of two medians, against a goal or for information.
struct Row {
    name: String,
    times: Option<(Duration, Duration)>,
    goal: Option<f64>,
}

impl Row {
    fn goal(name: impl Into<String>, times: (Duration, Duration), goal: f64) -> Row {
        let (name, times, goal) = (name.into(), Some(times), Some(goal));
        Row { name, times, goal }
    }

    fn info(name: impl Into<String>, times: (Duration, Duration)) -> Row {
        let (name, times) = (name.into(), Some(times));
        Row {
            name,
            times,
            goal: None,
        }
    }

    fn missing(name: impl Into<String>) -> Row {
        let name = name.into();
        Row {
            name,
            times: None,
            goal: None,
        }
    }

    /// Prints the line; false when a goal is missed.
    fn print(&self) -> bool {
        let name = &self.name;
        let Some((a, b)) = self.times else {
            println!("{name}");
            return true;
        };
        let ratio = b.as_secs_f64() / a.as_secs_f64();
        let line = format!(
            "{name:<64} {:>10.2}ms {:>10.2}ms {ratio:>6.2}x",
            ms(a),
            ms(b)
        );
        match self.goal {
            Some(goal) => println!("{line} {goal:>5.2}x"),
            None => println!("{line}"),
        }
        self.goal.is_none_or(|goal| ratio <= goal)
    }
}

fn write_config(path: &Path, d: &Path, runc: &Path) {
    let text = format!(
        "chroots = [\"{d}/containerdata/*\"]\nstaging_dir = \"{d}/staging\"\nruntime = \"{}\"\n[log]\ntarget = \"file\"\nfile = \"{d}/hook.log\"\n",
        runc.display(),
        d = d.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// runc's first version line (`runc version 1.1.5`), for the report.
fn runc_version(runc: &Path) -> String {
    let out = Command::new(runc).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().next().unwrap_or("runc");
    line.replace("runc version ", "runc ")
}

/// The wrapper binary the start rows run, and how it was built.
struct Shipped {
    bin: PathBuf,
    build: &'static str,
}

impl Shipped {
    fn pick(static_bin: Option<&Path>) -> Shipped {
        match static_bin {
            Some(bin) => Shipped {
                bin: bin.to_path_buf(),
                build: "static",
            },
            None => Shipped {
                bin: PathBuf::from(WRAPPER),
                build: "dynamic",
            },
        }
    }

    fn run(&self, args: &[&str], config: &Path, cwd: &Path) -> Command {
        with_config(cmd(&self.bin, args), config, cwd)
    }
}

/// Container starts with every source pinned, `runc` behind the wrapper: 32 and 256 volumes
/// in directories only root can change, wrapper and plain runc, the four in one interleaved
/// loop; then 32 in a directory the tenant owns.
fn start_rows(
    shipped: &Shipped,
    runc: &Path,
    config: &Path,
    d: &Path,
    rootfs: &Path,
    n: usize,
) -> Vec<Row> {
    let version = runc_version(runc);
    let tag: String = version.chars().filter(char::is_ascii_digit).collect();
    let tenant = d.join("containerdata/user-toto");
    let b32 = d.join(format!("bundle-{tag}-32"));
    let b256 = d.join(format!("bundle-{tag}-256"));
    write_start_bundle(rootfs, &b32, &tenant.join("vols"), 32);
    write_start_bundle(rootfs, &b256, &tenant.join("many-start"), 256);
    let state = d.join("state");
    let state = state.to_str().unwrap();
    let k = std::cell::Cell::new(0);
    let id = |side: &str| {
        k.set(k.get() + 1);
        format!("bench-{tag}-{side}-{}", k.get())
    };
    let plain = |bundle: &Path, side: &str| {
        let mut c = cmd(runc, &["--root", state, "run", &id(side)]);
        c.current_dir(bundle);
        c
    };
    let wrapped = |bundle: &Path, side: &str| {
        shipped.run(&["--root", state, "run", &id(side)], config, bundle)
    };
    // One unmeasured run each prepares the sources (creation, ownership).
    for b in [&b32, &b256] {
        assert!(run(&mut wrapped(b, "prepare")), "preparing {}", b.display());
    }
    let t = compare_all(
        n,
        &mut [
            Box::new(|| plain(&b32, "runc32")),
            Box::new(|| wrapped(&b32, "wrap32")),
            Box::new(|| plain(&b256, "runc256")),
            Box::new(|| wrapped(&b256, "wrap256")),
        ],
    );
    let owned = tenant.join("owned");
    std::fs::create_dir_all(&owned).unwrap();
    std::os::unix::fs::chown(&owned, Some(100000), Some(100000)).unwrap();
    let owned_bundle = d.join(format!("bundle-{tag}-owned"));
    write_start_bundle(rootfs, &owned_bundle, &owned, 32);
    assert!(
        run(&mut wrapped(&owned_bundle, "prepare")),
        "preparing the owned case"
    );
    let owned = compare(
        n,
        || plain(&owned_bundle, "runc-owned"),
        || wrapped(&owned_bundle, "wrap-owned"),
    );
    // The wrapper's own work, runc aside: the same starts with `true` as the runtime.
    let true_config = d.join("config-true.toml");
    write_config(&true_config, d, Path::new("/bin/true"));
    let own = |bundle: &Path| shipped.run(&["--root", state, "run", "own"], &true_config, bundle);
    let t_own = compare_all(
        n,
        &mut [
            Box::new(|| cmd(Path::new("/bin/true"), &[])),
            Box::new(|| own(&b32)),
            Box::new(|| own(&b256)),
        ],
    );
    vec![
        Row::goal(
            format!(
                "start, 32 race-free volumes, {version}: wrapper ({}) vs runc",
                shipped.build
            ),
            (t[0], t[1]),
            1.10,
        ),
        Row::info(
            "  (the wrapper's own work, 32 volumes: true vs wrapper+true)",
            (t_own[0], t_own[1]),
        ),
        Row::info("  (the same, sources in a tenant-owned directory)", owned),
        Row::goal(
            "  256 race-free volumes vs 32, through the wrapper",
            (t[1], t[3]),
            1.5,
        ),
        Row::info("  (reference: plain runc, 256 volumes vs 32)", (t[0], t[2])),
        Row::info("  (256 race-free volumes: wrapper vs runc)", (t[2], t[3])),
        Row::info(
            "  (the wrapper's own work, 256 volumes: true vs wrapper+true)",
            (t_own[0], t_own[2]),
        ),
    ]
}

/// Moves this process into a mount namespace of its own in which the sid tree's libraries
/// are the system's, so that the tree's runc (which needs sid's glibc) runs, and returns that
/// runc; `None` without the tree. The process is single-threaded here (unshare needs it).
fn enter_sid() -> Option<PathBuf> {
    use nix::mount::{MsFlags, mount};
    let tree = std::env::var_os("OCI_VOLUME_HOOK_SID_TREE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/oci-volume-hook-sid"));
    let runc = tree.join("usr/sbin/runc");
    if !tree.join(".ready").exists() || !runc.exists() {
        eprintln!(
            "startup benchmark: no sid tree at {}: runc 1.3 skipped",
            tree.display()
        );
        return None;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
    let libs = "/usr/lib/x86_64-linux-gnu";
    mount(
        Some(&tree.join(&libs[1..])),
        libs,
        none,
        MsFlags::MS_BIND,
        none,
    )
    .unwrap();
    Some(runc)
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

/// [`compare`] for any number of sides: each round runs every side once, in a shuffled
/// order. A start is slowed by what the one before it left the kernel to do (a 256-volume
/// start adds up to ~5 ms to the next one here), so every side must follow every other as
/// often: a fixed or rotating order charges one side's leftovers to the same neighbour.
fn compare_all<'a>(n: usize, sides: &mut [Box<dyn FnMut() -> Command + 'a>]) -> Vec<Duration> {
    let k = sides.len();
    let mut times = vec![Vec::with_capacity(n); k];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64; // fixed: the same orders in every run
    for _ in 0..n {
        let mut order: Vec<usize> = (0..k).collect();
        for i in (1..k).rev() {
            // xorshift64: good enough to shuffle a handful of sides.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
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
    // /dev as engines give it: runc 1.3 makes its /dev symlinks there.
    let mut all = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=64k"]}),
    ];
    all.extend(mounts);
    json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"]},
        "root": {"path": "rootfs"},
        "mounts": all,
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]}
    })
}
