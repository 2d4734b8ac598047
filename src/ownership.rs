//! Which host uid/gid a prepared source belongs to.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid, fchownat};
use oci_spec::runtime::LinuxIdMapping;
use rustix::fs::{AtFlags as StatxAt, StatxAttributes, StatxFlags};

use crate::config::Owner;
use crate::spec::{MountIdmap, View};

/// Maps a container id to the host through `mappings`; no mappings means no user namespace,
/// where ids are the host's own.
pub fn map_id(mappings: &[LinuxIdMapping], id: u32, what: &str) -> Result<u32> {
    if mappings.is_empty() {
        // (uid_t)-1 means "leave unchanged" to chown(2): never a real owner.
        if id == u32::MAX {
            bail!("{what} {id} is not a valid owner");
        }
        return Ok(id);
    }
    for m in mappings {
        let (inside, outside, size) =
            (m.container_id() as u64, m.host_id() as u64, m.size() as u64);
        if inside + size > 1 << 32 || outside + size > 1 << 32 {
            bail!("{what} mapping {inside}:{outside}:{size} overflows 32-bit ids");
        }
        let id = id as u64;
        if id >= inside && id < inside + size {
            let host = outside + (id - inside);
            // (uid_t)-1 means "leave unchanged" to chown(2): never a real owner.
            if host >= u32::MAX as u64 {
                bail!("{what} {id} maps to the invalid host id {host}");
            }
            return Ok(host as u32);
        }
    }
    bail!("container {what} {id} is not mapped by linux.{what}Mappings")
}

/// The host (uid, gid) that prepared sources are given to. Ids come through the container's
/// own mappings (an id outside them is refused); `process-user` asked by the container's
/// annotation without a user namespace is refused, as its uid would be any host uid the
/// container names.
pub fn host_owner(owner: Owner, by_annotation: bool, view: &View) -> Result<(u32, u32)> {
    // One without the other would give the container's files host group 0 (or user 0).
    match (view.uid_mappings.is_empty(), view.gid_mappings.is_empty()) {
        (false, true) => bail!("config.json has linux.uidMappings but no linux.gidMappings"),
        (true, false) => bail!("config.json has linux.gidMappings but no linux.uidMappings"),
        _ => {}
    }
    if by_annotation && owner == Owner::ProcessUser && view.uid_mappings.is_empty() {
        bail!(
            "annotation {}owner=\"process-user\": the container has no user namespace, so process.user ({}:{}) would be host ids of its own choosing; refused",
            crate::config::ANNOTATION_PREFIX,
            view.user.0,
            view.user.1
        );
    }
    let (uid, gid) = match owner {
        Owner::ContainerRoot => (0, 0),
        Owner::ProcessUser => view.user,
    };
    Ok((
        map_id(&view.uid_mappings, uid, "uid")?,
        map_id(&view.gid_mappings, gid, "gid")?,
    ))
}

/// The host id that `mappings` (of an idmapped mount) show as `kernel_id`, i.e. the
/// on-disk id that the mount presents as `kernel_id`: the inverse of [`map_id`].
pub fn unmap_id(mappings: &[LinuxIdMapping], kernel_id: u32, what: &str) -> Result<u32> {
    if mappings.is_empty() {
        return Ok(kernel_id);
    }
    for m in mappings {
        let (disk, kernel, size) = (m.container_id() as u64, m.host_id() as u64, m.size() as u64);
        if disk + size > 1 << 32 || kernel + size > 1 << 32 {
            bail!("mount {what} mapping {disk}:{kernel}:{size} overflows 32-bit ids");
        }
        let k = kernel_id as u64;
        if k >= kernel && k < kernel + size {
            return Ok((disk + (k - kernel)) as u32);
        }
    }
    bail!("{what} {kernel_id} is not mapped by the mount's {what}Mappings")
}

/// The on-disk (uid, gid) a source of `view` is given to: the host ids the container user
/// has ([`host_owner`]), seen through the mount's idmapping when it has one. Through an
/// idmapped mount with the container's own mappings that is the container's own id
/// (container root owns on-disk 0): chowning to its host id instead would show it 65534.
pub fn disk_owner(
    owner: Owner,
    by_annotation: bool,
    view: &View,
    idmap: Option<&MountIdmap>,
) -> Result<(u32, u32)> {
    let (uid, gid) = host_owner(owner, by_annotation, view)?;
    let Some(idmap) = idmap else {
        return Ok((uid, gid));
    };
    let (uids, gids) = if idmap.has_own_mappings() {
        match (idmap.uid_mappings.is_empty(), idmap.gid_mappings.is_empty()) {
            (false, true) => bail!("the mount has uidMappings but no gidMappings"),
            (true, false) => bail!("the mount has gidMappings but no uidMappings"),
            _ => (&idmap.uid_mappings, &idmap.gid_mappings),
        }
    } else {
        (&view.uid_mappings, &view.gid_mappings)
    };
    Ok((unmap_id(uids, uid, "uid")?, unmap_id(gids, gid, "gid")?))
}

