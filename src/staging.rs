//! Pinned sources: each prepared source is bind-mounted, through the descriptor the tool
//! checked, onto a root-only staging path, and config.json points the runtime there. runc
//! resolves bind sources on the host following symlinks, so handing it the tenant's path
//! would let a tenant that swaps a directory for a symlink after the check have a host
//! directory mounted; the staging path holds the checked inode, whatever the tenant does.
//!
//! Two layouts, `<base>` (default `/run/oci-volume-hook`) being a private mount in the host's
//! namespace so that nothing staged propagates anywhere:
//! - the runtime wrapper: `<base>/@slots/d<n>` (a directory) or `f<n>` (a file), mounted
//!   onto inside a mount namespace of the wrapper's own ([`stage_private`]); the edited
//!   config.json on a tmpfs at `<base>/@slots/config`. The runtime runs in that namespace;
//!   when the runtime exits the namespace and every staging mount go with it, whatever kills
//!   whom: no mount is ever left on the host, and no invocation sees another's mounts. The
//!   slots themselves are empty placeholders kept between starts (making one on each start
//!   was the largest single cost of the wrapper's own work); only root can reach them.
//! - podman's precreate hook, whose runtime runs in the host's namespace:
//!   `<base>/<key>/<mount index>` ([`stage`]), taken away at poststop or swept later.

use std::fs::DirBuilder;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;

use crate::resolve::Kind;
use crate::spec::FileId;

