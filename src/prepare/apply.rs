//! Bringing one planned source to its state, through descriptors only: create what is
//! missing (`O_EXCL|O_NOFOLLOW`, `mkdirat`), repair an empty directory (`rmdir`), give it to
//! its owner (`fchownat` on the descriptor).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, unlinkat};

use super::*;
use crate::config::Ownership;
use crate::ownership;
use crate::resolve::{self, Lookup, open_nofollow};

impl Preparer<'_> {
    /// Brings one source to the planned state; returns its in-chroot path if it must be
    /// rewritten. One walk creates what is missing, each component from its parent's
    /// descriptor; only a repair (rmdir, then create) walks again.
    pub(super) fn apply(&mut self, m: &ChrootMount) -> Result<(Option<PathBuf>, Node)> {
        let wanted = &m.wanted;
        let (want, owner, ownership) = (wanted.want, m.owner, m.chowning());
        let create_chroots = self.config.create_chroots;
        let root = self.open_root(&m.chroot, create_chroots)?;
        let seed = m.seed_from.as_deref();
        let finish = |fd: &OwnedFd| match ownership {
            Ownership::None => Ok(()),
            _ => chown(fd, owner),
        };
        for _ in 0..MAX_ROUNDS {
            let mut make = |parent: BorrowedFd<'_>, at: &Path, name: &OsStr, last: bool| {
                let path = root.host_path(&at.join(name));
                create(
                    parent,
                    name,
                    &path,
                    last && want == Want::File,
                    seed,
                    finish,
                )
            };
            let f = match root.walk(&m.rel, Some(&mut make))? {
                Lookup::Found(f) => f,
                Lookup::Missing(miss) => bail!(
                    "{} could not be created",
                    root.host_path(&miss.whole()).display()
                ),
            };
            let Some((parent, name)) = &f.parent else {
                bail!(Refusal::ResolvesToChroot)
            };
            let path = root.host_path(&f.rel);
            let changed = |r: Refusal| anyhow!("{} {r}", path.display());
            match fit(want, f.node.kind) {
                Fit::DirForFile => remove_empty_dir(parent, name, &path, wanted)?,
                Fit::FileForDir => {
                    let wanted = wanted.clone();
                    return Err(changed(Refusal::FileForDir { wanted }));
                }
                Fit::Fits => {
                    if ownership != Ownership::None && chown_needed(&f.node, owner)? {
                        give(&f.node, &path, owner, ownership)?;
                    }
                    return Ok((f.via_symlink.then_some(path), f.node));
                }
                Fit::Special(kind) => return Err(changed(Refusal::Special { kind })),
            }
        }
        let path = m.source.clone();
        Err(resolve::Error::KeepsChanging { path }.into())
    }
}

/// Walks a source may take: a repair (rmdir, then create) needs two; a tenant racing the
/// tool may cost a few more.
const MAX_ROUNDS: usize = 16;

/// Creates the missing `name` in `parent`: the source file (`file`), else a directory. An
/// existing name (a racing creator's) is left as it is: the walk opens whatever it holds.
fn create(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    file: bool,
    seed: Option<&Path>,
    finish: impl Fn(&OwnedFd) -> Result<()>,
) -> Result<()> {
    if !file {
        match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) => {
                let fd = open_nofollow(parent, name, OFlag::O_DIRECTORY)?;
                finish(&fd)?;
                tracing::info!("created directory {}", path.display());
            }
            Err(Errno::EEXIST) => {}
            Err(e) => bail!("creating directory {}: {}", path.display(), e.desc()),
        }
        return Ok(());
    }
    let created = match seed {
        Some(host) => create_seeded(parent, name, host, finish),
        None => create_empty(parent, name, finish),
    };
    if created.with_context(|| format!("creating file {}", path.display()))? {
        match seed {
            Some(h) => tracing::info!(
                "created file {} from the host's {}",
                path.display(),
                h.display()
            ),
            None => tracing::info!("created file {}", path.display()),
        }
    }
    Ok(())
}

