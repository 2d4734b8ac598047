//! The installed .deb (tests/package.sh installs it, runs these with `--ignored`, purges it):
//! the files where they belong, podman through the package's own registration, Docker through
//! `oci-volume-hook configure docker`. These edit /etc/oci-volume-hook/config.toml for the
//! time of a test, so they run one at a time.

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::*;
use serde_json::{Value, json};

const CONFIG: &str = "/etc/oci-volume-hook/config.toml";
static SERIAL: Mutex<()> = Mutex::new(());

/// Points the installed configuration at the fixture; puts the original back on drop.
struct SystemConfig {
    original: Vec<u8>,
}

impl SystemConfig {
    fn point_at(f: &Fixture) -> SystemConfig {
        let original = std::fs::read(CONFIG).expect("the package installs its configuration");
        std::fs::copy(f.config_path(), CONFIG).unwrap();
        SystemConfig { original }
    }
}

impl Drop for SystemConfig {
    fn drop(&mut self) {
        let _ = std::fs::write(CONFIG, &self.original);
    }
}

fn installed() -> bool {
    let ok = Command::new("dpkg")
        .args(["-s", "oci-volume-hook"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "run through tests/package.sh, which installs the package first"
    );
    ok
}

/// Whether a 64-bit little-endian ELF file asks for a dynamic loader (a PT_INTERP header).
fn has_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "{}: not ELF64 LE",
        path.display()
    );
    let u = |at: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&elf[at..at + n]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u(0x20, 8), u(0x36, 2), u(0x38, 2));
    (0..phnum).any(|i| u(phoff + i * phentsize, 4) == 3)
}

#[test]
#[ignore = "needs the installed package: tests/package.sh"]
fn the_package_puts_each_file_where_it_belongs() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    installed();
    for p in [
        "/usr/bin/oci-volume-hook",
        "/usr/bin/oci-volume-runtime",
        "/etc/oci-volume-hook/config.toml",
        "/etc/containers/containers.conf.d/50-oci-volume-hook.conf",
        "/usr/share/oci-volume-hook/hooks.d/oci-volume-hook-precreate.json",
        "/usr/share/oci-volume-hook/hooks.d/oci-volume-hook-poststop.json",
        "/usr/share/oci-volume-hook/keep-runtime",
        "/usr/share/doc/oci-volume-hook/copyright",
        "/usr/share/man/man1/oci-volume-hook.1.gz",
        "/usr/share/man/man1/oci-volume-runtime.1.gz",
        "/usr/share/man/man5/oci-volume-hook.toml.5.gz",
    ] {
        assert!(Path::new(p).exists(), "{p}");
    }
    // The binaries users get are statically linked: no dynamic loader on each runtime call.
    for b in ["/usr/bin/oci-volume-hook", "/usr/bin/oci-volume-runtime"] {
        assert!(!has_interpreter(Path::new(b)), "{b} is dynamically linked");
    }
    // The shipped configuration is all defaults, every key commented.
    let text = std::fs::read_to_string(CONFIG).unwrap();
    let active: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && !l.starts_with('['))
        .collect();
    assert!(active.is_empty(), "{active:?}");
    for key in [
        "chroots",
        "owner",
        "ownership",
        "seed_from_host",
        "allowed_annotations",
        "pin_sources",
        "staging_dir",
        "runtime",
        "log.level",
        "log.target",
        "log.file",
        "log.journald_socket",
        "log.syslog_socket",
    ] {
        assert!(
            text.contains(&format!("#{key} =")),
            "{key} is not documented in the shipped config"
        );
    }
    // Valid hook registrations, and none where CRI-O reads.
    for f in std::fs::read_dir("/usr/share/oci-volume-hook/hooks.d").unwrap() {
        let v: Value = serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
        assert_eq!(v["version"], "1.0.0");
        assert!(Path::new(v["hook"]["path"].as_str().unwrap()).exists());
    }
    let listed = Command::new("dpkg")
        .args(["-L", "oci-volume-hook"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("/usr/share/containers/oci/hooks.d/")
    );
    // The man pages render.
    let man = Command::new("man")
        .args(["-P", "cat", "5", "oci-volume-hook.toml"])
        .output();
    if let Ok(o) = man {
        if o.status.success() {
            assert!(String::from_utf8_lossy(&o.stdout).contains("seed_from_host"));
        }
    }
}