/// The name of one container's staging directory under the base: no `/`, not `.` or `..`,
/// no NUL, not starting with `@` (the tool's own lasting entries, [`SLOTS`]), 1 to 200 bytes. Checked once, where the name comes in (a container id, a
/// precreate key, a directory read back); the staging functions take nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    pub fn new(key: &str) -> Result<Key> {
        if key.is_empty()
            || key.len() > 200
            || key.contains('/')
            || key == "."
            || key == ".."
            || key.contains('\0')
            || key.starts_with('@')
        {
            bail!("{key:?} cannot name a staging directory");
        }
        Ok(Key(key.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<Path> for Key {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

/// Bind-mounts each `(index, fd, kind)` at `<base>/<key>/<index>`; returns the staging path of
/// each index. Anything staged earlier under the same key is taken away first.
pub fn stage(
    base: &Path,
    key: &Key,
    pins: &[(usize, &OwnedFd, Kind)],
    name: &dyn Fn(usize) -> String,
) -> Result<Vec<(usize, PathBuf)>> {
    let _lock = prepare_base(base)?;
    let dir = base.join(key);
    remove(&dir)?;
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // The key directory is a mount of its own, so that one lazy unmount takes every staging
    // mount below it away at once (each unmount costs the kernel an RCU grace period).
    mount(
        Some(&dir),
        &dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {} onto itself", dir.display()))?;
    let staged = mount_all(&dir, pins, name);
    if staged.is_err() {
        let _ = remove(&dir); // all or nothing
    }
    staged
}

/// The wrapper's placeholders under the base (see the module's text): `@` is in no
/// container id or precreate key.
pub const SLOTS: &str = "@slots";

/// In a mount namespace of the caller's own (see [`private_namespace`]): mounts a tmpfs
/// with room for `room` bytes (the edited config.json) at `<base>/@slots/config`, then
/// bind-mounts each pin onto a slot of its kind.
pub fn stage_private(
    base: &Path,
    pins: &[(usize, &OwnedFd, Kind)],
    name: &dyn Fn(usize) -> String,
    room: usize,
) -> Result<Vec<(usize, PathBuf)>> {
    let dir = base.join(SLOTS);
    let at = open_slots(&dir)?;
    let size = format!("mode=0700,size={}k", 64 + room.div_ceil(1024));
    let doc_dir = dir.join("config");
    make_slot(&at, "config", Kind::Dir)
        .with_context(|| format!("creating {}", doc_dir.display()))?;
    mount(
        Some("tmpfs"),
        &doc_dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(size.as_str()),
    )
    .with_context(|| format!("mounting a private tmpfs on {}", doc_dir.display()))?;
    let mut staged = Vec::with_capacity(pins.len());
    for (n, (index, fd, kind)) in pins.iter().enumerate() {
        let slot = format!("{}{n}", if *kind == Kind::Dir { 'd' } else { 'f' });
        let target = dir.join(&slot);
        // Attached first: a slot made by an earlier start is there (one call, no mkdirat).
        let attached = match attach(fd, &at, &slot) {
            Err(rustix::io::Errno::NOENT) => {
                make_slot(&at, &slot, *kind).and_then(|()| attach(fd, &at, &slot))
            }
            other => other,
        };
        attached.with_context(|| {
            let mount = name(*index);
            format!(
                "{mount}: bind-mounting the checked source onto {}",
                target.display()
            )
        })?;
        staged.push((*index, target));
    }
    Ok(staged)
}

/// `<base>/@slots`, made root's 0700 if missing (the base is root's 0700: only root can have
/// put anything there), never through a symlink.
fn open_slots(dir: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // Opened first: after the first start it is there (one call, no mkdir).
    match open(dir, flags, Mode::empty()) {
        Err(Errno::ENOENT) => {}
        opened => return opened.with_context(|| format!("opening {}", dir.display())),
    }
    match rustix::fs::mkdir(dir, rustix::fs::Mode::RWXU) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    open(dir, flags, Mode::empty()).with_context(|| format!("opening {}", dir.display()))
}

/// [`placeholder`], when another start has not just made it.
fn make_slot(at: &OwnedFd, name: &str, kind: Kind) -> rustix::io::Result<()> {
    match placeholder(at, name, kind) {
        Err(rustix::io::Errno::EXIST) => Ok(()),
        other => other,
    }
}

/// Moves the calling process into a mount namespace of its own, after making sure `base`
/// is a private mount in the current one, and makes it private again in the new one: the
/// host's propagation can change at any time (a `mount --make-rshared /`), and a tmpfs or
/// bind mounted below a shared `base` would reach the host and every other wrapper's
/// namespace. Every other mount keeps its propagation (shared volumes stay shared with the
/// host). The caller must be single-threaded.
pub fn private_namespace(base: &Path) -> Result<()> {
    drop(prepare_base(base)?);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("creating a mount namespace for the runtime")?;
    make_private(base)
}

/// `<base>` private, with everything below it: fails (EINVAL) when `base` is not a mount
/// point, which [`prepare_base`] made it.
fn make_private(base: &Path) -> Result<()> {
    mount(
        None::<&str>,
        base,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("making {} a private mount", base.display()))
}

/// Shows the runtime `doc` as `<bundle>/config.json`, in this mount namespace only (see
/// [`private_namespace`]; after [`stage_private`]): the document is written to the tmpfs at
/// `<base>/@slots/config` and bind-mounted over the bundle's file, which is never written.
/// Two creates of one bundle each see their own document, and a wrapper killed at any
/// moment leaves the bundle as the engine wrote it. `read` is the file the document was read
/// from: the mount goes onto that very inode, or nowhere.
pub fn show_config(base: &Path, bundle: &Path, doc: &[u8], read: FileId) -> Result<()> {
    let staged = base.join(SLOTS).join("config/config.json");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .and_then(|mut f| std::io::Write::write_all(&mut f, doc))
        .with_context(|| format!("writing {}", staged.display()))?;
    // The new mount propagates wherever the bundle's mount does: make that one mount (only
    // it: shared volumes on other mounts keep their peers) a slave here first. Staged sources
    // were bound before, so a shared source on this very mount keeps its peers too.
    let root = mount_root(bundle)?;
    mount(
        None::<&str>,
        &root,
        None::<&str>,
        MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .with_context(|| format!("making {} a slave mount", root.display()))?;
    let target = open(
        &bundle.join("config.json"),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}/config.json", bundle.display()))?;
    if FileId::of(&target)? != read {
        bail!(
            "{}/config.json was replaced while it was being prepared",
            bundle.display()
        );
    }
    let target = format!("/proc/self/fd/{}", target.as_raw_fd());
    mount(
        Some(&staged),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "bind-mounting the edited config.json over {}",
            bundle.display()
        )
    })
}

/// The mount point of the mount `dir` lies on: the highest ancestor of its canonical path
/// with the same mount id (one statx per component, no mountinfo).
fn mount_root(dir: &Path) -> Result<PathBuf> {
    let canon =
        std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let id = mount_id(&canon)?;
    let mut root = canon.as_path();
    while let Some(parent) = root.parent() {
        if mount_id(parent)? != id {
            break;
        }
        root = parent;
    }
    Ok(root.to_path_buf())
}

fn mount_id(path: &Path) -> Result<u64> {
    rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::MNT_ID,
    )
    .map(|st| st.stx_mnt_id)
    .with_context(|| format!("statx {}", path.display()))
}

/// Takes away precreate staging left by containers whose runtime never reached poststop
/// (a start that failed after precreate, a killed engine): keys starting with `prefix` whose
/// directory is older than `age`. The runtime needs a staging mount only while it creates the
/// container, seconds after precreate.
pub fn sweep_older_than(base: &Path, prefix: &str, age: std::time::Duration) -> Result<usize> {
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", base.display())),
    };
    let now = std::time::SystemTime::now();
    let mut swept = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(key) = keyed(&name, prefix) else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|d| d >= age);
        if old {
            remove(&base.join(key))?;
            swept += 1;
        }
    }
    Ok(swept)
}

fn mount_all(
    dir: &Path,
    pins: &[(usize, &OwnedFd, Kind)],
    name: &dyn Fn(usize) -> String,
) -> Result<Vec<(usize, PathBuf)>> {
    // Placeholders and mounts go by name relative to the directory's descriptor, and each
    // checked descriptor is cloned with open_tree(2) and attached with move_mount(2): no path
    // walk from `/` and no /proc magic-link lookup per source (together about half of a
    // pinned start's own cost with the path-based calls).
    let at = open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", dir.display()))?;
    let mut staged = Vec::with_capacity(pins.len());
    for (index, fd, kind) in pins {
        let slot = index.to_string();
        let target = dir.join(&slot);
        placeholder(&at, &slot, *kind).with_context(|| format!("creating {}", target.display()))?;
        attach(fd, &at, &slot).with_context(|| {
            let mount = name(*index);
            format!(
                "{mount}: bind-mounting the checked source onto {}",
                target.display()
            )
        })?;
        staged.push((*index, target));
    }
    Ok(staged)
}

