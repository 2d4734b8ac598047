//! What can go wrong while resolving: each error names the path (as the host sees it) and,
//! for a failed call, the operation. The texts are the ones users and tests grep for.

use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More than Linux's 40 symlinks in one resolution (a loop, most likely).
    #[error("{}: too many levels of symbolic links", .path.display())]
    TooManyLinks { path: PathBuf },

    #[error("{}: symlink with an empty target", .path.display())]
    EmptySymlink { path: PathBuf },

    /// A component that more follow is not a directory.
    #[error("{} is a {kind}, not a directory", .path.display())]
    NotADirectory { path: PathBuf, kind: Kind },

    /// The walk went deeper than a source may be.
    #[error("{} resolves to more than {max} components", .path.display())]
    TooDeep { path: PathBuf, max: usize },

    /// Creation went on failing: something deletes what is created.
    #[error("{} keeps changing while it is prepared; gave up", .path.display())]
    KeepsChanging { path: PathBuf },

    /// A directory on the way to a chroot that someone untrusted could swap.
    #[error(
        "{} is not root's or is writable by others: refusing the chroot {}",
        .dir.display(),
        .chroot.display()
    )]
    Untrusted { dir: PathBuf, chroot: PathBuf },

    /// An untrusted entry on the way to a chroot, in a sticky directory writable by others.
    #[error(
        "{} is not root's, in a directory writable by others: refusing the chroot",
        .dir.display()
    )]
    UntrustedBelowSticky { dir: PathBuf },

    /// A root opened with no symlink allowed on its path has one.
    #[error("{} goes through a symlink", .path.display())]
    GoesThroughSymlink { path: PathBuf },

    /// A directory on the way to a chroot (or the chroot) is a symlink.
    #[error("{} is a symlink", .path.display())]
    Symlink { path: PathBuf },

    #[error("{} is not a directory", .path.display())]
    NotADir { path: PathBuf },

    /// What was just made (or a racer's) cannot be opened as a directory.
    #[error("{} is not a directory (or is a symlink)", .path.display())]
    NotADirOrSymlink { path: PathBuf },

    #[error("{} does not exist", .path.display())]
    DoesNotExist { path: PathBuf },

    /// A component of a walk could not be opened.
    #[error("{}: {}", .path.display(), .errno.desc())]
    Open { path: PathBuf, errno: Errno },

    /// `mkdir` of a missing chroot failed.
    #[error("creating the chroot {}: {}", .path.display(), .errno.desc())]
    MakeChroot { path: PathBuf, errno: Errno },

    /// A system call failed: `op` and `path` ("" when the call had only a descriptor).
    #[error("{op}{}: {errno}", Sep(path))]
    Sys {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },

    /// The caller's creation callback failed: its error, as it is.
    #[error(transparent)]
    Create(anyhow::Error),
}

impl Error {
    /// A failed call on a descriptor, whose path is not known here.
    pub(crate) fn fd(op: &'static str) -> impl FnOnce(Errno) -> Error {
        move |errno| Error::Sys {
            op,
            path: PathBuf::new(),
            errno,
        }
    }

    /// A failed call on `path`.
    pub(crate) fn sys(op: &'static str, path: &Path, errno: Errno) -> Error {
        Error::Sys {
            op,
            path: path.to_path_buf(),
            errno,
        }
    }
}

/// " <path>", or nothing for an empty path.
struct Sep<'a>(&'a Path);

impl std::fmt::Display for Sep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.as_os_str().is_empty() {
            Ok(())
        } else {
            write!(f, " {}", self.0.display())
        }
    }
}
