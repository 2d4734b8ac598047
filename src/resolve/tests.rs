use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{Mode, mkdirat};

use super::*;

fn found(l: Lookup) -> Found {
    match l {
        Lookup::Found(f) => f,
        Lookup::Missing(m) => panic!("missing {:?} in {:?}", m.name, m.parent_rel),
    }
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("usr/share/zoneinfo")).unwrap();
    std::fs::write(r.join("usr/share/zoneinfo/UTC"), "tz").unwrap();
    std::fs::create_dir(r.join("etc")).unwrap();
    symlink("/usr/share/zoneinfo/UTC", r.join("etc/localtime")).unwrap();
    symlink("../../../../../../usr", r.join("etc/up")).unwrap();
    let root = Root::open(r).unwrap();
    let f = found(root.lookup(Path::new("etc/localtime")).unwrap());
    assert_eq!(f.node.kind, Kind::File);
    assert_eq!(f.rel, Path::new("usr/share/zoneinfo/UTC"));
    assert!(f.via_symlink);
    let f = found(root.lookup(Path::new("etc/up/share")).unwrap());
    assert_eq!(f.rel, Path::new("usr/share"));
    let f = found(root.lookup(Path::new("etc")).unwrap());
    assert!(!f.via_symlink);
}

#[test]
fn missing_reports_where_it_stopped() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("releases/v1")).unwrap();
    symlink("/releases/v3", r.join("current")).unwrap();
    let root = Root::open(r).unwrap();
    match root.lookup(Path::new("current/data/x")).unwrap() {
        Lookup::Missing(m) => {
            assert_eq!(m.name, "v3");
            assert_eq!(m.parent_rel, Path::new("releases"));
            assert!(!m.is_last);
            assert!(m.via_symlink);
        }
        Lookup::Found(_) => panic!("found"),
    }
}

#[test]
fn loops_and_files_in_the_middle_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    symlink("b", r.join("a")).unwrap();
    symlink("a", r.join("b")).unwrap();
    std::fs::write(r.join("f"), "").unwrap();
    let root = Root::open(r).unwrap();
    let e = root.lookup(Path::new("a/x")).unwrap_err().to_string();
    assert!(e.contains("too many levels"), "{e}");
    let e = root.lookup(Path::new("f/x")).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
}

#[test]
fn a_walk_creates_each_missing_component_once_from_its_parent() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir(r.join("a")).unwrap();
    symlink("/a", r.join("link")).unwrap();
    let root = Root::open(r).unwrap();
    let mut made = Vec::new();
    let mut create = |dir: BorrowedFd<'_>, at: &Path, name: &OsStr, last: bool| {
        made.push((at.join(name), last));
        mkdirat(dir, name, Mode::from_bits_truncate(0o755)).map_err(Into::into)
    };
    let f = found(root.walk(Path::new("link/b/c"), Some(&mut create)).unwrap());
    assert_eq!(f.rel, Path::new("a/b/c"));
    assert!(f.via_symlink);
    assert_eq!(
        made,
        vec![
            (PathBuf::from("a/b"), false),
            (PathBuf::from("a/b/c"), true)
        ]
    );
    assert!(r.join("a/b/c").is_dir());
    // Too deep a path is refused, not walked to the end.
    let deep: PathBuf = std::iter::repeat_n("d", crate::chroot::MAX_COMPONENTS + 2).collect();
    let mut n = 0;
    let mut create = |dir: BorrowedFd<'_>, _: &Path, name: &OsStr, _: bool| {
        n += 1;
        mkdirat(dir, name, Mode::from_bits_truncate(0o755)).map_err(Into::into)
    };
    let e = root.walk(&deep, Some(&mut create)).unwrap_err().to_string();
    assert!(e.contains("more than 256 components"), "{e}");
    assert_eq!(n, crate::chroot::MAX_COMPONENTS + 1);
}

#[test]
fn root_that_is_a_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("real")).unwrap();
    symlink("real", t.path().join("link")).unwrap();
    std::fs::write(t.path().join("f"), "").unwrap();
    let text = |p: &str| Root::open(&t.path().join(p)).unwrap_err().to_string();
    let at = |p: &str| t.path().join(p).display().to_string();
    assert_eq!(
        text("link"),
        format!("{} goes through a symlink", at("link"))
    );
    assert_eq!(
        text("link/x"),
        format!("{} goes through a symlink", at("link/x"))
    );
    assert!(Root::open(&t.path().join("real")).is_ok());
    assert_eq!(text("nope"), format!("{} does not exist", at("nope")));
    assert_eq!(text("f"), format!("{} is not a directory", at("f")));
    // An engine's path may go through the host's symlinks.
    assert!(Root::open_trusted(&t.path().join("link")).is_ok());
    let e = Root::open_trusted(&t.path().join("f")).unwrap_err();
    assert_eq!(e.to_string(), format!("{} is not a directory", at("f")));
}

