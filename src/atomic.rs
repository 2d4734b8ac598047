//! Replacing a file in one rename: a reader sees the old content or the new, never a part.
//! The one helper for config.json (the wrapper) and the engines' files (`configure`).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Whether the new content must survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before the rename: an engine's configuration.
    Synced,
    /// No fsync: a bundle's config.json lives as long as its container, and a crash ends both.
    Volatile,
}

/// Replaces `path` with `bytes`, keeping its mode and owner (0644 and ours for a new file).
/// The temporary file is created exclusively under a name of this process's, so concurrent
/// writers never share one; it is removed if anything fails.
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> Result<()> {
    replace_like(
        path,
        bytes,
        durability,
        std::fs::metadata(path).ok().as_ref(),
    )
}

/// Like [`replace`], with the mode and owner of `like` (a backup takes its original's: a
/// 0600 file with credentials must not get a world-readable copy).
pub fn replace_like(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    like: Option<&std::fs::Metadata>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.oci-volume-hook.tmp",
        std::process::id()
    ));
    let write = || -> Result<()> {
        let mode = like.map_or(0o644, |m| m.mode() & 0o7777);
        // Created with the final mode (less the umask): never readable by more than that.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .open(&tmp)?;
        // One write: the content is in memory already.
        f.write_all(bytes)?;
        if let Some(m) = like {
            let ours = f.metadata()?;
            if (ours.uid(), ours.gid()) != (m.uid(), m.gid()) {
                std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            }
        }
        // After the chown, which clears set-id bits.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if durability == Durability::Synced {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_keeping_the_mode_and_leaves_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.json");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        replace(&p, b"new", Durability::Volatile).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let fresh = t.path().join("daemon.json");
        replace(&fresh, b"{}", Durability::Synced).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A directory in the way: an error naming the file, nothing left behind.
        let dir = t.path().join("d");
        std::fs::create_dir_all(dir.join("x")).unwrap();
        let e = replace(&dir, b"x", Durability::Volatile).unwrap_err();
        assert!(format!("{e:#}").contains("replacing"), "{e:#}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 3);
    }
}
