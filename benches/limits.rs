//! Bounds on hostile sizes (issue 17, item 7), through `oci-volume-hook precreate`:
//! - a source as long as PATH_MAX allows (4,095 bytes and the NUL) of 256 missing components
//!   (the most allowed), created in one walk: goal < 10 ms; the same length in some 2,000
//!   components is refused at once;
//! - 10,000 bind mounts in one chroot, all missing: goal < 2 s (and again, all prepared);
//! - memory: the largest resident set of those runs, from wait4(2): goal < 64 MiB; a 30 MB
//!   source (refused) is reported beside them.
//!
//! `cargo bench --bench limits` as root. Without `--bench` (as under `cargo test
//! --all-targets`) it makes one run of each, to prove the benchmark works, and checks no goal.

mod common;
use common::unmount_below;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HOOK: &str = env!("CARGO_BIN_EXE_oci-volume-hook");
const PATH_MAX: usize = 4096;
const MAX_COMPONENTS: usize = 256;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("limits benchmark: needs root; skipped");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ovh-limits-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tenant = d.join("containerdata/user-toto");
    std::fs::create_dir_all(&tenant).unwrap();
    std::fs::create_dir_all(d.join("rootfs/data")).unwrap();
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "chroots = [\"{0}/containerdata/*\"]\nstaging_dir = \"{0}/staging\"\n[log]\ntarget = \"none\"\n",
            d.display()
        ),
    )
    .unwrap();
    let hook = Hook { config, dir: d };
    let n = if full { 50 } else { 1 };

    // A 4,096-byte source, 256 components, all missing (a fresh top component per run).
    // The floor set by the filesystem: `mkdir -p` of a path of the same shape.
    let (mut long, mut there, mut mkdir) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..n {
        let src = sized_source(&tenant, &format!("r{run:04}"), MAX_COMPONENTS);
        assert_eq!(src.as_os_str().len(), PATH_MAX - 1);
        let (t, _) = hook.precreate(std::slice::from_ref(&src), true);
        assert!(src.is_dir(), "created {}", src.display());
        long.push(t);
        there.push(hook.precreate(&[src], true).0);
        let other = sized_source(&tenant, &format!("m{run:04}"), MAX_COMPONENTS);
        let start = Instant::now();
        let ok = Command::new("mkdir")
            .arg("-p")
            .arg(&other)
            .status()
            .unwrap();
        mkdir.push(start.elapsed());
        assert!(ok.success());
    }
    let deep_count = (PATH_MAX - tenant.as_os_str().len()) / 2 - 8;
    let deep = sized_source(&tenant, "deep", deep_count);
    assert_eq!(deep.as_os_str().len(), PATH_MAX - 1);
    let (deep_t, _) = hook.precreate(&[deep], false);

    // 10,000 mounts: first all missing, then all prepared.
    let runs = if full { 3 } else { 1 };
    let (mut first, mut again) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let sources: Vec<PathBuf> = (0..10_000)
            .map(|i| tenant.join(format!("many{run}/d{}/v{i}", i % 100)))
            .collect();
        hook.write_input(&sources);
        drop(sources);
        first.push(hook.run(10_000, true).0);
        again.push(hook.run(10_000, true).0);
    }
    let rss = MAX_RSS.with(|m| *m.borrow());

    // A 30 MB source: refused, and the memory it costs.
    hook.write_input(&[tenant.join("x".repeat(30 << 20))]);
    let before = MAX_RSS.with(|m| std::mem::take(&mut *m.borrow_mut()));
    let (huge_t, _) = hook.run(1, false);
    let huge_rss = MAX_RSS.with(|m| *m.borrow());
    MAX_RSS.with(|m| *m.borrow_mut() = before.max(huge_rss));

    println!(
        "{:<62} {:>10} {:>10}",
        "benchmark (median)", "measured", "goal"
    );
    let mut ok = true;
    let mut line = |name: &str, v: f64, unit: &str, goal: f64| {
        let pass = goal.is_nan() || v <= goal;
        ok &= pass;
        let goal = if goal.is_nan() {
            String::new()
        } else {
            format!("{goal}{unit}")
        };
        println!("{name:<62} {v:>8.2}{unit} {goal:>10}");
    };
    line(
        "4,095-byte source, 256 missing components, created",
        ms(median(long)),
        "ms",
        10.0,
    );
    line(
        "  (mkdir -p of a path of the same shape, for reference)",
        ms(median(mkdir)),
        "ms",
        f64::NAN,
    );
    line(
        "4,095-byte source, 256 components, already there",
        ms(median(there)),
        "ms",
        10.0,
    );
    line(
        &format!("4,095-byte source, {deep_count} components, refused"),
        ms(deep_t),
        "ms",
        10.0,
    );
    line(
        "10,000 mounts in one chroot, all created",
        ms(median(first)),
        "ms",
        2000.0,
    );
    line(
        "10,000 mounts in one chroot, all prepared already",
        ms(median(again)),
        "ms",
        2000.0,
    );
    line(
        "largest resident set of the runs above",
        mib(rss),
        "MiB",
        64.0,
    );
    line("a 30 MB source, refused", ms(huge_t), "ms", f64::NAN);
    line("  its resident set", mib(huge_rss), "MiB", f64::NAN);
    let now = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<i64>().ok())
        .unwrap_or(0);
    line(
        "  (this benchmark's resident set, included in the above)",
        mib(now),
        "MiB",
        f64::NAN,
    );
    // The staging directory is a mount of its own once a pinned source was staged.
    unmount_below(d);
    if full && !ok {
        println!("some goals were missed");
    }
}