/// What [`chown_below`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    pub changed: u64,
    pub already_right: u64,
    /// Non-directories with several links (files, symlinks, FIFOs...), left alone: another
    /// link may lie outside the chroot.
    pub skipped_hard_links: u64,
    /// Mount points (another filesystem, or a bind mount of the same one): neither changed
    /// nor entered.
    pub skipped_mounts: u64,
}

/// Gives every entry below the directory `dir` (an `O_PATH` descriptor; not `dir` itself) to
/// `uid`/`gid`. Each entry to change is opened `O_PATH|O_NOFOLLOW` under its parent's
/// descriptor, then judged again and changed through that one descriptor: a tenant renaming
/// entries meanwhile can never have a hard link changed that was judged a single-link file. Never follows a
/// symlink (links themselves are changed), never crosses a
/// mount point (`statx`: STATX_ATTR_MOUNT_ROOT, or a mount id other than the top's, so a
/// bind mount of the same filesystem counts), never changes a non-directory with more than
/// one link, and skips entries that are already right, so that a tree half
/// right costs half the writes. Directories are shared out to one thread per core: on a big
/// tree the time goes into one stat and at most one chown per entry.
pub fn chown_below(dir: impl AsFd, uid: u32, gid: u32) -> Result<TreeStats> {
    let top = openat(dir, ".", DIR_FLAGS, Mode::empty()).context("opening directory")?;
    let st = statx_at(&top, c"", StatxAt::EMPTY_PATH).context("statx")?;
    let (dev, mnt_id) = (st.dev, st.mnt_id);
    let walk = Walk {
        uid,
        gid,
        dev,
        mnt_id,
        queue: Mutex::new(vec![Job::Open(top)]),
        wake: Condvar::new(),
        pending: AtomicUsize::new(1),
        failed: Mutex::new(None),
        stats: Mutex::new(TreeStats::default()),
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| walk.work());
        }
        walk.work();
    });
    if let Some(e) = walk.failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(walk.stats.into_inner().unwrap_or_else(|e| e.into_inner()))
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

enum Job {
    Open(OwnedFd),
    /// A subdirectory checked (and changed) through its own descriptor, entered when its
    /// turn comes so that few descriptors are held at once: reopened by name under its
    /// parent's descriptor, and entered only if it is still the inode that was checked.
    Child(Arc<OwnedFd>, CString, u64),
}

/// An entry, for the one `statx` and the one `fchownat` that decide and change it.
const ENTRY_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

struct Walk {
    uid: u32,
    gid: u32,
    dev: u64,
    /// The top's mount id, when the kernel tells it (Linux 5.8+).
    mnt_id: Option<u64>,
    queue: Mutex<Vec<Job>>,
    wake: Condvar,
    /// Jobs queued or being worked on; the walk is over when it reaches zero.
    pending: AtomicUsize,
    failed: Mutex<Option<anyhow::Error>>,
    stats: Mutex<TreeStats>,
}

