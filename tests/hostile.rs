//! Planted attacks, one table: tenant trees and images are hostile. After every case, host
//! paths outside the chroot (a sentinel host tree, the other tenants, the image) must be
//! exactly as they were: no entry created, removed, changed or chowned.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use oci_volume_hook::chroot::Misplaced;
use oci_volume_hook::config::Config;
use oci_volume_hook::prepare::{Caller, Preparer};
use oci_volume_hook::refusal::Refusal;
use oci_volume_hook::resolve;
use oci_volume_hook::spec::View;
use serde_json::{Value, json};

/// Whether a refusal is a resolution error accepted by `pred`.
fn resolving(r: &Refusal, pred: fn(&resolve::Error) -> bool) -> bool {
    match r {
        Refusal::Resolve(cause) => cause.error().downcast_ref().is_some_and(pred),
        _ => false,
    }
}

struct Ctx {
    f: Fixture,
    tenant: PathBuf,
    host: PathBuf,
    rootfs: PathBuf,
}

impl Ctx {
    fn new() -> Ctx {
        let f = Fixture::new();
        let tenant = f.tenant("user-toto");
        f.tenant("user-toto2");
        let titi = f.tenant("user-titi");
        std::fs::create_dir_all(titi.join("vol")).unwrap();
        std::fs::write(titi.join("vol/file"), "titi's").unwrap();
        let host = f.path().join("host");
        std::fs::create_dir_all(host.join("etc")).unwrap();
        std::fs::create_dir_all(host.join("dir")).unwrap();
        std::fs::write(host.join("etc/passwd"), "root:x:0:0\n").unwrap();
        std::fs::write(host.join("dir/file"), "host data").unwrap();
        std::fs::write(host.join("secret"), "s3cret").unwrap();
        let rootfs = f.bundle("b").join("rootfs");
        Ctx {
            f,
            tenant,
            host,
            rootfs,
        }
    }

    /// Everything that must never change.
    fn sentinels(&self) -> Snapshot {
        let mut s = snapshot(&self.host);
        s.extend(snapshot(&self.f.base().join("user-titi")));
        s.extend(snapshot(&self.f.base().join("user-toto2")));
        s.extend(snapshot(&self.rootfs));
        s
    }
}

enum Expect {
    /// Prepared; the (rewritten) source must be inside the tenant and of this type.
    Prepared { dir: bool },
    /// Refused with a message containing all of these, for the typed reason the predicate
    /// accepts.
    Refused(&'static [&'static str], fn(&Refusal) -> bool),
}

struct Case {
    name: &'static str,
    plant: fn(&Ctx),
    source: &'static str,
    destination: &'static str,
    expect: Expect,
}

