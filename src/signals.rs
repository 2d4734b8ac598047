//! The one place that needs `unsafe`: forwarding signals to the runtime the wrapper runs as a
//! child, so that an engine's SIGTERM/SIGINT/... reach runc as if it had exec'd.
#![allow(unsafe_code)]

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
