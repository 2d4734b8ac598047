//! oci-volume-hook: prepares the bind-mount sources of OCI containers inside per-tenant
//! chroots — the type the image needs, the owner the container user maps to — without ever
//! acting outside the chroot.

pub mod chroot;
pub mod config;
pub mod configure;
pub mod hook;
pub mod logging;
pub mod ownership;
pub mod prepare;
pub mod resolve;
pub mod runc_args;
pub mod spec;
pub mod staging;
pub mod wrapper;
