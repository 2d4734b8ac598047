//! The runtime's `features`, kept across starts (`ownership = "idmap"`): asked once per
//! runtime binary, asked again when the binary changes, and a copy anyone but root could
//! have written is never believed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// A stand-in runtime: `features` answers what `answer` holds (so the test changes the
/// answer without changing the binary) and is counted in `calls`; any other call succeeds.
struct Fake {
    bin: PathBuf,
    answer: PathBuf,
    calls: PathBuf,
}

impl Fake {
    fn new(f: &Fixture) -> Fake {
        let dir = f.path().join("fake");
        std::fs::create_dir_all(&dir).unwrap();
        let fake = Fake {
            bin: dir.join("runtime"),
            answer: dir.join("answer"),
            calls: dir.join("calls"),
        };
        std::fs::write(
            &fake.bin,
            format!(
                "#!/bin/sh\n[ \"$1\" = features ] || exit 0\necho features >> {}\n\
                 printf '{{\"linux\":{{\"mountExtensions\":{{\"idmap\":{{\"enabled\":%s}}}}}}}}' \"$(cat {})\"\n",
                fake.calls.display(),
                fake.answer.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake.bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        fake.says(true);
        fake
    }
    fn says(&self, enabled: bool) {
        std::fs::write(&self.answer, enabled.to_string()).unwrap();
    }
    fn asked(&self) -> usize {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

/// As root: a fixture, its fake runtime and bundle, after a first start that succeeded
/// (the runtime said yes); `None` (skipped) otherwise.
fn started(name: &str) -> Option<(Fixture, Fake, PathBuf)> {
    if !root_or_skip(name) {
        return None;
    }
    let f = Fixture::new();
    let fake = Fake::new(&f);
    let b = setup(&f, &fake);
    assert!(start(&f, &b).1);
    Some((f, fake, b))
}

/// A fixture with `ownership = "idmap"` over `fake`, and a bundle whose user-namespaced
/// container mounts a volume of a chroot.
fn setup(f: &Fixture, fake: &Fake) -> PathBuf {
    f.write_config(&format!(
        "ownership = \"idmap\"\nruntime = \"{}\"",
        fake.bin.display()
    ));
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("vol")).unwrap();
    let b = f.bundle("b");
    let doc = runc_config(
        "true",
        vec![bind(&t.join("vol"), "/v", false)],
        Some(100000),
    );
    write_config_json(&b, &doc);
    b
}

/// One start through the wrapper; returns its output and whether the log says the mount
/// was made idmapped (else it fell back, as the log must then say).
fn start(f: &Fixture, b: &Path) -> (Output, bool) {
    std::fs::write(f.log_path(), "").unwrap();
    let o = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .arg("--root")
        .arg(b.join("state"))
        .args(["run", "ovh-features"])
        .current_dir(b)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", stderr(&o), f.log());
    let log = f.log();
    let idmapped = log.contains("made idmapped");
    assert_ne!(idmapped, log.contains("falls back"), "{log}");
    (o, idmapped)
}

/// The one file the cache holds.
fn kept(f: &Fixture) -> PathBuf {
    let dir = f.staging().join("@runtime-features");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn features_are_asked_once_per_runtime_binary() {
    // Fails on the code before the cache: `features` was asked at every start.
    let Some((f, fake, b)) = started("features_once") else {
        return;
    };
    assert_eq!(fake.asked(), 1);
    // The binary is the same: its kept answer is used, whatever it would say now.
    fake.says(false);
    for _ in 0..3 {
        assert!(start(&f, &b).1, "the kept answer");
    }
    assert_eq!(fake.asked(), 1, "asked once for four starts");
    let copy = kept(&f);
    let md = std::fs::symlink_metadata(&copy).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o600));
    let dir = std::fs::symlink_metadata(copy.parent().unwrap()).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (0, 0o700));

    // An upgraded runtime (same path, new binary) is asked again, and its answer kept.
    let content = std::fs::read(&fake.bin).unwrap();
    std::fs::remove_file(&fake.bin).unwrap();
    std::fs::write(&fake.bin, content).unwrap();
    std::fs::set_permissions(&fake.bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!start(&f, &b).1, "the new binary's answer");
    assert_eq!(fake.asked(), 2);
    fake.says(true);
    assert!(!start(&f, &b).1, "kept again");
    assert_eq!(fake.asked(), 2);
}

/// How a copy is planted, and the planting.
type Plant<'a> = (&'static str, Box<dyn Fn() + 'a>);

#[test]
fn a_kept_answer_anyone_but_root_could_have_written_is_not_believed() {
    let Some((f, fake, b)) = started("features_planted") else {
        return;
    };
    let copy = kept(&f);
    // A copy that says yes for this very binary, planted in ways root's own never is; the
    // runtime now says no, and each start must hear it from the runtime.
    let poison = std::fs::read(&copy).unwrap();
    fake.says(false);
    let elsewhere = f.path().join("poison");
    let dir = copy.parent().unwrap().to_path_buf();
    let plants: Vec<Plant> = vec![
        (
            "owned by a user",
            Box::new(|| {
                std::fs::write(&copy, &poison).unwrap();
                std::os::unix::fs::chown(&copy, Some(1000), Some(1000)).unwrap();
            }),
        ),
        (
            "writable by others",
            Box::new(|| {
                std::fs::write(&copy, &poison).unwrap();
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
            }),
        ),
        (
            "a symlink to a root-only copy",
            Box::new(|| {
                std::fs::write(&elsewhere, &poison).unwrap();
                std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
                let _ = std::fs::remove_file(&copy);
                std::os::unix::fs::symlink(&elsewhere, &copy).unwrap();
            }),
        ),
        (
            "in a directory others can write",
            Box::new(|| {
                std::fs::write(&copy, &poison).unwrap();
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            }),
        ),
        (
            "in a directory a user owns",
            Box::new(|| {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
                std::fs::write(&copy, &poison).unwrap();
                std::os::unix::fs::chown(&dir, Some(1000), Some(1000)).unwrap();
            }),
        ),
    ];
    for (i, (how, plant)) in plants.iter().enumerate() {
        plant();
        let (_, idmapped) = start(&f, &b);
        assert!(!idmapped, "a copy {how} was believed");
        assert_eq!(fake.asked(), 2 + i, "{how}: the runtime was asked");
    }
}

#[test]
fn a_stale_or_unreadable_copy_means_asking_the_runtime() {
    let Some((f, fake, b)) = started("features_stale") else {
        return;
    };
    let copy = kept(&f);
    fake.says(false);
    // Another binary's answer (the first line names what it belongs to).
    let text = std::fs::read_to_string(&copy).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    std::fs::write(&copy, format!("{first}0\n{rest}")).unwrap();
    assert!(!start(&f, &b).1);
    assert_eq!(fake.asked(), 2);
    assert!(!start(&f, &b).1, "replaced by the runtime's answer, kept");
    assert_eq!(fake.asked(), 2);
    // No first line at all, then something that is not a file: asked, every time.
    for (i, bad) in ["garbage", "dir"].into_iter().enumerate() {
        let _ = std::fs::remove_file(&copy);
        match bad {
            "dir" => std::fs::create_dir(&copy).unwrap(),
            _ => std::fs::write(&copy, "{}").unwrap(),
        }
        fake.says(true);
        assert!(start(&f, &b).1, "{bad}");
        assert_eq!(fake.asked(), 3 + i, "{bad}");
    }
    assert!(start(&f, &b).1);
    assert_eq!(fake.asked(), 5, "a directory in the way: asked each time");
}
