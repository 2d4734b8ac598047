//! Races: a tenant swapping a directory for a symlink to a host directory
//! (renameat2 RENAME_EXCHANGE, in a loop) while the tool prepares, and between the tool's
//! check and the runtime's mount. Each race is first shown to bite a naive, path-based
//! variant (kept here only), so that its passing for the tool means something.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use nix::fcntl::{OFlag, RenameFlags, open, renameat2};
use nix::sys::stat::Mode;
use oci_volume_hook::config::Config;
use oci_volume_hook::prepare::{Caller, Preparer};
use oci_volume_hook::spec::View;
use serde_json::json;

/// Swaps `dir/a` and `dir/b` until stopped; returns how many swaps it made.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(dir: &Path, a: &str, b: &str) -> Swapper {
        let fd: OwnedFd = open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let (a, b) = (a.to_string(), b.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                renameat2(
                    &fd,
                    a.as_str(),
                    &fd,
                    b.as_str(),
                    RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                n += 1;
            }
            n
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }
    /// Stops, leaving the names as they started (an even number of swaps).
    fn stop(mut self, dir: &Path, a: &str, b: &str) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let n = self.thread.take().unwrap().join().unwrap();
        if n % 2 == 1 {
            let fd: OwnedFd = open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
            renameat2(&fd, a, &fd, b, RenameFlags::RENAME_EXCHANGE).unwrap();
        }
        n
    }
}

struct Scene {
    f: Fixture,
    tenant: PathBuf,
    host: PathBuf,
}

