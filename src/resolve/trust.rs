//! Opening a tenant chroot: the way from the host's `/` down to it must be one no one but
//! root could swap, and a missing chroot is created as the platform's, never the tenant's.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, mkdirat};

use super::{Error, Result, Root, open_nofollow};

/// What opening a chroot found.
#[derive(Debug)]
pub enum Chroot {
    Open(Root),
    /// Only the chroot itself is missing; every directory above it passed the checks.
    Missing,
}

/// Where chroot paths are resolved from, and who may own the directories above a chroot.
#[derive(Debug)]
pub struct Host {
    fd: OwnedFd,
    trusted_uid: u32,
    /// The group a created chroot gets.
    trusted_gid: u32,
}

impl Host {
    /// The machine's own `/`; only root is trusted.
    pub fn real() -> Result<Host> {
        Ok(Host {
            fd: open_nofollow(nix::fcntl::AT_FDCWD, OsStr::new("/"), OFlag::O_DIRECTORY)?,
            trusted_uid: 0,
            trusted_gid: 0,
        })
    }

    /// A temporary directory standing for `/`, trusting the user running the tests. Tests
    /// only: it relaxes the check that keeps tenants from swapping a chroot.
    #[cfg(test)]
    pub(crate) fn fake(dir: &Path) -> Host {
        Host {
            fd: open_nofollow(nix::fcntl::AT_FDCWD, dir.as_os_str(), OFlag::O_DIRECTORY)
                .expect("opening the fake host's /"),
            trusted_uid: nix::unistd::geteuid().as_raw(),
            trusted_gid: nix::unistd::getegid().as_raw(),
        }
    }
}

impl Root {
    /// Opens a tenant chroot, refusing one that someone other than root could swap: every
    /// directory from `/` down to it must be root's and not writable by others — unless
    /// sticky (like /var/tmp) with a root-owned entry below it — and none a symlink.
    pub fn open_chroot(path: &Path) -> Result<Root> {
        match Root::chroot(path, false)? {
            Chroot::Open(root) => Ok(root),
            Chroot::Missing => Err(Error::DoesNotExist {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Like [`open_chroot`](Self::open_chroot), telling a chroot that is merely missing
    /// apart; with `create`, makes it: a plain directory, root:root, 0755 — the platform's,
    /// never the container's. A racing creator's directory is taken as it is found.
    pub fn chroot(path: &Path, create: bool) -> Result<Chroot> {
        Root::chroot_in(&Host::real()?, path, create)
    }

    /// [`chroot`](Self::chroot) with `path` resolved below `host`'s directory, whose trusted
    /// user stands for root. The root keeps `path` as given, for its messages.
    pub fn chroot_in(host: &Host, path: &Path, create: bool) -> Result<Chroot> {
        let comps: Vec<&OsStr> = crate::chroot::names(path);
        let mut shown = PathBuf::from("/");
        let mut cur: Option<OwnedFd> = None;
        for (i, name) in comps.iter().enumerate() {
            let dir = cur.as_ref().map_or(host.fd.as_fd(), AsFd::as_fd);
            let shared = host.check_dir(dir, &shown, path)?;
            shown.push(name);
            let last = i + 1 == comps.len();
            let fd = match host.open_dir(dir, name, &shown, create && last) {
                // Only the chroot itself may be missing.
                Err(Error::DoesNotExist { .. }) if last => {
                    return Ok(Chroot::Missing);
                }
                r => r?,
            };
            // Below a sticky, world-writable directory only root's entries are safe from swaps.
            if shared && fstat(&fd).map_err(Error::fd("fstat"))?.st_uid != host.trusted_uid {
                return Err(Error::UntrustedBelowSticky { dir: shown });
            }
            cur = Some(fd);
        }
        let fd = match cur {
            Some(fd) => fd,
            None => nix::unistd::dup(&host.fd).map_err(Error::fd("dup"))?,
        };
        Ok(Chroot::Open(Root::at(fd, path)))
    }
}

impl Host {
    /// Refuses `dir` (shown as `shown`) on the way to `chroot` unless it is trusted's and
    /// not writable by others, or sticky; `true`: writable by others (and sticky).
    fn check_dir(&self, dir: BorrowedFd<'_>, shown: &Path, chroot: &Path) -> Result<bool> {
        let st = fstat(dir).map_err(Error::fd("fstat"))?;
        let writable_by_others = st.st_mode & 0o022 != 0;
        let sticky = st.st_mode & 0o1000 != 0;
        if st.st_uid != self.trusted_uid || (writable_by_others && !sticky) {
            return Err(Error::Untrusted {
                dir: shown.to_path_buf(),
                chroot: chroot.to_path_buf(),
            });
        }
        Ok(writable_by_others)
    }

    /// Opens the directory `name` in `dir`, never through a symlink; with `create`, makes
    /// it when it is missing.
    fn open_dir(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        shown: &Path,
        create: bool,
    ) -> Result<OwnedFd> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let path = || shown.to_path_buf();
        match openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::ELOOP | Errno::ENOTDIR) if is_symlink(dir, name) => {
                Err(Error::Symlink { path: path() })
            }
            Err(Errno::ENOTDIR) => Err(Error::NotADir { path: path() }),
            Err(Errno::ENOENT) if create => self.create_chroot(dir, name, shown),
            Err(Errno::ENOENT) => Err(Error::DoesNotExist { path: path() }),
            Err(errno) => Err(Error::sys("opening", shown, errno)),
        }
    }

    /// Makes the missing chroot `name` in `parent` (already checked): trusted's (root:root),
    /// 0755 whatever the umask. `EEXIST`: a concurrent first container made it; it is opened
    /// like any chroot.
    fn create_chroot(&self, parent: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
        match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
                let dir = openat(parent, name, flags | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| Error::sys("opening the new chroot", shown, e))?;
                let (uid, gid) = (self.trusted_uid.into(), self.trusted_gid.into());
                nix::unistd::fchown(&dir, Some(uid), Some(gid))
                    .and_then(|()| fchmod(&dir, Mode::from_bits_truncate(0o755)))
                    .map_err(|e| Error::sys("creating the chroot", shown, e))?;
                tracing::info!("created the chroot {}", shown.display());
            }
            Err(Errno::EEXIST) => {}
            Err(errno) => {
                let path = shown.to_path_buf();
                return Err(Error::MakeChroot { path, errno });
            }
        }
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        match openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::ELOOP | Errno::ENOTDIR) => Err(Error::NotADirOrSymlink {
                path: shown.to_path_buf(),
            }),
            Err(e) => Err(Error::sys("opening", shown, e)),
        }
    }
}

fn is_symlink(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits())
}