/// An empty directory or file named `name` in `at` (root's own staging directory), for a
/// source of `kind` to be mounted on.
fn placeholder(at: &OwnedFd, name: &str, kind: Kind) -> rustix::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    if kind == Kind::Dir {
        rustix::fs::mkdirat(at, name, Mode::RWXU)
    } else {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        rustix::fs::openat(at, name, flags | OFlags::CLOEXEC, Mode::RUSR | Mode::WUSR).map(drop)
    }
}

/// Bind-mounts (recursively) exactly the inode behind `fd` onto `name` in `at`.
fn attach(fd: &OwnedFd, at: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
    let tree = open_tree(
        fd,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE,
    )?;
    move_mount(&tree, "", at, name, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
}

/// Takes away every staging mount and placeholder under `<base>/<key>`; nothing to do when
/// it does not exist.
pub fn cleanup(base: &Path, key: &Key) -> Result<()> {
    remove(&base.join(key))
}

/// The key a directory entry read back from the base names, if it starts with `prefix`.
fn keyed(name: &std::ffi::OsStr, prefix: &str) -> Option<Key> {
    let name = name.to_str().filter(|n| n.starts_with(prefix))?;
    Key::new(name).ok()
}

/// [`cleanup`] for every key starting with `prefix`.
pub fn cleanup_prefix(base: &Path, prefix: &str) -> Result<()> {
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", base.display())),
    };
    for entry in entries {
        if let Some(key) = keyed(&entry?.file_name(), prefix) {
            remove(&base.join(key))?;
        }
    }
    Ok(())
}

/// Takes `dir` and everything staged in it away. Another cleaner (a poststop hook, the
/// precreate reaper) may be at it at the same moment: what is already gone is fine.
fn remove(dir: &Path) -> Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    // Detaches the key directory's own mount and every staging mount below it at once.
    match umount2(dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", dir.display())),
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        // Only left if something was mounted here without the key directory's own mount.
        match umount2(&path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
        }
        // Placeholders the tool made itself, in its own root-only directory.
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => std::fs::remove_dir(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match removed {
            Err(e) if !gone(&e) => {
                return Err(e).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if !gone(&e) => Err(e).with_context(|| format!("removing {}", dir.display())),
        _ => Ok(()),
    }
}

/// Creates `<base>` (root's, mode 0700) and makes it a private mount, under a lock so that
/// concurrent containers set it up once.
fn prepare_base(base: &Path) -> Result<Flock<OwnedFd>> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .with_context(|| format!("creating {}", base.display()))?;
    let fd = open(
        base,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", base.display()))?;
    let lock = Flock::lock(fd, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("locking the staging directory")?;
    let md = std::fs::symlink_metadata(base)?;
    if md.uid() != 0 || md.mode() & 0o077 != 0 {
        bail!(
            "staging directory {} must be root's and mode 0700",
            base.display()
        );
    }
    if !is_mountpoint(&*lock)? {
        mount(
            Some(base),
            base,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {} onto itself", base.display()))?;
    }
    // Every time, not once: whoever made it shared since (systemd, a `make-rshared /`)
    // would have staging mounts reach the host's other namespaces.
    make_private(base)?;
    Ok(lock)
}

/// Whether the directory behind `dir` is the root of a mount (statx, no mountinfo).
fn is_mountpoint(dir: impl AsFd) -> Result<bool> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, statx};
    let st = statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
        .context("statx of the staging directory")?;
    if !st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        bail!("this kernel does not report mount points (statx STATX_ATTR_MOUNT_ROOT, Linux 5.8)");
    }
    Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_plain_name() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "a\0b",
            SLOTS,
            "@x",
            &"k".repeat(201),
        ] {
            let err = Key::new(bad).unwrap_err().to_string();
            assert_eq!(err, format!("{bad:?} cannot name a staging directory"));
        }
        for good in [
            "abc",
            "...",
            ".hidden",
            "a@b",
            "precreate-x-12",
            &"k".repeat(200),
        ] {
            assert_eq!(Key::new(good).unwrap().as_str(), good);
        }
        assert_eq!(
            Path::new("/b").join(Key::new("k").unwrap()),
            Path::new("/b/k")
        );
    }

    #[test]
    fn names_read_back_count_only_as_keys_with_the_prefix() {
        let key = |n: &str| keyed(std::ffi::OsStr::new(n), "precreate-").map(|k| k.0);
        assert_eq!(key("precreate-a-1").as_deref(), Some("precreate-a-1"));
        assert_eq!(key("other"), None);
        assert_eq!(key(&format!("precreate-{}", "k".repeat(200))), None);
    }
}