/// `e` prints `text`, alone and through anyhow with `{:#}` (as refusals are printed).
fn reads(e: Error, text: &str) {
    assert_eq!(e.to_string(), text);
    assert_eq!(format!("{:#}", anyhow::Error::from(e)), text);
}

fn at() -> PathBuf {
    PathBuf::from("/c/t/a")
}

#[test]
fn walk_messages_are_the_texts_users_grep() {
    let path = at;
    let text = "/c/t/a: too many levels of symbolic links";
    reads(Error::TooManyLinks { path: path() }, text);
    let text = "/c/t/a: symlink with an empty target";
    reads(Error::EmptySymlink { path: path() }, text);
    let kind = Kind::Fifo;
    let text = "/c/t/a is a FIFO, not a directory";
    reads(Error::NotADirectory { path: path(), kind }, text);
    let text = "/c/t/a resolves to more than 256 components";
    reads(
        Error::TooDeep {
            path: path(),
            max: 256,
        },
        text,
    );
    let text = "/c/t/a keeps changing while it is prepared; gave up";
    reads(Error::KeepsChanging { path: path() }, text);
    let errno = Errno::EACCES;
    reads(
        Error::Open {
            path: path(),
            errno,
        },
        "/c/t/a: Permission denied",
    );
}

#[test]
fn root_and_chroot_messages_are_the_texts_users_grep() {
    let path = at;
    let (dir, chroot) = ("/c".into(), "/c/t".into());
    let text = "/c is not root's or is writable by others: refusing the chroot /c/t";
    reads(Error::Untrusted { dir, chroot }, text);
    let text = "/c/t/a is not root's, in a directory writable by others: refusing the chroot";
    reads(Error::UntrustedBelowSticky { dir: path() }, text);
    let text = "/c/t/a goes through a symlink";
    reads(Error::GoesThroughSymlink { path: path() }, text);
    reads(Error::Symlink { path: path() }, "/c/t/a is a symlink");
    reads(Error::NotADir { path: path() }, "/c/t/a is not a directory");
    let text = "/c/t/a is not a directory (or is a symlink)";
    reads(Error::NotADirOrSymlink { path: path() }, text);
    reads(
        Error::DoesNotExist { path: path() },
        "/c/t/a does not exist",
    );
    let errno = Errno::EROFS;
    let text = "creating the chroot /c/t/a: Read-only file system";
    reads(
        Error::MakeChroot {
            path: path(),
            errno,
        },
        text,
    );
}

#[test]
fn failed_calls_and_callbacks_read_as_before() {
    // A failed call reads as anyhow's `.context(..)` on the Errno did, with `{:#}`.
    let old = |ctx: &'static str, errno| format!("{:#}", anyhow::Error::new(errno).context(ctx));
    let text = "opening /c/t/a: ENOENT: No such file or directory";
    assert_eq!(old("opening /c/t/a", Errno::ENOENT), text);
    reads(Error::sys("opening", &at(), Errno::ENOENT), text);
    reads(
        Error::fd("fstat")(Errno::EBADF),
        &old("fstat", Errno::EBADF),
    );
    // The creation callback's error passes through as it was, chain included.
    let inner = || anyhow::anyhow!("EPERM").context("creating directory /c/t/a");
    let e = Error::Create(inner());
    assert_eq!(format!("{e:#}"), "creating directory /c/t/a: EPERM");
    assert_eq!(e.to_string(), "creating directory /c/t/a");
    reads(Error::Create(anyhow::anyhow!("x")), "x");
    let chained = anyhow::Error::from(Error::Create(inner()));
    assert_eq!(format!("{chained:#}"), "creating directory /c/t/a: EPERM");
}