#[test]
#[ignore = "needs the installed package: tests/package.sh"]
fn podman_gets_prepared_volumes_through_the_package_registration() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    installed();
    let Some(podman) = engine("package_podman", "podman") else {
        return;
    };
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap();
    // The tenant owns etc/: it could swap localtime for a link, so the source gets pinned
    // (and the poststop hook must take the staging mount away).
    std::os::unix::fs::chown(t.join("etc"), Some(200000), Some(200000)).unwrap();
    let rootfs = f.bundle("b").join("rootfs");
    chown_tree(&rootfs, 200000);
    let _config = SystemConfig::point_at(&f);
    // Private storage and state, but podman's own configuration: no --hooks-dir.
    let volume = format!("{}:/etc/localtime", t.join("etc/localtime").display());
    let o = podman_command(&podman, &f)
        .args(podman_run_args(
            &volume,
            &rootfs,
            "test -f /etc/localtime && echo file-mounted",
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "file-mounted\n");
    assert!(is_file(&t.join("etc/localtime")));
    assert_eq!(owner_of(&t.join("etc/localtime")), (200000, 200000));
    assert_eq!(
        f.staging_left(),
        (vec![], vec![]),
        "the package's poststop hook took staging away"
    );
}

#[test]
#[ignore = "needs the installed package: tests/package.sh"]
fn docker_gets_prepared_volumes_through_configure_docker() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    installed();
    let Some(bins) = ["containerd", "dockerd", "docker", "ctr"]
        .iter()
        .map(|n| engine("package_docker", n))
        .collect::<Option<Vec<PathBuf>>>()
    else {
        return;
    };
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let rootfs = f.bundle("img").join("rootfs");
    let _config = SystemConfig::point_at(&f);
    // The operator's daemon.json, with keys of its own.
    let dj = f.path().join("daemon.json");
    std::fs::write(&dj, r#"{"userns-remap": "default", "log-level": "warn"}"#).unwrap();
    let o = Command::new("/usr/bin/oci-volume-hook")
        .args(["configure", "docker", "--path", dj.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("restart dockerd"));
    let daemon_json: Value = serde_json::from_slice(&std::fs::read(&dj).unwrap()).unwrap();
    assert_eq!(daemon_json["log-level"], "warn");
    let d = daemons::Daemons::start(
        &f.path().join("d"),
        &[],
        Some(daemon_json),
        [
            bins[0].clone(),
            bins[1].clone(),
            bins[2].clone(),
            bins[3].clone(),
        ],
    );
    d.import(&rootfs, "ovh-test:latest");
    let lt = t.join("etc/localtime");
    let v = format!("{}:/etc/localtime", lt.display());
    let o = d.docker_sh(
        "oci-volume",
        &v,
        "ovh-test:latest",
        "test -f /etc/localtime && echo file-mounted",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "file-mounted\n");
    assert!(is_file(&lt));
    assert_eq!(
        json!(owner_of(&lt).0 >= 100000),
        json!(true),
        "owned by the remapped root"
    );
}

#[test]
fn the_elf_check_tells_static_from_dynamic() {
    // What the installed-package test relies on, checked on binaries every machine has.
    assert!(has_interpreter(Path::new("/bin/sh")));
    if Path::new("/bin/busybox").exists() {
        assert!(!has_interpreter(Path::new("/bin/busybox")));
    }
}

/// The long options a `--help` text lists, and the subcommands it names.
fn options_and_commands(help: &str) -> (Vec<String>, Vec<String>) {
    let options = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches([',', '.', ']', ')'])
                .split(['=', '<', '['])
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let commands = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect();
    (options, commands)
}

#[test]
#[ignore = "needs the installed package: tests/package.sh"]
fn every_option_in_help_is_in_the_installed_manuals() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    installed();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut pages = 0;
    while let Some(path) = todo.pop() {
        let help = Command::new("/usr/bin/oci-volume-hook")
            .args(&path)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let page = std::iter::once("oci-volume-hook".to_string())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("-");
        let man = Command::new("man")
            .args(["-P", "cat", "1", &page])
            .env("LC_ALL", "C")
            .env("MANWIDTH", "250")
            .output()
            .unwrap();
        assert!(man.status.success(), "man 1 {page}: {}", stderr(&man));
        let text = String::from_utf8_lossy(&man.stdout).replace(['\u{2010}', '\u{2212}'], "-");
        let (options, commands) = options_and_commands(&help);
        for o in options {
            assert!(
                text.contains(&o),
                "{o} of `{}` is missing from man 1 {page}",
                path.join(" ")
            );
        }
        for c in commands {
            let mut next = path.clone();
            next.push(c);
            todo.push(next);
        }
        pages += 1;
    }
    assert!(pages >= 8, "only {pages} manual pages were checked");
    let man = Command::new("man")
        .args(["-P", "cat", "1", "oci-volume-runtime"])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains("OCI_VOLUME_HOOK_CONFIG"));
}
