//! The real runtime: finding it and exec'ing it. The wrapper never stays as its parent: the
//! runtime gets the wrapper's pid, signals, descriptors and exit status as they are, and the
//! wrapper's mount namespace (the staging mounts, the edited config.json) with them.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::names::RUNTIME as BIN;

/// Finds the runtime to exec: an absolute path, or a name on PATH — never this wrapper.
pub fn find_runtime(name: &str, path_var: Option<&std::ffi::OsStr>) -> Result<PathBuf> {
    let me = std::fs::metadata("/proc/self/exe")
        .ok()
        .map(|m| (m.dev(), m.ino()));
    // One stat per candidate (this runs before every runtime call): None when it is not an
    // executable file, else whether it is this very binary.
    let probe = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        (m.is_file() && m.mode() & 0o111 != 0).then(|| me == Some((m.dev(), m.ino())))
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return match probe(&p) {
            Some(true) => {
                bail!("runtime {name} is {BIN} itself; set `runtime` to the real runtime")
            }
            Some(false) => Ok(p),
            None => bail!("runtime {name} is not an executable file"),
        };
    }
    let dirs = path_var
        .map(|p| p.to_os_string())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&dirs) {
        let p = dir.join(name);
        if probe(&p) == Some(false) {
            return Ok(p);
        }
    }
    bail!("runtime {name:?} not found on PATH (other than {BIN} itself)")
}

/// Replaces this process with the runtime, argv unchanged; returns only the reason it could
/// not.
pub fn exec(runtime: &Path, args: &[OsString]) -> anyhow::Error {
    let err = Command::new(runtime).arg0(runtime).args(args).exec();
    anyhow::Error::new(err).context(format!("exec {}", runtime.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn never_finds_itself() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(find_runtime(me.to_str().unwrap(), None).is_err());
        let dir = me.parent().unwrap().as_os_str().to_os_string();
        let name = me.file_name().unwrap().to_str().unwrap();
        assert!(find_runtime(name, Some(&dir)).is_err());
        assert!(find_runtime("sh", Some(OsStr::new("/nonexistent:/bin:/usr/bin"))).is_ok());
    }
}
