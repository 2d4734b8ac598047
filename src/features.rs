//! The runtime's `features` document (OCI runtime features, `runc features`), kept across
//! starts: asking runc costs an exec (about 14 ms) on every container start that
//! `ownership = "idmap"` concerns.
//!
//! The copy lives in a root-only directory under the staging directory, one file per
//! runtime path, whose first line names what the answer belongs to: the binary's device,
//! inode, size, mtime and ctime (what exec would run: symlinks followed) and the boot. A
//! replaced or upgraded runtime, or a reboot into another kernel, is asked again. Only an
//! answer given with exit status 0 is kept. Anything odd about the copy (a directory or file
//! not root's or writable by others, not a plain file, too big, another binary's) means
//! asking the runtime, as without a copy; failing to keep one costs nothing but the next ask.

use std::fs::{DirBuilder, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// The cache's directory under the staging directory: `@` is in no container id runc
/// accepts, so no staging key (and no cleanup by key) can ever name it.
pub const DIR: &str = "@runtime-features";

/// A features document is a few KiB; anything bigger is not one of ours.
const MAX: u64 = 1 << 20;

/// `runtime features`' standard output (exit status 0), from the copy under `cache` when it
/// belongs to this very binary, else from the runtime (then kept there). `Err` says why the
/// runtime gave none, in words for the log.
pub fn features(runtime: &Path, cache: Option<&Path>) -> Result<Vec<u8>, String> {
    let kept = cache.and_then(|base| Some((open_dir(base)?, identity(runtime)?)));
    if let Some((dir, id)) = &kept {
        if let Some(doc) = read(dir, &file_name(runtime), id) {
            return Ok(doc);
        }
    }
    let doc = ask(runtime)?;
    if let Some((dir, id)) = &kept {
        keep(dir, &file_name(runtime), id, &doc);
    }
    Ok(doc)
}

/// Runs `runtime features`.
fn ask(runtime: &Path) -> Result<Vec<u8>, String> {
    let name = runtime.display();
    let out = Command::new(runtime)
        .arg("features")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("runtime {name} could not be asked for its features: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.lines().next().unwrap_or_default().trim();
        return Err(format!(
            "`{name} features` failed ({}{}{said}): no idmapped mounts",
            out.status,
            if said.is_empty() { "" } else { ": " }
        ));
    }
    Ok(out.stdout)
}

/// The first line of a kept answer: the runtime's path, the binary behind it, the boot.
fn identity(runtime: &Path) -> Option<String> {
    let m = std::fs::metadata(runtime).ok()?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let path = runtime.to_str().filter(|p| !p.contains('\n'))?;
    Some(format!(
        "{path} dev={} ino={} size={} mtime={}.{} ctime={}.{} boot={}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        boot.trim()
    ))
}

/// One file per runtime path; a hash collision only costs an ask (the first line differs).
fn file_name(runtime: &Path) -> String {
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = runtime
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// The cache directory, made if missing; `None` unless it and the staging directory are
/// root's and reachable by no one else.
fn open_dir(base: &Path) -> Option<OwnedFd> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .ok()?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let base = open(base, flags, Mode::empty()).ok()?;
    root_only(&base)?;
    match mkdirat(&base, DIR, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(_) => return None,
    }
    let dir = openat(&base, DIR, flags, Mode::empty()).ok()?;
    root_only(&dir)?;
    Some(dir)
}

fn root_only(fd: impl AsFd) -> Option<()> {
    let st = fstat(fd).ok()?;
    (st.st_uid == 0 && st.st_mode & 0o077 == 0).then_some(())
}

/// The kept answer for `id`, if the file is a plain root-only file holding one.
fn read(dir: &OwnedFd, name: &str, id: &str) -> Option<Vec<u8>> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).ok()?;
    let st = fstat(&fd).ok()?;
    let plain = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    if !plain || st.st_uid != 0 || st.st_mode & 0o022 != 0 || st.st_size as u64 > MAX {
        return None;
    }
    let mut bytes = Vec::new();
    File::from(fd).take(MAX).read_to_end(&mut bytes).ok()?;
    let rest = bytes.strip_prefix(id.as_bytes())?.strip_prefix(b"\n")?;
    Some(rest.to_vec())
}

/// Keeps `doc` for `id`: written under a name of this process's, then renamed over the
/// previous answer (readers see one whole answer or the other).
fn keep(dir: &OwnedFd, name: &str, id: &str, doc: &[u8]) {
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(fd) = openat(dir, tmp.as_str(), flags, Mode::from_bits_truncate(0o600)) else {
        return;
    };
    let mut f = File::from(fd);
    let written = f
        .write_all(id.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.write_all(doc))
        .is_ok();
    if !written || renameat(dir, tmp.as_str(), dir, name).is_err() {
        // Only the file this process just created.
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
}
