//! Path resolution inside a root: symlinks resolve as if the root were `/`, `..` never climbs
//! above it, and every step is taken through a descriptor.
//!
//! Each component is opened with `O_PATH|O_NOFOLLOW` relative to the descriptor of its
//! parent; symlinks are read through their own descriptor and spliced into the walk, absolute
//! ones restarting at the root; `..` pops the stack of descriptors already held, so it can
//! never reach a directory the walk did not pass through. Nothing is re-resolved by path.
//! (pathrs offers the same guarantees for whole paths, but a walk that stops at the first
//! missing component and reports where it stopped is what creation needs.)

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, mkdirat};

/// Linux's own limit on symlinks in one resolution.
const MAX_SYMLINKS: u32 = 40;

/// The type of a file, as far as the tool cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    pub fn of(stat: &FileStat) -> Kind {
        match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            SFlag::S_IFIFO => Kind::Fifo,
            SFlag::S_IFSOCK => Kind::Socket,
            SFlag::S_IFCHR => Kind::CharDevice,
            SFlag::S_IFBLK => Kind::BlockDevice,
            _ => Kind::File,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Dir => "directory",
            Kind::File => "regular file",
            Kind::Symlink => "symlink",
            Kind::Fifo => "FIFO",
            Kind::Socket => "socket",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
        })
    }
}

/// An `O_PATH` descriptor with the stat taken through it.
#[derive(Debug)]
pub struct Node {
    pub fd: OwnedFd,
    pub stat: FileStat,
    pub kind: Kind,
}

impl Node {
    pub fn from_fd(fd: OwnedFd) -> Result<Node> {
        let stat = fstat(&fd).context("fstat")?;
        Ok(Node {
            kind: Kind::of(&stat),
            fd,
            stat,
        })
    }
}

/// An existing path, fully resolved.
#[derive(Debug)]
pub struct Found {
    pub node: Node,
    /// The parent directory and the name in it; `None` when the path resolved to the root.
    pub parent: Option<(OwnedFd, OsString)>,
    /// Where it is, relative to the root, with no symlinks left.
    pub rel: PathBuf,
    /// Whether a symlink was followed on the way.
    pub via_symlink: bool,
}

/// The first component that does not exist.
#[derive(Debug)]
pub struct Missing {
    /// The directory it would be created in.
    pub parent: OwnedFd,
    pub name: OsString,
    /// `parent`'s path relative to the root.
    pub parent_rel: PathBuf,
    /// Whether more components follow the missing one (it must then be a directory).
    pub is_last: bool,
    /// The components after the missing one, as the walk would have taken them.
    pub rest: Vec<OsString>,
    pub via_symlink: bool,
}

impl Missing {
    /// Everything that is missing, relative to the root: `a/b/c` when `a` is.
    pub fn whole(&self) -> PathBuf {
        let mut p = self.parent_rel.join(&self.name);
        for c in &self.rest {
            p.push(c);
        }
        p
    }
}