fn link(target: impl AsRef<Path>, at: PathBuf) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(target, at).unwrap();
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "absolute symlink, final component, to a host file",
            plant: |c| link(c.host.join("etc/passwd"), c.tenant.join("etc/localtime")),
            source: "etc/localtime",
            destination: "/etc/localtime",
            expect: Expect::Prepared { dir: false },
        },
        Case {
            name: "absolute symlink, intermediate component, to a host directory",
            plant: |c| link(c.host.join("dir"), c.tenant.join("data")),
            source: "data/sub",
            destination: "/data",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "relative .. chain climbing out of the chroot",
            plant: |c| {
                link(
                    "../../../../../../../../../../host/dir",
                    c.tenant.join("a/b/data"),
                )
            },
            source: "a/b/data",
            destination: "/data",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "relative link into another tenant",
            plant: |c| link("../user-titi/vol", c.tenant.join("vol")),
            source: "vol",
            destination: "/data",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "absolute link into another tenant",
            plant: |c| link(c.f.base().join("user-titi/vol"), c.tenant.join("vol")),
            source: "vol",
            destination: "/data",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "link through /proc/self/root",
            plant: |c| {
                link(
                    format!("/proc/self/root{}", c.host.join("dir").display()),
                    c.tenant.join("vol"),
                )
            },
            source: "vol",
            destination: "/data",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "dangling symlink",
            plant: |c| link("/does/not/exist", c.tenant.join("vol")),
            source: "vol",
            destination: "/data",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "symlink loop",
            plant: |c| {
                link("b", c.tenant.join("a"));
                link("a", c.tenant.join("b"));
            },
            source: "a/x",
            destination: "/data",
            expect: Expect::Refused(&["too many levels of symbolic links"], |r| {
                resolving(r, |e| matches!(e, resolve::Error::TooManyLinks { .. }))
            }),
        },
        Case {
            name: "self loop as the final component",
            plant: |c| link("loop", c.tenant.join("loop")),
            source: "loop",
            destination: "/etc/localtime",
            expect: Expect::Refused(&["too many levels of symbolic links"], |r| {
                resolving(r, |e| matches!(e, resolve::Error::TooManyLinks { .. }))
            }),
        },
        Case {
            name: "a file as an intermediate component",
            plant: |c| std::fs::write(c.tenant.join("f"), "x").unwrap(),
            source: "f/x",
            destination: "/data",
            expect: Expect::Refused(&["not a directory"], |r| {
                resolving(r, |e| matches!(e, resolve::Error::NotADirectory { .. }))
            }),
        },
        Case {
            name: "FIFO where a file is wanted (never opened)",
            plant: |c| {
                std::fs::create_dir_all(c.tenant.join("etc")).unwrap();
                nix::unistd::mkfifo(
                    &c.tenant.join("etc/localtime"),
                    nix::sys::stat::Mode::from_bits_truncate(0o644),
                )
                .unwrap();
            },
            source: "etc/localtime",
            destination: "/etc/localtime",
            expect: Expect::Refused(
                &["FIFO"],
                |r| matches!(r, Refusal::Special { kind } if kind.to_string() == "FIFO"),
            ),
        },
        Case {
            name: "socket where a file is wanted",
            plant: |c| {
                std::fs::create_dir_all(c.tenant.join("run")).unwrap();
                let l = std::os::unix::net::UnixListener::bind(c.tenant.join("run/sock")).unwrap();
                std::mem::forget(l);
            },
            source: "run/sock",
            destination: "/etc/localtime",
            expect: Expect::Refused(
                &["socket"],
                |r| matches!(r, Refusal::Special { kind } if kind.to_string() == "socket"),
            ),
        },
        Case {
            name: "device node where a file is wanted",
            plant: |c| {
                use nix::sys::stat::{Mode, SFlag, makedev, mknod};
                mknod(
                    &c.tenant.join("null"),
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o666),
                    makedev(1, 3),
                )
                .unwrap();
            },
            source: "null",
            destination: "/etc/localtime",
            expect: Expect::Refused(
                &["character device"],
                |r| matches!(r, Refusal::Special { kind } if kind.to_string() == "character device"),
            ),
        },
        Case {
            name: "hard link to a host file",
            plant: |c| {
                std::fs::create_dir_all(c.tenant.join("etc")).unwrap();
                std::fs::hard_link(c.host.join("secret"), c.tenant.join("etc/passwd")).unwrap();
            },
            source: "etc/passwd",
            destination: "/etc/passwd",
            expect: Expect::Refused(&["hard links"], |r| {
                matches!(r, Refusal::HardLinked { links: 2 })
            }),
        },
        Case {
            name: "`..` in the source path",
            plant: |_| {},
            source: "../user-titi/vol",
            destination: "/data",
            expect: Expect::Refused(&["`..`"], |r| {
                matches!(r, Refusal::Misplaced(Misplaced::DotDot { .. }))
            }),
        },
        Case {
            name: "doubled and trailing slashes",
            plant: |_| {},
            source: "srv//www/",
            destination: "/data",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "a link whose target is not UTF-8",
            plant: |c| link(std::ffi::OsStr::from_bytes(b"/d\xff"), c.tenant.join("vol")),
            source: "vol",
            destination: "/data",
            expect: Expect::Refused(&["not UTF-8"], |r| {
                matches!(r, Refusal::ResolvedNotUtf8 { .. })
            }),
        },
        Case {
            name: "image: /etc/localtime -> zoneinfo file means a file",
            plant: |_| {},
            source: "tz",
            destination: "/etc/localtime",
            expect: Expect::Prepared { dir: false },
        },
        Case {
            name: "image: a link climbing out with ../.. resolves inside the image",
            plant: |c| {
                link(
                    format!(
                        "../../../../../../../..{}",
                        c.host.join("etc/passwd").display()
                    ),
                    c.rootfs.join("etc/zone"),
                )
            },
            source: "zone",
            // On the host this would be a file; inside the image it is missing: a directory.
            destination: "/etc/zone",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "image: a link through /proc/self/root resolves inside the image",
            plant: |c| {
                link(
                    format!("/proc/self/root{}", c.host.join("etc/passwd").display()),
                    c.rootfs.join("etc/zone"),
                )
            },
            source: "zone",
            destination: "/etc/zone",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "image: a dangling link",
            plant: |c| link("/nowhere/at/all", c.rootfs.join("etc/zone")),
            source: "zone",
            destination: "/etc/zone",
            expect: Expect::Prepared { dir: true },
        },
        Case {
            name: "image: a FIFO at the destination (never opened)",
            plant: |c| {
                nix::unistd::mkfifo(
                    &c.rootfs.join("etc/fifo"),
                    nix::sys::stat::Mode::from_bits_truncate(0o644),
                )
                .unwrap()
            },
            source: "fifo",
            destination: "/etc/fifo",
            expect: Expect::Prepared { dir: false },
        },
    ]
}

