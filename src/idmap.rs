//! Whether a bind mount can be made idmapped here (`ownership = "idmap"`): the runtime must
//! say so in its `features` (runc >= 1.2, crun >= 1.9), the kernel must have
//! `mount_setattr(MOUNT_ATTR_IDMAP)` (5.12), and the source's filesystem must allow it.
//!
//! The filesystem is judged by its type (`fstatfs`), once per filesystem and process: the
//! kernel allows idmapping per filesystem type (`FS_ALLOW_IDMAP`), and neither rustix nor nix
//! offers `mount_setattr`, which a trial idmapped mount would need (no `unsafe` here). A type
//! missing from the list only costs the fallback to chown.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

use serde_json::Value;

use crate::features;

/// Why idmapped ownership cannot be used, in the words of the one log line.
pub type Unsupported = String;

/// Filesystem types that can be idmapped, with the first kernel (major, minor) that allows it.
const IDMAPPABLE: &[(i64, &str, (u32, u32))] = &[
    (0xEF53, "ext2/3/4", (5, 12)),
    (0x5846_5342, "xfs", (5, 12)),
    (0x4d44, "vfat", (5, 12)),
    (0x9123_683E, "btrfs", (5, 15)),
    (0xF2F5_2010, "f2fs", (5, 18)),
    (0x794c_7630, "overlayfs", (5, 19)),
    (0x0102_1994, "tmpfs", (6, 3)),
];

/// The kernel's (major, minor), as `uname -r` says it.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether the kernel has idmapped mounts.
pub fn kernel_support() -> Result<(), Unsupported> {
    match kernel_version() {
        Some(v) if v >= (5, 12) => Ok(()),
        Some((a, b)) => Err(format!("kernel {a}.{b} has no idmapped mounts (5.12+)")),
        None => Err("the kernel's version cannot be read".into()),
    }
}

/// Whether the filesystem holding `fd` can be idmapped on this kernel.
pub fn filesystem_support(fd: impl AsFd) -> Result<(), Unsupported> {
    static KNOWN: Mutex<Option<HashMap<u64, Result<(), Unsupported>>>> = Mutex::new(None);
    let dev = nix::sys::stat::fstat(fd.as_fd())
        .map_err(|e| format!("fstat: {e}"))?
        .st_dev;
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let known = known.get_or_insert_with(HashMap::new);
    if let Some(verdict) = known.get(&dev) {
        return verdict.clone();
    }
    let verdict = judge_filesystem(fd);
    known.insert(dev, verdict.clone());
    verdict
}

fn judge_filesystem(fd: impl AsFd) -> Result<(), Unsupported> {
    let magic = nix::sys::statfs::fstatfs(fd)
        .map_err(|e| format!("fstatfs: {e}"))?
        .filesystem_type()
        .0 as i64;
    let Some((_, name, since)) = IDMAPPABLE.iter().find(|(m, _, _)| *m == magic) else {
        return Err(format!(
            "its filesystem (type {magic:#x}) is not one known to allow idmapped mounts"
        ));
    };
    let kernel = kernel_version().ok_or("the kernel's version cannot be read")?;
    if kernel < *since {
        return Err(format!(
            "{name} allows idmapped mounts from Linux {}.{} on (this is {}.{})",
            since.0, since.1, kernel.0, kernel.1
        ));
    }
    Ok(())
}

/// Whether `runtime`'s `features` (OCI runtime features, runc >= 1.2) say idmapped mounts
/// are enabled. A runtime without `features` (runc 1.1) cannot make them. `cache`: the
/// staging directory, where the answer is kept across starts ([`features`]).
pub fn runtime_support(runtime: &Path, cache: Option<&Path>) -> Result<(), Unsupported> {
    let doc = features::features(runtime, cache)?;
    features_say_idmap(&doc).map_err(|why| format!("runtime {}: {why}", runtime.display()))
}

/// Reads `mountExtensions.idmap.enabled` from a `features` document.
pub fn features_say_idmap(json: &[u8]) -> Result<(), Unsupported> {
    let doc: Value =
        serde_json::from_slice(json).map_err(|_| "its features are not valid JSON".to_string())?;
    match doc.pointer("/linux/mountExtensions/idmap/enabled") {
        Some(Value::Bool(true)) => Ok(()),
        Some(Value::Bool(false)) => Err("its features say idmapped mounts are disabled".into()),
        _ => Err("its features do not list idmapped mounts".into()),
    }
}

/// Everything but the filesystem, for a runtime: what `doctor` and planning ask first.
pub fn node_support(runtime: &Path, cache: Option<&Path>) -> Result<(), Unsupported> {
    kernel_support()?;
    runtime_support(runtime, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_documents() {
        let yes = br#"{"linux": {"mountExtensions": {"idmap": {"enabled": true}}}}"#;
        assert!(features_say_idmap(yes).is_ok());
        let no = br#"{"linux": {"mountExtensions": {"idmap": {"enabled": false}}}}"#;
        assert!(features_say_idmap(no).unwrap_err().contains("disabled"));
        assert!(
            features_say_idmap(b"{}")
                .unwrap_err()
                .contains("do not list")
        );
        assert!(features_say_idmap(b"runc 1.1").is_err());
    }

    #[test]
    fn a_runtime_without_features_cannot_idmap() {
        // `false features` fails as runc 1.1's unknown command does.
        let err = runtime_support(Path::new("/bin/false"), None).unwrap_err();
        assert!(err.contains("features` failed (exit status: 1)"), "{err}");
        let err = runtime_support(Path::new("/nonexistent/runc"), None).unwrap_err();
        assert!(err.contains("could not be asked"), "{err}");
    }

    #[test]
    fn filesystems_are_judged_by_type_once() {
        let dir = std::fs::File::open("/proc").unwrap();
        let err = filesystem_support(&dir).unwrap_err();
        assert!(err.contains("not one known"), "{err}");
        assert_eq!(filesystem_support(&dir).unwrap_err(), err);
        assert!(kernel_version().is_some());
    }
}