/// `tenant/data` a directory, `tenant/swap` a symlink to the host directory.
fn scene() -> Scene {
    let f = Fixture::new();
    let tenant = f.tenant("user-toto");
    let host = f.path().join("host/dir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("file"), "host data\n").unwrap();
    std::fs::create_dir_all(tenant.join("data")).unwrap();
    std::fs::write(tenant.join("data/file"), "tenant data\n").unwrap();
    symlink(&host, tenant.join("swap")).unwrap();
    // The tenant (its containers' root, host uid 100000) owns its chroot: it can rename
    // entries there, which is what the race needs.
    std::os::unix::fs::chown(&tenant, Some(100000), Some(100000)).unwrap();
    Scene { f, tenant, host }
}

/// What a naive tool does: mkdir -p, create, chown, all by path.
fn naive_prepare(source: &Path) {
    let _ = std::fs::create_dir_all(source.parent().unwrap());
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(source);
    let _ = std::os::unix::fs::chown(source, Some(100000), Some(100000));
}

#[test]
fn swapping_a_directory_for_a_host_symlink_while_the_tool_prepares() {
    if !root_or_skip("race_tool") {
        return;
    }
    const BUDGET: Duration = Duration::from_secs(10);
    let s = scene();
    let source = s.tenant.join("data/sub/file");

    // The naive variant is fooled: something appears in the host directory.
    let before = snapshot(&s.host);
    let swapper = Swapper::start(&s.tenant, "data", "swap");
    let start = Instant::now();
    let mut naive_runs = 0;
    while snapshot(&s.host) == before && start.elapsed() < BUDGET {
        naive_prepare(&source);
        naive_runs += 1;
    }
    let swaps = swapper.stop(&s.tenant, "data", "swap");
    let bitten = snapshot(&s.host) != before;
    assert!(
        bitten,
        "the race never bit the naive variant ({naive_runs} runs, {swaps} swaps): the test proves nothing"
    );
    std::fs::remove_dir_all(s.host.join("sub")).unwrap();
    std::fs::remove_dir_all(s.tenant.join("data/sub")).ok();
    let before = snapshot(&s.host);

    // The tool, as many times and at least a few thousand, under the same race.
    let mut config = Config::parse(&format!("chroots = [\"{}/*\"]", s.f.base().display())).unwrap();
    config.pin_sources = oci_volume_hook::config::Pin::Never;
    let rootfs = s.f.bundle("b").join("rootfs");
    let mut doc = runc_config(
        "true",
        vec![bind(&source, "/etc/localtime", true)],
        Some(100000),
    );
    doc["root"]["path"] = json!(rootfs);
    let view = View::of(&doc, Path::new("/")).unwrap();
    let swapper = Swapper::start(&s.tenant, "data", "swap");
    let runs = naive_runs.max(3000);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..runs {
        match Preparer::new(&config, &view, Caller::Rewrite).prepare() {
            Ok(_) => ok += 1,
            Err(_) => refused += 1, // e.g. "keeps changing": fine, nothing was done outside
        }
    }
    let swaps = swapper.stop(&s.tenant, "data", "swap");
    assert_unchanged(
        &before,
        &snapshot(&s.host),
        &format!("{runs} runs of the tool ({ok} ok, {refused} refused) against {swaps} swaps"),
    );
    assert!(ok > 0, "the tool never got through");
    // Whatever it made, it made inside the chroot.
    let inside = s
        .tenant
        .join(s.host.strip_prefix("/").unwrap())
        .join("sub/file");
    assert!(is_file(&s.tenant.join("data/sub/file")) || is_file(&inside));
}

#[test]
fn swapping_between_the_check_and_the_runtimes_mount() {
    let Some(runc) = engine("race_mount", "runc") else {
        return;
    };
    let s = scene();
    let b = s.f.bundle("b");
    let doc = runc_config(
        "cat /data/file",
        vec![bind(&s.tenant.join("data"), "/data", true)],
        None,
    );
    let prepare = |pin: bool| {
        s.f.write_config(if pin { "" } else { "pin_sources = false" });
        let mut cmd = std::process::Command::new(hook_bin());
        cmd.arg("--config")
            .arg(s.f.config_path())
            .arg("precreate")
            .current_dir(&b);
        let o = run_with_stdin(&mut cmd, &serde_json::to_vec(&doc).unwrap());
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(b.join("config.json"), &o.stdout).unwrap();
    };
    let swap = || {
        let fd: OwnedFd =
            open(&s.tenant, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        renameat2(&fd, "data", &fd, "swap", RenameFlags::RENAME_EXCHANGE).unwrap();
    };

    // Naive: the checked path goes to runc, which follows the symlink swapped in meanwhile.
    prepare(false);
    swap();
    let o = runc_run(&runc, &b, "ovh-race-naive");
    swap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "host data\n",
        "the race bites an unpinned source: {}",
        stderr(&o)
    );

    // Pinned: runc mounts the inode that was checked, whatever the tenant does after.
    prepare(true);
    swap();
    let o = runc_run(&runc, &b, "ovh-race-pinned");
    swap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "tenant data\n");

    // And under a continuous swap loop, many containers: never the host's data.
    prepare(true);
    let swapper = Swapper::start(&s.tenant, "data", "swap");
    let mut seen = Vec::new();
    for i in 0..20 {
        let o = runc_run(&runc, &b, &format!("ovh-race-loop-{i}"));
        seen.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    swapper.stop(&s.tenant, "data", "swap");
    assert!(seen.iter().all(|s| s == "tenant data\n"), "{seen:?}");
}

/// Exchanges `dir/f<i>` and `dir/h<i>` for every `i` in turn, until stopped; each pair is
/// exchanged as often as the others and an even number of times, so names end as they began.
fn exchange_pairs(dir: &Path, pairs: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let fd: OwnedFd = open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    std::thread::spawn(move || {
        let mut passes = 0u64;
        while !stop.load(Ordering::Relaxed) || passes % 2 == 1 {
            for i in 0..pairs {
                let (f, h) = (format!("f{i}"), format!("h{i}"));
                renameat2(
                    &fd,
                    f.as_str(),
                    &fd,
                    h.as_str(),
                    RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
            }
            passes += 1;
        }
        passes
    })
}

/// The recursive ownership repair (`recursive-on-mismatch`) against a tenant that holds a hard
/// link to a host file and exchanges it, in a loop, with a file of its own that needs
/// changing: a walk that judges by name and changes by name (as the tool did before it went
/// through one descriptor per entry: 1 in about 1,500 walks gave the host file away) changes
/// the host file; the tool never does.
#[test]
fn exchanging_a_hard_link_with_a_file_while_ownership_is_repaired() {
    if !root_or_skip("race_chown") {
        return;
    }
    const PAIRS: usize = 32;
    const BUDGET: Duration = Duration::from_secs(20);
    let f = Fixture::new();
    let vol = f.tenant("user-toto").join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let host = f.path().join("host-file");
    std::fs::write(&host, "host\n").unwrap();
    let mut own = Vec::new();
    for i in 0..PAIRS {
        let p = vol.join(format!("f{i}"));
        std::fs::write(&p, "tenant\n").unwrap();
        own.push(std::fs::File::open(&p).unwrap());
        std::fs::hard_link(&host, vol.join(format!("h{i}"))).unwrap();
    }
    let host_owner = || owner_of(&host);
    // The tenant's own files need changing again before each walk.
    let reset = || {
        for file in &own {
            std::os::unix::fs::fchown(file, Some(0), Some(0)).unwrap();
        }
    };
    let (uid, gid) = (100000, 100000);

    // By name: lstat, then lchown. Bitten.
    let naive = || {
        for e in std::fs::read_dir(&vol).unwrap() {
            let p = e.unwrap().path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_file() && m.nlink() == 1 && (m.uid(), m.gid()) != (uid, gid) {
                let _ = std::os::unix::fs::lchown(&p, Some(uid), Some(gid));
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = exchange_pairs(&vol, PAIRS, stop.clone());
    let start = Instant::now();
    let mut naive_walks = 0;
    while host_owner() == (0, 0) && start.elapsed() < BUDGET {
        reset();
        naive();
        naive_walks += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let passes = swapper.join().unwrap();
    assert_ne!(
        host_owner(),
        (0, 0),
        "the race never bit the walk by name ({naive_walks} walks, {passes} passes): the test proves nothing"
    );
    std::os::unix::fs::chown(&host, Some(0), Some(0)).unwrap();

    // The tool, many more times under the same race.
    let top = open(&vol, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    let walks = (naive_walks * 20).clamp(3000, 20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = exchange_pairs(&vol, PAIRS, stop.clone());
    let mut changed = 0;
    for walk in 0..walks {
        reset();
        let stats = oci_volume_hook::ownership::chown_below(&top, uid, gid).unwrap();
        changed += stats.changed;
        assert_eq!(
            host_owner(),
            (0, 0),
            "walk {walk} of {walks} gave the host file away"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let passes = swapper.join().unwrap();
    assert!(
        changed > 0,
        "the tool changed the tenant's files ({passes} passes)"
    );
    eprintln!(
        "walk by name bitten after {naive_walks} walks; the tool: {walks} walks, {passes} passes"
    );
    for file in &own {
        assert_eq!(file.metadata().unwrap().nlink(), 1);
    }
}