impl Walk {
    fn work(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(job) = q.pop() {
                        break job;
                    }
                    if self.pending.load(Ordering::SeqCst) == 0 {
                        return;
                    }
                    q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            let stopped = self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            if !stopped {
                if let Err(e) = self.directory(job) {
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                }
            }
            if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                let _q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                self.wake.notify_all();
            }
        }
    }

    /// The directory a job names, opened for reading; None when it was swapped meanwhile.
    fn enter(&self, job: Job) -> Result<Option<OwnedFd>> {
        let (parent, name, ino) = match job {
            Job::Open(fd) => return Ok(Some(fd)),
            Job::Child(parent, name, ino) => (parent, name, ino),
        };
        let fd = match openat(&*parent, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(e).context("opening directory"),
        };
        let st = statx_at(&fd, c"", StatxAt::EMPTY_PATH).context("statx")?;
        Ok((st.ino == ino && !self.other_mount(&st)).then_some(fd))
    }

    /// What the walk does with an entry.
    fn judge(&self, st: &Stx) -> Verdict {
        if self.other_mount(st) {
            Verdict::Mount
        } else if st.uid == self.uid && st.gid == self.gid {
            Verdict::Right
        } else if !st.is_dir() && st.nlink > 1 {
            Verdict::HardLink
        } else {
            Verdict::Change
        }
    }

    fn other_mount(&self, st: &Stx) -> bool {
        st.mount_root || st.dev != self.dev || (self.mnt_id.is_some() && st.mnt_id != self.mnt_id)
    }

    /// One directory: every entry opened `O_PATH|O_NOFOLLOW`, stated and changed through
    /// that one descriptor (a name swapped in between cannot be what is changed);
    /// subdirectories queued.
    fn directory(&self, job: Job) -> Result<()> {
        let Some(fd) = self.enter(job)? else {
            return Ok(());
        };
        let names: Vec<CString> = nix::dir::Dir::from_fd(fd.try_clone().context("dup")?)
            .context("reading directory")?
            .into_iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        let fd = Arc::new(fd);
        let mut stats = TreeStats::default();
        let mut children = Vec::new();
        for name in names {
            // A first look by name: what needs no change costs one statx, as a walk by name.
            let st = match statx_at(&*fd, name.as_c_str(), StatxAt::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue, // removed meanwhile
                Err(e) => return Err(e).context("statx"),
            };
            let verdict = self.judge(&st);
            if verdict != Verdict::Mount && st.is_dir() {
                children.push(Job::Child(fd.clone(), name.clone(), st.ino));
            }
            if verdict != Verdict::Change {
                stats.count(verdict);
                continue;
            }
            // To change it: judged again, and changed, through one descriptor.
            let entry = match openat(&*fd, name.as_c_str(), ENTRY_FLAGS, Mode::empty()) {
                Ok(entry) => entry,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e).context("opening an entry"),
            };
            let st = statx_at(&entry, c"", StatxAt::EMPTY_PATH).context("statx")?;
            let verdict = self.judge(&st);
            if verdict == Verdict::Change {
                let (u, g) = (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)));
                fchownat(&entry, "", u, g, AtFlags::AT_EMPTY_PATH).context("chown")?;
            }
            stats.count(verdict);
        }
        if !children.is_empty() {
            self.pending.fetch_add(children.len(), Ordering::SeqCst);
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.extend(children);
            self.wake.notify_all();
        }
        let mut total = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        total.changed += stats.changed;
        total.already_right += stats.already_right;
        total.skipped_hard_links += stats.skipped_hard_links;
        total.skipped_mounts += stats.skipped_mounts;
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Neither changed nor entered.
    Mount,
    Right,
    /// A non-directory with several links: another may lie outside the chroot.
    HardLink,
    Change,
}

impl TreeStats {
    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Mount => self.skipped_mounts += 1,
            Verdict::Right => self.already_right += 1,
            Verdict::HardLink => self.skipped_hard_links += 1,
            Verdict::Change => self.changed += 1,
        }
    }
}

/// What the walk needs of an entry, from `statx`.
struct Stx {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    ino: u64,
    dev: u64,
    mount_root: bool,
    mnt_id: Option<u64>,
}

impl Stx {
    fn is_dir(&self) -> bool {
        self.mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
    }
}