/// Runs precreate, killing it if it blocks (as it would, had it opened a FIFO).
fn precreate(f: &Fixture, doc: &Value) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(hook_bin())
        .args(["--config", f.config_path().to_str().unwrap(), "precreate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(doc).unwrap())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the hook blocked");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// The typed reason planning gives for the container's bind mount (its last), if refused.
fn planned_refusal(c: &Ctx, doc: &Value) -> Option<Refusal> {
    let config = Config::load(Some(&c.f.config_path())).unwrap();
    let view = View::of(doc, Path::new("/")).unwrap();
    let plans = Preparer::new(&config, &view, Caller::Rewrite)
        .plan()
        .unwrap();
    plans.last().and_then(|p| p.action.refusal().cloned())
}

#[test]
fn planted_attacks_never_touch_anything_outside_the_chroot() {
    if !root_or_skip("hostile") {
        return;
    }
    let mut failures = Vec::new();
    for case in cases() {
        let c = Ctx::new();
        (case.plant)(&c);
        let source = c.tenant.join(case.source);
        let mut doc = runc_config(
            "true",
            vec![bind(&source, case.destination, false)],
            Some(100000),
        );
        doc["root"]["path"] = json!(c.rootfs);
        let sentinels = c.sentinels();
        let refusal = planned_refusal(&c, &doc);
        let o = precreate(&c.f, &doc);
        let after = c.sentinels();
        if sentinels != after {
            let r = std::panic::catch_unwind(|| assert_unchanged(&sentinels, &after, case.name));
            failures.push(format!(
                "{}: {:?}",
                case.name,
                r.err().and_then(|e| e.downcast_ref::<String>().cloned())
            ));
            continue;
        }
        let err = stderr(&o);
        match case.expect {
            Expect::Prepared { dir } => {
                if !o.status.success() {
                    failures.push(format!("{}: expected success, got {err}", case.name));
                    continue;
                }
                let out: Value = serde_json::from_slice(&o.stdout).unwrap();
                let staged = PathBuf::from(
                    out["mounts"].as_array().unwrap().last().unwrap()["source"]
                        .as_str()
                        .unwrap(),
                );
                // A staging mount must hold an inode of the tenant's tree; an unpinned
                // source must be a path in it.
                let src = if staged.starts_with(c.f.staging()) {
                    find_inode(&c.tenant, inode(&staged)).unwrap_or(staged.clone())
                } else {
                    staged.clone()
                };
                let ok_type = if dir { is_dir(&src) } else { is_file(&src) };
                if !src.starts_with(&c.tenant) || !ok_type || owner_of(&src) != (100000, 100000) {
                    failures.push(format!(
                        "{}: source {} inside={} type_ok={ok_type} owner={:?}",
                        case.name,
                        src.display(),
                        src.starts_with(&c.tenant),
                        std::fs::symlink_metadata(&src).ok().map(|_| owner_of(&src))
                    ));
                }
            }
            Expect::Refused(needles, kind) => {
                let line_ok = err.lines().count() == 1
                    && err.starts_with("oci-volume-hook: ")
                    && err.contains(case.destination)
                    && needles.iter().all(|n| err.contains(n));
                if !refusal.as_ref().is_some_and(kind) {
                    failures.push(format!("{}: planned {refusal:?}", case.name));
                }
                if o.status.success() || !line_ok || !o.stdout.is_empty() {
                    failures.push(format!(
                        "{}: expected refusal with {needles:?}, got status {} stderr {err:?}",
                        case.name, o.status
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_tenant_whose_name_extends_another_is_not_inside_it() {
    if !root_or_skip("prefix") {
        return;
    }
    let c = Ctx::new();
    std::fs::write(
        c.f.config_path(),
        format!("chroots = [\"{}\"]\n", c.tenant.display()),
    )
    .unwrap();
    let other = c.f.base().join("user-toto2/data");
    let mut doc = runc_config(
        "true",
        vec![
            bind(&other, "/data", false),
            bind(&c.tenant.join("mine"), "/mine", false),
        ],
        Some(100000),
    );
    doc["root"]["path"] = json!(c.rootfs);
    let before = c.sentinels();
    let o = precreate(&c.f, &doc);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_unchanged(&before, &c.sentinels(), "prefix tenant");
    assert!(!other.exists());
    assert!(is_dir(&c.tenant.join("mine")));
}

#[test]
fn a_chroot_that_is_a_symlink_is_refused() {
    if !root_or_skip("chroot_symlink") {
        return;
    }
    let c = Ctx::new();
    symlink(&c.host, c.f.base().join("user-evil")).unwrap();
    let mut doc = runc_config(
        "true",
        vec![bind(&c.f.base().join("user-evil/dir"), "/data", false)],
        Some(100000),
    );
    doc["root"]["path"] = json!(c.rootfs);
    let before = c.sentinels();
    let o = precreate(&c.f, &doc);
    assert_one_line_error(&o, "oci-volume-hook", &["mount /data", "symlink"]);
    assert_unchanged(&before, &c.sentinels(), "chroot symlink");
}

#[test]
fn a_chroot_base_others_can_write_is_refused() {
    if !root_or_skip("chroot_base") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    for (mode, owner, why) in [
        (0o777, 0, "writable by others"),
        (0o755, 1000, "not root's"),
    ] {
        let c = Ctx::new();
        let base = c.f.base();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&base, Some(owner), None).unwrap();
        let mut doc = runc_config(
            "true",
            vec![bind(&c.tenant.join("data"), "/data", false)],
            Some(100000),
        );
        doc["root"]["path"] = json!(c.rootfs);
        let before = snapshot(&c.tenant);
        let o = precreate(&c.f, &doc);
        assert_one_line_error(&o, "oci-volume-hook", &["mount /data", why]);
        assert_unchanged(&before, &snapshot(&c.tenant), why);
    }
}

/// A tenant volume whose path looks like podman's own (`<64 hex>/userdata/...`) must neither
/// name precreate's staging (another container's id) nor give the reaper its pid file: the
/// tenant would write that file and have the staging taken away before runc mounts it. On
/// the code that took both from any mount source, the staging was named after the fake id
/// and gone as soon as the tenant wrote `pidfile`.
#[test]
fn a_tenant_path_shaped_like_podmans_neither_names_staging_nor_feeds_the_reaper() {
    if !root_or_skip("precreate_key") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let fake = "0".repeat(64);
    let userdata = t.join(&fake).join("userdata");
    std::fs::create_dir_all(userdata.join("vol")).unwrap();
    let b = f.bundle("b");
    let mut doc = runc_config(
        "true",
        vec![bind(&userdata.join("vol"), "/data", false)],
        None,
    );
    doc["root"]["path"] = json!(b.join("rootfs"));
    let o = f.hook(&["precreate"], &serde_json::to_vec(&doc).unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    let (entries, mounts) = f.staging_left();
    assert!(
        entries.len() == 1 && !mounts.is_empty(),
        "{entries:?} {mounts:?}"
    );
    let name = entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("precreate-") && !name.contains(&fake),
        "staging named by the tenant: {name}"
    );
    // The tenant writes the pid file a reaper fed by its path would watch (once the reaper
    // has looked at it a first time).
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(userdata.join("pidfile"), "1\n").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        f.staging_left().0,
        entries,
        "the tenant's pid file took staging away before runc could mount it"
    );
    oci_volume_hook::staging::cleanup(
        &f.staging(),
        &oci_volume_hook::staging::Key::new(&name).unwrap(),
    )
    .unwrap();
}