/// A fake host `/` in a temporary directory: `dirs` made with their modes (umask aside).
fn host(dirs: &[(&str, u32)]) -> (tempfile::TempDir, Host) {
    let t = tempfile::tempdir().unwrap();
    for (d, mode) in dirs {
        let p = t.path().join(d);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let h = Host::fake(t.path());
    (t, h)
}

fn refused(r: Result<Chroot>) -> Error {
    match r {
        Ok(Chroot::Open(root)) => panic!("{} opened", root.path().display()),
        Ok(Chroot::Missing) => panic!("missing"),
        Err(e) => e,
    }
}

#[test]
fn a_chroot_below_a_directory_writable_by_others_is_refused() {
    let (_t, h) = host(&[("containerdata", 0o777), ("containerdata/t1", 0o755)]);
    let e = refused(Root::chroot_in(&h, Path::new("/containerdata/t1"), true));
    assert!(matches!(e, Error::Untrusted { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "/containerdata is not root's or is writable by others: refusing the chroot /containerdata/t1"
    );
    // The chroot itself must be just as safe when something is resolved below it.
    let (_t, h) = host(&[("c", 0o755), ("c/t1", 0o757)]);
    let e = refused(Root::chroot_in(&h, Path::new("/c/t1/sub"), false));
    assert_eq!(
        e.to_string(),
        "/c/t1 is not root's or is writable by others: refusing the chroot /c/t1/sub"
    );
}

#[test]
fn a_symlink_on_the_way_to_a_chroot_is_refused() {
    let (t, h) = host(&[("real", 0o755), ("real/t1", 0o755), ("c", 0o755)]);
    symlink("real", t.path().join("containerdata")).unwrap();
    symlink("/", t.path().join("c/t1")).unwrap();
    for (path, shown) in [
        ("/containerdata/t1", "/containerdata"),
        ("/c/t1", "/c/t1"),
        ("/c/t1/etc", "/c/t1"),
    ] {
        for create in [false, true] {
            let e = refused(Root::chroot_in(&h, Path::new(path), create));
            assert!(matches!(e, Error::Symlink { .. }), "{e:?}");
            assert_eq!(e.to_string(), format!("{shown} is a symlink"));
        }
    }
}

#[test]
fn a_missing_chroot_is_missing_and_nothing_is_made() {
    let (t, h) = host(&[("containerdata", 0o755)]);
    let r = Root::chroot_in(&h, Path::new("/containerdata/t1"), false).unwrap();
    assert!(matches!(r, Chroot::Missing), "{r:?}");
    assert!(!t.path().join("containerdata/t1").exists());
    // Only the chroot itself may be missing, even with `create`.
    for create in [false, true] {
        let e = refused(Root::chroot_in(
            &h,
            Path::new("/containerdata/x/t1"),
            create,
        ));
        assert_eq!(e.to_string(), "/containerdata/x does not exist");
    }
    assert!(!t.path().join("containerdata/x").exists());
}

#[test]
fn create_makes_the_chroot_0755_and_the_trusted_users() {
    let (t, h) = host(&[("containerdata", 0o755)]);
    let r = Root::chroot_in(&h, Path::new("/containerdata/t1"), true).unwrap();
    let Chroot::Open(root) = r else {
        panic!("not opened: {r:?}")
    };
    let m = std::fs::symlink_metadata(t.path().join("containerdata/t1")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(m.gid(), nix::unistd::getegid().as_raw());
    // The root keeps the path as given: messages name the chroot as configured.
    assert_eq!(root.path(), Path::new("/containerdata/t1"));
    assert_eq!(
        root.host_path(Path::new("a")),
        Path::new("/containerdata/t1/a")
    );
    symlink("loop", t.path().join("containerdata/t1/loop")).unwrap();
    let e = root.lookup(Path::new("loop")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/containerdata/t1/loop: too many levels of symbolic links"
    );
    // Its descriptor is the new directory: what is made through it lands there.
    let mut create = |dir: BorrowedFd<'_>, _: &Path, name: &OsStr, _: bool| {
        mkdirat(dir, name, Mode::from_bits_truncate(0o755)).map_err(Into::into)
    };
    found(root.walk(Path::new("data"), Some(&mut create)).unwrap());
    assert!(t.path().join("containerdata/t1/data").is_dir());
    // A second container finds it there.
    let again = Root::chroot_in(&h, Path::new("/containerdata/t1"), true).unwrap();
    assert!(matches!(again, Chroot::Open(_)), "{again:?}");
}

#[test]
fn a_sticky_directory_writable_by_others_takes_only_trusted_entries() {
    // Trusted entries below a sticky, world-writable directory (like /var/tmp) are fine ...
    let (_t, h) = host(&[("tmp", 0o1777), ("tmp/t1", 0o755), ("tmp2", 0o777)]);
    let r = Root::chroot_in(&h, Path::new("/tmp/t1"), false).unwrap();
    assert!(matches!(r, Chroot::Open(_)), "{r:?}");
    // ... but not without the sticky bit,
    let e = refused(Root::chroot_in(&h, Path::new("/tmp2/t1"), false));
    assert!(matches!(e, Error::Untrusted { .. }), "{e:?}");
    // ... nor an entry someone else owns: the real /tmp, where the tests' own directory is
    // not root's (made so when the tests run as root).
    let st = std::fs::symlink_metadata("/tmp").unwrap();
    assert_eq!(
        (st.uid(), st.mode() & 0o7777),
        (0, 0o1777),
        "/tmp is not root's 1777"
    );
    let t = tempfile::tempdir_in("/tmp").unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(t.path(), Some(65534), Some(65534)).unwrap();
    }
    let chroot = t.path().join("t1");
    let e = refused(Root::chroot(&chroot, true));
    assert!(matches!(e, Error::UntrustedBelowSticky { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{} is not root's, in a directory writable by others: refusing the chroot",
            t.path().display()
        )
    );
    assert!(!chroot.exists());
}
