//! Why a mount is refused: one typed reason per case, whose text is what `plan`, the log and
//! the engine's error show. Callers and tests match the variant, never the words.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;

use crate::chroot::{Misplaced, PATH_MAX};
use crate::resolve::Kind;
use crate::wanted::Wanted;

/// Why one mount cannot be prepared. The container is refused before anything changes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Where the source lies (`chroot::place`).
    #[error(transparent)]
    Misplaced(#[from] Misplaced),

    // A source in no chroot, with `host_sources` set (`host_sources::check`).
    #[error(
        "is in no chroot and matches no host_sources entry: only the listed host paths may be mounted from outside the chroots"
    )]
    HostSourceNotListed,
    /// Listed as given, but its host symlinks lead to a path the list does not hold (where,
    /// is not said: the message reaches the container's owner).
    #[error(
        "is listed in host_sources, but leads through a symlink on the host to a path host_sources does not list"
    )]
    HostSourceLeadsOff,

    // The chroot.
    #[error("chroot {} does not exist (create_chroots = false)", .chroot.display())]
    ChrootMissing { chroot: PathBuf },
    /// The chroot cannot be trusted or opened (a swappable ancestor, a symlink...).
    #[error("chroot {0}")]
    Chroot(Cause),

    // The source inside its chroot.
    /// Resolving the source inside the chroot failed (a symlink loop, a file on the way...).
    #[error("{0}")]
    Resolve(Cause),
    #[error("resolves to the chroot itself")]
    ResolvesToChroot,
    #[error("resolves inside the chroot to a path longer than PATH_MAX")]
    ResolvedTooLong,
    /// config.json is UTF-8: such a source could not be written back.
    #[error("resolves inside the chroot to {}, which is not UTF-8", .resolved.display())]
    ResolvedNotUtf8 { resolved: PathBuf },
    #[error(
        "goes through a symlink (inside the chroot: {}); an OCI hook cannot rewrite the mount: use the precreate hook or oci-volume-runtime",
        .resolved.display()
    )]
    HookCannotRewrite { resolved: PathBuf },

    // What is found against what is wanted (`prepare::fit`).
    #[error("is a non-empty directory, but {wanted}")]
    NonEmptyDir { wanted: Wanted },
    #[error("is a regular file, but {wanted}")]
    FileForDir { wanted: Wanted },
    #[error("is a {kind}, not a regular file or directory")]
    Special { kind: Kind },
    /// Its other names may lie outside the chroot: its owner is never changed.
    #[error(
        "is a file with {links} hard links; its owner is not changed, as another link may lie outside the chroot"
    )]
    HardLinked { links: u64 },
    /// The source would need creating or repairing, which the container's annotation turned
    /// off: handing the runtime a path it would resolve itself is never the fallback.
    #[error(
        "would need {needs}, but annotation io.oci-volume-hook.enabled=\"false\" turns creation, repair and ownership off for this container"
    )]
    DisabledByAnnotation { needs: &'static str },
    /// The source lies in the rootfs where an earlier mount of the same container lands:
    /// runc would mount what that mount shows there, not the path the tool checked.
    #[error(
        "lies in the rootfs below the destination of an earlier mount ({}): runc would mount what that mount shows there, which cannot be checked or pinned",
        .destination.display()
    )]
    UnderEarlierMount { destination: PathBuf },
    #[error("{what}: {errno}")]
    Io { what: &'static str, errno: Errno },
}

impl Refusal {
    /// Whether the refusal is the chroot's, shared by every mount in it (logged once).
    pub fn is_the_chroots(&self) -> bool {
        matches!(self, Refusal::Chroot(_) | Refusal::ChrootMissing { .. })
    }
}

/// A lower-level error behind a refusal, shared by every mount it concerns (one chroot may
/// hold many mounts), shown with its causes as `anyhow` shows a chain.
#[derive(Clone)]
pub struct Cause(Arc<anyhow::Error>);

impl Cause {
    pub fn new(e: impl Into<anyhow::Error>) -> Cause {
        Cause(Arc::new(e.into()))
    }

    /// The error itself, to match on its kind (`downcast_ref`).
    pub fn error(&self) -> &anyhow::Error {
        &self.0
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

/// The error that refuses a whole container: the first refused mount's line (others are
/// logged), and that mount's typed reason.
#[derive(Debug, thiserror::Error)]
#[error("{line}")]
pub struct Refused {
    pub line: String,
    /// The refused mount's position in config.json's mounts.
    pub index: usize,
    pub refusal: Refusal,
}

/// A path as a message shows it: whole up to PATH_MAX, else its start and its length (a
/// refused 30 MB source must not make a 30 MB log line).
pub fn shorten(path: &Path) -> String {
    let text = path.display().to_string();
    if text.len() <= PATH_MAX {
        return text;
    }
    let mut end = 256;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}
