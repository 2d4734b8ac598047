//! Registering the runtime wrapper with engines: dockerd (`daemon.json`), containerd's CRI
//! plugin and CRI-O. Every edit keeps the rest of the file, saves a backup, is idempotent,
//! and on bad input writes nothing.

mod cli;
pub mod containerd;
pub mod crio;
mod docker;
pub mod k3s;
pub mod wrapper_runtime;

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use crate::atomic::Durability;

pub use cli::{CriArgs, Engine, run};
pub use docker::{DEFAULT_DAEMON_JSON, docker};

/// The runtime (Docker) and runtime handler (CRI) name; the RuntimeClass's `handler`.
pub const RUNTIME_NAME: &str = "oci-volume";
/// Where the packages install the wrapper.
pub const DEFAULT_WRAPPER: &str = "/usr/bin/oci-volume-runtime";
/// The annotations the wrapper reads (`io.oci-volume-hook.enabled`, `.owner`, `.ownership`).
pub const ANNOTATION_PREFIX: &str = crate::config::ANNOTATION_PREFIX;
/// First line of every table this tool adds to a TOML file.
pub const MARK: &str =
    "# Added by oci-volume-hook; `oci-volume-hook configure ... --remove` takes it away.";

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to change.
    Unchanged,
    /// Written; the previous content (if any) saved at the backup path.
    Written { backup: Option<PathBuf> },
}

/// One file a CRI registration changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Written {
        path: PathBuf,
        backup: Option<PathBuf>,
    },
    Removed {
        path: PathBuf,
    },
    /// Nothing changed by it: a line the operator must read (which runtime the wrapper runs).
    Note(String),
}

/// Whether any file changed.
pub fn changed(changes: &[Change]) -> bool {
    changes.iter().any(|c| !matches!(c, Change::Note(_)))
}

/// What an engine must be told after its files changed.
pub fn describe(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Written {
                path,
                backup: Some(b),
            } => format!(
                "{} updated (previous version in {})",
                path.display(),
                b.display()
            ),
            Change::Written { path, backup: None } => format!("{} written", path.display()),
            Change::Removed { path } => format!("{} removed", path.display()),
            Change::Note(line) => line.clone(),
        })
        .collect()
}

/// `path` (absolute, as the host names it) seen from `root`: the host's `/` mounted in a
/// container (`--host-root`), else `/` itself. `..` is refused: a path must not climb out.
pub fn under(root: &Path, path: &Path) -> Result<PathBuf> {
    if root == Path::new("/") {
        // The machine's own files: a relative path stays relative to the working directory.
        return Ok(path.to_path_buf());
    }
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                anyhow::bail!("{}: `..` is not allowed here", path.display())
            }
        }
    }
    Ok(out)
}

/// The annotation keys a registration lets through to the wrapper: exactly the tool's
/// `allowed_annotations`, from its configuration as seen from `root` (the defaults when
/// there is none). An engine then drops every other `io.oci-volume-hook.*` key itself.
pub fn annotation_keys(root: &Path) -> Result<Vec<String>> {
    let config = if root == Path::new("/") {
        crate::config::Config::load(None)?
    } else {
        let file = under(root, Path::new(crate::config::DEFAULT_PATH))?;
        match read_optional(&file)? {
            Some(text) => crate::config::Config::parse(&text)
                .with_context(|| format!("config {}", file.display()))?,
            None => crate::config::Config::default(),
        }
    };
    Ok(config.allowed_annotation_keys())
}

/// An engine's list of annotations to pass (`list`, perhaps the operator's) with our keys
/// set to exactly `keys`: any other entry of ours (an older `io.oci-volume-hook.*`) taken out.
pub fn let_through(list: &[String], keys: &[String]) -> Vec<String> {
    let theirs = list.iter().filter(|k| !k.starts_with(ANNOTATION_PREFIX));
    theirs.chain(keys).cloned().collect()
}

/// The file's text, or None when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8; left unchanged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `<path>.oci-volume-hook.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".oci-volume-hook.bak");
    PathBuf::from(s)
}

/// Replaces `path` with `text` through a temporary file and a rename (a reader sees the old
/// file or the new one), keeping the mode and owner of the old one; `original` is saved as
/// the backup first, with the same mode and owner. Returns the backup's path.
pub fn replace_file(path: &Path, text: &str, original: Option<&[u8]>) -> Result<Option<PathBuf>> {
    let backup = match original {
        Some(bytes) => {
            let b = backup_path(path);
            let like = std::fs::metadata(path).ok();
            crate::atomic::replace_like(&b, bytes, Durability::Synced, like.as_ref())
                .with_context(|| format!("writing the backup {}", b.display()))?;
            Some(b)
        }
        None => None,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::atomic::replace(path, text.as_bytes(), Durability::Synced)?;
    Ok(backup)
}

/// A TOML parse error on one line: its position and what is wrong, without the source
/// excerpt toml_edit draws.
pub(crate) fn toml_error(path: &Path, e: &toml_edit::TomlError) -> anyhow::Error {
    let text = e.to_string();
    let mut parts = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "));
    let first = parts.next().unwrap_or("parse error").to_string();
    let reason = match parts.next_back() {
        Some(last) if last != first => format!("{first}: {last}"),
        _ => first,
    };
    anyhow::anyhow!(
        "{} is not valid TOML ({reason}); left unchanged",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allowed_keys_are_let_through() {
        let t = tempfile::tempdir().unwrap();
        let keys = annotation_keys(t.path()).unwrap();
        assert_eq!(
            keys,
            ["io.oci-volume-hook.enabled", "io.oci-volume-hook.ownership"]
        );
        let conf = t.path().join("etc/oci-volume-hook/config.toml");
        std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
        std::fs::write(&conf, "allow_annotations = false\n").unwrap();
        assert!(annotation_keys(t.path()).unwrap().is_empty());
        std::fs::write(
            &conf,
            "allowed_annotations = [\"io.oci-volume-hook.owner\"]\n",
        )
        .unwrap();
        assert_eq!(
            annotation_keys(t.path()).unwrap(),
            ["io.oci-volume-hook.owner"]
        );
        std::fs::write(&conf, "allowed_annotations = [\"io.oci-volume-hook.x\"]\n").unwrap();
        assert!(
            annotation_keys(t.path()).is_err(),
            "a bad config registers nothing"
        );
        let old = ["a.b/*".to_string(), "io.oci-volume-hook.*".to_string()];
        let keys = ["io.oci-volume-hook.enabled".to_string()];
        assert_eq!(
            let_through(&old, &keys),
            ["a.b/*", "io.oci-volume-hook.enabled"]
        );
    }

    #[test]
    fn under_joins_and_refuses_climbing() {
        let r = Path::new("/host");
        assert_eq!(
            under(r, Path::new("/etc/containerd/config.toml")).unwrap(),
            Path::new("/host/etc/containerd/config.toml")
        );
        assert_eq!(
            under(Path::new("/"), Path::new("/a/b")).unwrap(),
            Path::new("/a/b")
        );
        assert!(under(r, Path::new("/etc/../../x")).is_err());
    }
}
