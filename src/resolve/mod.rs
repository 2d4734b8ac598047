//! Path resolution inside a root: symlinks resolve as if the root were `/`, `..` never climbs
//! above it, and every step is taken through a descriptor.
//!
//! Each component is opened with `O_PATH|O_NOFOLLOW` relative to the descriptor of its
//! parent; symlinks are read through their own descriptor and spliced into the walk, absolute
//! ones restarting at the root; `..` pops the stack of descriptors already held, so it can
//! never reach a directory the walk did not pass through. Nothing is re-resolved by path.
//! (pathrs offers the same guarantees for whole paths, but a walk that stops at the first
//! missing component and reports where it stopped is what creation needs.)
//!
//! Files: `walk.rs`, the component-by-component walk ([`Root::walk`], [`Root::lookup`]);
//! `trust.rs`, opening a tenant chroot from the host's `/` with its trust checks
//! ([`Root::chroot`], [`Host`]); `error.rs`, what goes wrong ([`Error`]), naming the path.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

mod error;
mod trust;
mod walk;

pub use error::{Error, Result};
pub use trust::{Chroot, Host};

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
        let stat = fstat(&fd).map_err(Error::fd("fstat"))?;
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
/// whether it is the last component. Its error comes back as [`Error::Create`].
pub type Create<'a> = &'a mut dyn FnMut(BorrowedFd<'_>, &Path, &OsStr, bool) -> anyhow::Result<()>;

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
            Err(e) => return Err(open_error(path, e, true)),
        };
        Ok(Root::at(fd, path))
    }

    /// Opens a directory whose path the engine gave (a bundle's rootfs): trusted, so the
    /// host's symlinks on it are followed (`/var/lib/docker` may live on another disk), but
    /// resolved once; everything after goes through the descriptor.
    pub fn open_trusted(path: &Path) -> Result<Root> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        match openat(nix::fcntl::AT_FDCWD, path, flags, Mode::empty()) {
            Ok(fd) => Ok(Root::at(fd, path)),
            Err(e) => Err(open_error(path, e, false)),
        }
    }

    fn at(fd: OwnedFd, path: &Path) -> Root {
        Root {
            fd,
            path: path.to_path_buf(),
        }
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
}

/// Why opening a root's own `path` failed; with `no_symlinks`, `ELOOP` means a symlink on
/// the way (a trusted path follows them: `ELOOP` is then just a failure).
fn open_error(path: &Path, e: Errno, no_symlinks: bool) -> Error {
    let path = path.to_path_buf();
    match e {
        Errno::ELOOP if no_symlinks => Error::GoesThroughSymlink { path },
        Errno::ENOTDIR => Error::NotADir { path },
        Errno::ENOENT => Error::DoesNotExist { path },
        errno => Error::Sys {
            op: "opening",
            path,
            errno,
        },
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
    .map_err(|e| Error::sys("opening", Path::new(name), e))
}

#[cfg(test)]
mod tests;