/// rmdir removes nothing but an empty directory, whatever the name now stands for.
fn remove_empty_dir(parent: &OwnedFd, name: &OsStr, path: &Path, wanted: &Wanted) -> Result<()> {
    match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
        Ok(()) => tracing::info!(
            "removed empty directory {} to make it a file",
            path.display()
        ),
        Err(Errno::ENOENT | Errno::ENOTDIR) => {}
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
            let wanted = wanted.clone();
            bail!("{} {}", path.display(), Refusal::NonEmptyDir { wanted })
        }
        Err(e) => bail!("removing empty directory {}: {}", path.display(), e.desc()),
    }
    Ok(())
}

/// Gives a source to `owner` (and, recursive-on-mismatch, what is below it): the top last,
/// so that an interrupted run sees the mismatch again and walks again.
fn give(node: &Node, path: &Path, owner: Owner, ownership: Ownership) -> Result<()> {
    if ownership == Ownership::RecursiveOnMismatch && node.kind == Kind::Dir {
        let stats = ownership::chown_below(&node.fd, owner.uid, owner.gid)
            .with_context(|| format!("changing owners below {}", path.display()))?;
        tracing::info!(
            "below {}: {} changed, {} already right, {} hard-linked entries and {} mount points left alone",
            path.display(),
            stats.changed,
            stats.already_right,
            stats.skipped_hard_links,
            stats.skipped_mounts
        );
    }
    chown(&node.fd, owner)?;
    tracing::info!("gave {} to {}:{}", path.display(), owner.uid, owner.gid);
    Ok(())
}

/// Creates an empty file with `O_CREAT|O_EXCL|O_NOFOLLOW`, then `finish`es it through its
/// descriptor. `false` when the name exists already, whatever it is.
fn create_empty(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    finish: impl Fn(&OwnedFd) -> Result<()>,
) -> Result<bool> {
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    match openat(parent, name, flags, Mode::from_bits_truncate(0o644)) {
        Ok(fd) => finish(&fd).map(|()| true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates a file holding a copy of the host file `host`: written and `finish`ed as an
/// unnamed `O_TMPFILE`, then linked in, so the name appears complete or not at all (`linkat`
/// fails with `EEXIST` like `O_EXCL`) and a failed copy leaves nothing behind.
fn create_seeded(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    host: &Path,
    finish: impl Fn(&OwnedFd) -> Result<()>,
) -> Result<bool> {
    let tmp = match openat(
        parent,
        ".",
        OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) {
        Ok(fd) => fd,
        // A filesystem without O_TMPFILE: an exclusive create, then the copy.
        Err(Errno::EOPNOTSUPP | Errno::EISDIR) => {
            return create_empty(parent, name, |fd| {
                copy_host_file(host, fd)?;
                finish(fd)
            });
        }
        Err(e) => return Err(e.into()),
    };
    copy_host_file(host, &tmp)?;
    finish(&tmp)?;
    match linkat(&tmp, "", parent, name, AtFlags::AT_EMPTY_PATH) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The host side is trusted: its symlinks are followed.
fn copy_host_file(host: &Path, to: &OwnedFd) -> Result<()> {
    let mut src =
        std::fs::File::open(host).with_context(|| format!("opening {}", host.display()))?;
    let mut dst = std::fs::File::from(to.try_clone()?);
    std::io::copy(&mut src, &mut dst).with_context(|| format!("copying {}", host.display()))?;
    Ok(())
}

/// Changes the owner of exactly the inode `fd` refers to (`O_PATH` descriptors included).
fn chown(fd: &OwnedFd, owner: Owner) -> Result<()> {
    fchownat(
        fd.as_fd(),
        "",
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
        AtFlags::AT_EMPTY_PATH,
    )
    .context("chown")
}
