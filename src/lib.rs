//! oci-volume-hook: prepares the bind-mount sources of OCI containers inside per-tenant
//! chroots — the type the image needs, the owner the container user maps to — without ever
//! acting outside the chroot.

#![forbid(unsafe_code)]

pub mod atomic;
pub mod chroot;
pub mod config;
pub mod configure;
pub mod doctor;
pub mod hook;
pub mod install_node;
pub mod logging;
pub mod manual;
pub mod ownership;
pub mod precreate;
pub mod prepare;
pub mod refusal;
pub mod resolve;
pub mod runc_args;
pub mod runtime;
pub mod sources;
pub mod spec;
pub mod staging;
pub mod wrapper;