/// `statx(dir, name, flags)`, asking for the mount id (nix has no statx; rustix's is safe).
fn statx_at(dir: impl AsFd, name: &std::ffi::CStr, flags: StatxAt) -> nix::Result<Stx> {
    let b = rustix::fs::statx(
        dir,
        name,
        flags | StatxAt::STATX_SYNC_AS_STAT,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    )
    .map_err(|e| Errno::from_raw(e.raw_os_error()))?;
    let root = StatxAttributes::MOUNT_ROOT;
    Ok(Stx {
        mode: u32::from(b.stx_mode),
        uid: b.stx_uid,
        gid: b.stx_gid,
        nlink: b.stx_nlink,
        ino: b.stx_ino,
        dev: rustix::fs::makedev(b.stx_dev_major, b.stx_dev_minor),
        mount_root: b.stx_attributes_mask.contains(root) && b.stx_attributes.contains(root),
        mnt_id: (b.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(b.stx_mnt_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn chown_below_skips_what_is_right_and_never_follows_links() {
        if !nix::unistd::geteuid().is_root() {
            return; // needs root to chown; covered by the integration tests under CI
        }
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("vol");
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        std::fs::write(top.join("a/b/f"), "x").unwrap();
        std::fs::write(top.join("right"), "x").unwrap();
        std::os::unix::fs::chown(top.join("right"), Some(7), Some(8)).unwrap();
        let outside = t.path().join("outside");
        std::fs::write(&outside, "host").unwrap();
        std::os::unix::fs::symlink(&outside, top.join("link")).unwrap();
        std::fs::hard_link(&outside, top.join("hard")).unwrap();
        let fd = nix::fcntl::open(&top, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let stats = chown_below(&fd, 7, 8).unwrap();
        assert_eq!(
            stats,
            TreeStats {
                changed: 4,
                already_right: 1,
                skipped_hard_links: 1,
                skipped_mounts: 0
            }
        );
        for p in ["a", "a/b", "a/b/f", "link"] {
            let m = std::fs::symlink_metadata(top.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (7, 8), "{p}");
        }
        let m = std::fs::metadata(&outside).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (0, 0),
            "neither the symlink's target nor the hard link's"
        );
        assert_eq!(
            std::fs::metadata(&top).unwrap().uid(),
            0,
            "the top is the caller's"
        );
    }

    fn m(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        serde_json::from_value(serde_json::json!({"containerID": c, "hostID": h, "size": s}))
            .unwrap()
    }

    #[test]
    fn identity_without_userns() {
        assert_eq!(map_id(&[], 0, "uid").unwrap(), 0);
        assert_eq!(map_id(&[], 1000, "uid").unwrap(), 1000);
    }

    #[test]
    fn maps_through_ranges() {
        let maps = [m(0, 100000, 1000), m(1000, 5000, 1), m(1001, 101001, 64535)];
        assert_eq!(map_id(&maps, 0, "uid").unwrap(), 100000);
        assert_eq!(map_id(&maps, 999, "uid").unwrap(), 100999);
        assert_eq!(map_id(&maps, 1000, "uid").unwrap(), 5000);
        assert_eq!(map_id(&maps, 1001, "uid").unwrap(), 101001);
        let err = map_id(&maps, 65536, "uid").unwrap_err().to_string();
        assert!(err.contains("not mapped"), "{err}");
    }

    fn view(uid: &[LinuxIdMapping], user: (u32, u32)) -> View {
        let mut v = View::of(&serde_json::json!({}), std::path::Path::new("/")).unwrap();
        v.uid_mappings = uid.to_vec();
        v.gid_mappings = uid.to_vec();
        v.user = user;
        v
    }

    #[test]
    fn an_idmapped_mount_with_the_containers_mappings_wants_the_unmapped_id() {
        let v = view(&[m(0, 100000, 65536)], (1000, 1000));
        let own = MountIdmap::default();
        assert_eq!(
            disk_owner(Owner::ContainerRoot, false, &v, None).unwrap(),
            (100000, 100000)
        );
        assert_eq!(
            disk_owner(Owner::ContainerRoot, false, &v, Some(&own)).unwrap(),
            (0, 0)
        );
        assert_eq!(
            disk_owner(Owner::ProcessUser, false, &v, Some(&own)).unwrap(),
            (1000, 1000)
        );
        // No user namespace: an idmap without mappings changes nothing.
        let plain = view(&[], (0, 0));
        assert_eq!(
            disk_owner(Owner::ContainerRoot, false, &plain, Some(&own)).unwrap(),
            (0, 0)
        );
    }

    #[test]
    fn an_idmapped_mount_with_mappings_of_its_own_is_seen_through_them() {
        let v = view(&[m(0, 100000, 65536)], (0, 0));
        let own = |maps: Vec<LinuxIdMapping>| MountIdmap {
            uid_mappings: maps.clone(),
            gid_mappings: maps,
            recursive: false,
        };
        // On-disk 5000 shows as 100000, the container's root.
        let shifted = own(vec![m(5000, 100000, 10)]);
        assert_eq!(
            disk_owner(Owner::ContainerRoot, false, &v, Some(&shifted)).unwrap(),
            (5000, 5000)
        );
        // A mapping that never shows the container's root: refused, not guessed.
        let err = disk_owner(
            Owner::ContainerRoot,
            false,
            &v,
            Some(&own(vec![m(0, 0, 10)])),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not mapped by the mount"), "{err}");
        let half = MountIdmap {
            uid_mappings: vec![m(0, 100000, 10)],
            ..Default::default()
        };
        assert!(disk_owner(Owner::ContainerRoot, false, &v, Some(&half)).is_err());
    }

    #[test]
    fn overflowing_mappings_are_refused() {
        assert!(unmap_id(&[m(u32::MAX, 0, 2)], 0, "uid").is_err());
        assert!(map_id(&[m(0, u32::MAX - 10, 65536)], 0, "uid").is_err());
        assert!(map_id(&[m(u32::MAX, 0, 2)], 0, "uid").is_err());
        assert!(map_id(&[m(0, u32::MAX - 1, 2)], 1, "uid").is_err());
    }
}
