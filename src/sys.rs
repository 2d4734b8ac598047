//! The only code that needs `unsafe`, kept small: forwarding signals to the runtime the
//! wrapper runs as a child (so that an engine's SIGTERM/SIGINT/... reach runc as if it had
//! exec'd), and `statx` (nix has none) for the recursive ownership walk.
#![allow(unsafe_code)]

use std::os::fd::AsFd;

use nix::errno::Errno;

use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::unistd::Pid;

/// The signals an engine sends a runtime that the wrapper passes on.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The child the signals go to (0: none yet).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // kill(2) is async-signal-safe; nothing else is done here.
        let _ = kill(Pid::from_raw(pid), Signal::try_from(sig).ok());
    }
}

/// Installs the forwarding handlers; signals that arrive before [`forward_to`] names the
/// child are dropped (there is nobody to pass them to yet).
pub fn install_forwarding() {
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in FORWARDED {
        // SAFETY: `forward` only reads an atomic and calls kill(2), both async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// From now on, forwarded signals go to `pid`.
pub fn forward_to(pid: u32) {
    CHILD.store(pid as i32, Ordering::SeqCst);
}

/// Dies of `sig`, as the runtime child did, so that the engine sees the same wait status;
/// returns 128 + sig if the signal does not kill.
pub fn die_like(sig: i32) -> i32 {
    if let Ok(signal) = Signal::try_from(sig) {
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { sigaction(signal, &default) };
        let _ = nix::sys::signal::raise(signal);
    }
    128 + sig
}

/// What the walk needs of an entry, from `statx`.
pub struct Stx {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub dev: u64,
    pub mount_root: bool,
    pub mnt_id: Option<u64>,
}

/// `statx(dir, name, flags)`, asking for the mount id; nix has no statx.
pub fn statx_at(dir: impl AsFd, name: &std::ffi::CStr, flags: i32) -> nix::Result<Stx> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the right size.
    let r = unsafe {
        libc::statx(
            dir.as_fd().as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            buf.as_mut_ptr(),
        )
    };
    Errno::result(r)?;
    // SAFETY: statx succeeded and filled the buffer.
    let b = unsafe { buf.assume_init() };
    let attr = |a: u64| b.stx_attributes_mask & a != 0 && b.stx_attributes & a != 0;
    Ok(Stx {
        mode: b.stx_mode as u32,
        uid: b.stx_uid,
        gid: b.stx_gid,
        nlink: b.stx_nlink,
        dev: nix::libc::makedev(b.stx_dev_major, b.stx_dev_minor),
        mount_root: attr(libc::STATX_ATTR_MOUNT_ROOT as u64),
        mnt_id: (b.stx_mask & libc::STATX_MNT_ID != 0).then_some(b.stx_mnt_id),
    })
}