/// Creates a missing `name` in the directory `parent` (`true`: it is the last component):
/// the walk then opens whatever the name holds, created by this call or by a racing one.
/// Its arguments: the parent's descriptor and path relative to the root, the name, and
/// whether it is the last component.
pub type Create<'a> = &'a mut dyn FnMut(BorrowedFd<'_>, &Path, &OsStr, bool) -> Result<()>;

/// Missing components one walk may create (each racing deletion costs one more).
const MAX_CREATIONS: usize = 4 * crate::chroot::MAX_COMPONENTS;

/// What opening a chroot found.
#[derive(Debug)]
pub enum Chroot {
    Open(Root),
    /// Only the chroot itself is missing; every directory above it passed the checks.
    Missing,
}

#[derive(Debug)]
pub enum Lookup {
    Found(Found),
    Missing(Missing),
}

/// A directory that paths are resolved in as if it were `/`.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens the root itself. Its own path is the operator's (a configured chroot, a bundle's
    /// rootfs) but no symlink is followed on it: a chroot swapped for a link is refused.
    pub fn open(path: &Path) -> Result<Root> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = match openat2(nix::fcntl::AT_FDCWD, path, how) {
            Ok(fd) => fd,
            // Kernels before 5.6: the last component at least must not be a symlink.
            Err(Errno::ENOSYS) => {
                open_nofollow(nix::fcntl::AT_FDCWD, path.as_os_str(), OFlag::O_DIRECTORY)?
            }
            Err(Errno::ELOOP) => bail!("{} goes through a symlink", path.display()),
            Err(Errno::ENOTDIR) => bail!("{} is not a directory", path.display()),
            Err(Errno::ENOENT) => bail!("{} does not exist", path.display()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens a directory whose path the engine gave (a bundle's rootfs): trusted, so the
    /// host's symlinks on it are followed (`/var/lib/docker` may live on another disk), but
    /// resolved once; everything after goes through the descriptor.
    pub fn open_trusted(path: &Path) -> Result<Root> {
        let fd = match openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOTDIR) => bail!("{} is not a directory", path.display()),
            Err(Errno::ENOENT) => bail!("{} does not exist", path.display()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens a tenant chroot, refusing one that someone other than root could swap: every
    /// directory from `/` down to it must be root's and not writable by others — unless
    /// sticky (like /var/tmp) with a root-owned entry below it — and none a symlink.
    pub fn open_chroot(path: &Path) -> Result<Root> {
        match Root::chroot(path, false)? {
            Chroot::Open(root) => Ok(root),
            Chroot::Missing => bail!("{} does not exist", path.display()),
        }
    }

    /// Like [`open_chroot`](Self::open_chroot), telling a chroot that is merely missing
    /// apart; with `create`, makes it: a plain directory, root:root, 0755 — the platform's,
    /// never the container's. A racing creator's directory is taken as it is found.
    pub fn chroot(path: &Path, create: bool) -> Result<Chroot> {
        let mut cur = open_nofollow(
            nix::fcntl::AT_FDCWD,
            std::ffi::OsStr::new("/"),
            OFlag::O_DIRECTORY,
        )?;
        let mut shown = PathBuf::from("/");
        let comps: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        for (i, name) in comps.iter().enumerate() {
            let st = fstat(&cur).context("fstat")?;
            let writable_by_others = st.st_mode & 0o022 != 0;
            let sticky = st.st_mode & 0o1000 != 0;
            if st.st_uid != 0 || (writable_by_others && !sticky) {
                bail!(
                    "{} is not root's or is writable by others: refusing the chroot {}",
                    shown.display(),
                    path.display()
                );
            }
            shown.push(name);
            cur = match openat(
                &cur,
                *name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ELOOP | Errno::ENOTDIR) if is_symlink(&cur, name) => {
                    bail!("{} is a symlink", shown.display())
                }
                Err(Errno::ENOTDIR) => bail!("{} is not a directory", shown.display()),
                Err(Errno::ENOENT) if i + 1 == comps.len() && !create => {
                    return Ok(Chroot::Missing);
                }
                Err(Errno::ENOENT) if i + 1 == comps.len() => create_chroot(&cur, name, &shown)?,
                Err(Errno::ENOENT) => bail!("{} does not exist", shown.display()),
                Err(e) => return Err(e).with_context(|| format!("opening {}", shown.display())),
            };
            // Below a sticky, world-writable directory only root's entries are safe from swaps.
            if writable_by_others && fstat(&cur).context("fstat")?.st_uid != 0 {
                bail!(
                    "{} is not root's, in a directory writable by others: refusing the chroot",
                    shown.display()
                );
            }
        }
        Ok(Chroot::Open(Root {
            fd: cur,
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The host path of something at `rel` inside the root.
    pub fn host_path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// The fast path for the common case, a path that exists and has no symlink on it: one
    /// `openat2` that refuses symlinks, `..` and magic links. `None` means "walk instead".
    pub fn lookup_plain(&self, rel: &Path) -> Option<Node> {
        let fd = open_beneath(self.fd.as_fd(), rel)?;
        // A final symlink comes back as itself (O_PATH|O_NOFOLLOW): that is the walk's job.
        Node::from_fd(fd).ok().filter(|n| n.kind != Kind::Symlink)
    }

    /// The stat of `rel` (the root itself when empty) if it is reached with no symlink.
    pub fn stat_plain(&self, rel: &Path) -> Option<FileStat> {
        if rel.as_os_str().is_empty() {
            return fstat(&self.fd).ok();
        }
        self.lookup_plain(rel).map(|n| n.stat)
    }

    /// Resolves `rel` inside the root, stopping at the first missing component.
    pub fn lookup(&self, rel: &Path) -> Result<Lookup> {
        self.walk(rel, None)
    }

    /// Resolves `rel` inside the root; with `create`, each missing component is made from
    /// the descriptor of its parent and the walk goes on from there, so a path of n missing
    /// components costs O(n), not a walk from the root per component.
    pub fn walk(&self, rel: &Path, mut create: Option<Create<'_>>) -> Result<Lookup> {
        let mut queue: VecDeque<OsString> = VecDeque::new();
        push_front(&mut queue, rel);
        let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
        let mut links = 0;
        let mut creations = 0;
        let mut via_symlink = false;
        while let Some(name) = queue.pop_front() {
            if stack.len() > crate::chroot::MAX_COMPONENTS {
                bail!(
                    "{} resolves to more than {} components",
                    self.host_path(rel).display(),
                    crate::chroot::MAX_COMPONENTS
                );
            }
            if name == ".." {
                stack.pop();
                continue;
            }
            let cur = stack.last().map_or(self.fd.as_fd(), |(fd, _)| fd.as_fd());
            let fd = match openat(
                cur,
                name.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create.is_some() && creations < MAX_CREATIONS => {
                    creations += 1;
                    let cur = stack.last().map_or(self.fd.as_fd(), |(fd, _)| fd.as_fd());
                    let make = create.as_mut().expect("checked");
                    make(cur, &rel_of(&stack), &name, queue.is_empty())?;
                    queue.push_front(name);
                    continue;
                }
                Err(Errno::ENOENT) if create.is_some() => {
                    bail!(
                        "{} keeps changing while it is prepared; gave up",
                        self.show(&stack, &name)
                    )
                }
                Err(Errno::ENOENT) => {
                    let parent_rel = rel_of(&stack);
                    let parent = match stack.pop() {
                        Some((fd, _)) => fd,
                        None => nix::unistd::dup(&self.fd).context("dup")?,
                    };
                    let is_last = queue.is_empty();
                    return Ok(Lookup::Missing(Missing {
                        parent,
                        name,
                        parent_rel,
                        is_last,
                        rest: queue.into_iter().collect(),
                        via_symlink,
                    }));
                }
                Err(e) => bail!("{}: {}", self.show(&stack, &name), e.desc()),
            };
            let node = Node::from_fd(fd)?;
            if node.kind == Kind::Symlink {
                links += 1;
                if links > MAX_SYMLINKS {
                    bail!(
                        "{}: too many levels of symbolic links",
                        self.show(&stack, &name)
                    );
                }
                let target = readlinkat(&node.fd, "").context("readlink")?;
                if target.is_empty() {
                    bail!("{}: symlink with an empty target", self.show(&stack, &name));
                }
                let target = Path::new(&target);
                if target.is_absolute() {
                    stack.clear();
                }
                push_front(&mut queue, target);
                via_symlink = true;
                continue;
            }
            if !queue.is_empty() && node.kind != Kind::Dir {
                bail!(
                    "{} is a {}, not a directory",
                    self.show(&stack, &name),
                    node.kind
                );
            }
            stack.push((node.fd, name));
        }
        let rel = rel_of(&stack);
        let (node, parent) = match stack.pop() {
            Some((fd, name)) => {
                let parent = match stack.pop() {
                    Some((p, _)) => p,
                    None => nix::unistd::dup(&self.fd).context("dup")?,
                };
                (Node::from_fd(fd)?, Some((parent, name)))
            }
            None => (
                Node::from_fd(nix::unistd::dup(&self.fd).context("dup")?)?,
                None,
            ),
        };
        Ok(Lookup::Found(Found {
            node,
            parent,
            rel,
            via_symlink,
        }))
    }

    fn show(&self, stack: &[(OwnedFd, OsString)], name: &OsStr) -> String {
        self.host_path(&rel_of(stack).join(name))
            .display()
            .to_string()
    }
}

/// Makes the missing chroot `name` in `parent` (already checked): root:root, 0755 whatever
/// the umask. `EEXIST`: a concurrent first container made it; it is opened like any chroot.
fn create_chroot(parent: &OwnedFd, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
    match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {
            let dir = openat(
                parent,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening the new chroot {}", shown.display()))?;
            nix::unistd::fchown(&dir, Some(0.into()), Some(0.into()))
                .and_then(|()| fchmod(&dir, Mode::from_bits_truncate(0o755)))
                .with_context(|| format!("creating the chroot {}", shown.display()))?;
            tracing::info!("created the chroot {}", shown.display());
        }
        Err(Errno::EEXIST) => {}
        Err(e) => bail!("creating the chroot {}: {}", shown.display(), e.desc()),
    }
    match openat(
        parent,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            bail!("{} is not a directory (or is a symlink)", shown.display())
        }
        Err(e) => Err(e).with_context(|| format!("opening {}", shown.display())),
    }
}

/// Opens `rel` below `dir` in one `openat2` that refuses symlinks, `..` and magic links
/// (a final symlink comes back as itself). `None`: not so reachable, or not there.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &Path) -> Option<OwnedFd> {
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    openat2(dir, rel, how).ok()
}

/// Opens `name` in `dir` without following a final symlink.
pub fn open_nofollow<Fd: AsFd>(dir: Fd, name: &OsStr, extra: OFlag) -> Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", Path::new(name).display()))
}

fn is_symlink(dir: &OwnedFd, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits())
}

fn rel_of(stack: &[(OwnedFd, OsString)]) -> PathBuf {
    stack.iter().map(|(_, n)| n.as_os_str()).collect()
}

/// Puts the components of `path` in front of the queue; `.` and the root are dropped.
fn push_front(queue: &mut VecDeque<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => queue.push_front(n.to_os_string()),
            Component::ParentDir => queue.push_front("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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
        assert!(Root::open(&t.path().join("link")).is_err());
        assert!(Root::open(&t.path().join("real")).is_ok());
        assert!(Root::open(&t.path().join("nope")).is_err());
    }
}

// TEMPORARY shim until the resolve rework lands (Host seam).
pub struct Host;
impl Host {
    pub fn real() -> Result<Host> {
        Ok(Host)
    }
    #[cfg(test)]
    pub(crate) fn fake(_: &Path) -> Host {
        Host
    }
}
impl Root {
    pub fn chroot_in(_host: &Host, path: &Path, create: bool) -> Result<Chroot> {
        Root::chroot(path, create)
    }
}
