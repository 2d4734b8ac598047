//! The binaries' names, which their messages start with and their manuals are named after.
//! At the bottom of the crate, so that any module may name a binary without importing the
//! module that implements it.

/// The hook, precreate, plan, configure, doctor and install-node binary.
pub const HOOK: &str = "oci-volume-hook";
/// The runc-compatible runtime wrapper.
pub const RUNTIME: &str = "oci-volume-runtime";