/// A source under `tenant` of PATH_MAX - 1 bytes (the longest there is) in `count`
/// components, the first starting with `top`.
fn sized_source(tenant: &Path, top: &str, count: usize) -> PathBuf {
    let room = PATH_MAX - 1 - tenant.as_os_str().len() - 1 - (count - 1);
    let each = room / count;
    let mut comps: Vec<String> = (0..count).map(|i| format!("{:0each$}", i % 10)).collect();
    comps[0] = format!("{top}{}", "t".repeat(room - each * (count - 1) - top.len()));
    tenant.join(comps.join("/"))
}

thread_local! {
    static MAX_RSS: std::cell::RefCell<i64> = const { std::cell::RefCell::new(0) };
}

struct Hook<'a> {
    config: PathBuf,
    dir: &'a Path,
}

impl Hook<'_> {
    /// One `precreate` of a document binding `sources`; its wall time and resident set.
    fn precreate(&self, sources: &[PathBuf], must_succeed: bool) -> (Duration, i64) {
        self.write_input(sources);
        self.run(sources.len(), must_succeed)
    }

    /// The document binding `sources`, written to a file: nothing of it stays in this
    /// process, whose resident set a child would inherit until its exec (and wait4 reports).
    fn write_input(&self, sources: &[PathBuf]) {
        let mounts: Vec<Value> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"destination": format!("/data/v{i}"), "type": "bind", "source": s, "options": ["rbind"]}))
            .collect();
        let doc = json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/"},
            "root": {"path": self.dir.join("rootfs")},
            "mounts": mounts,
        });
        let mut f = std::fs::File::create(self.dir.join("input.json")).unwrap();
        serde_json::to_writer(&mut f, &doc).unwrap();
    }

    fn run(&self, mounts: usize, must_succeed: bool) -> (Duration, i64) {
        let input = self.dir.join("input.json");
        let start = Instant::now();
        let mut cmd = Command::new(HOOK);
        // A pre_exec hook makes std fork rather than vfork: a vforked child's resident set
        // would count this process's peak (wait4 reports it), a forked one only what this
        // process holds now.
        // SAFETY: the hook does nothing.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || Ok(()));
        }
        #[allow(clippy::zombie_processes)]
        let child = cmd
            .args(["--config", self.config.to_str().unwrap(), "precreate"])
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Reaped by wait4 (for its rusage), not by Child::wait.
        let (status, rss) = wait4(child.id() as i32);
        std::mem::forget(child);
        let t = start.elapsed();
        assert_eq!(
            std::process::ExitStatus::from_raw(status).success(),
            must_succeed,
            "precreate of {mounts} mounts"
        );
        MAX_RSS.with(|m| {
            let mut m = m.borrow_mut();
            *m = (*m).max(rss)
        });
        (t, rss)
    }
}

/// Waits for `pid`; its status and largest resident set (KiB).
fn wait4(pid: i32) -> (i32, i64) {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<nix::libc::rusage>::zeroed();
    // SAFETY: a child of ours, valid pointers.
    let r = unsafe { nix::libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()) };
    assert_eq!(r, pid, "wait4");
    // SAFETY: wait4 succeeded and filled it.
    (status, unsafe { usage.assume_init() }.ru_maxrss)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: i64) -> f64 {
    kib as f64 / 1024.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
