//! oci-volume-hook: prepares the bind-mount sources of OCI containers inside per-tenant
//! chroots — the type the image needs, the owner the container user maps to — without ever
//! acting outside the chroot.
//!
//! # One mount, from argv to exec
//!
//! An engine runs `oci-volume-runtime --root R --log L create --bundle B ID`:
//! 1. [`wrapper::main`] reads argv as runc does ([`runc_args::parse`]); any subcommand but
//!    `create`/`run` execs runc at once ([`runtime::exec`]).
//! 2. [`wrapper`] loads the [`config`] (fail closed), reads `B/config.json` once
//!    ([`spec::View`]) and, since sources will be pinned, moves into a mount namespace of
//!    its own ([`staging::private_namespace`]).
//! 3. [`sources::prepare`] runs a [`prepare::Preparer`]. For each mount, [`chroot::place`]
//!    says where the source lies ([`prepare::Target`]); for a source in a chroot, the type
//!    the image has at the destination is read in the rootfs ([`resolve::Root`]), the chroot
//!    is opened with its trust checks ([`resolve::Root::chroot_in`]), the source is looked
//!    up inside it, and one verdict gives the [`prepare::Action`] — or a typed
//!    [`refusal::Refusal`]. A source in no chroot is left to the platform, or, with
//!    `host_sources` set, refused unless listed ([`host_sources::check`]). One refusal refuses the container ([`refusal::Refused`]) before
//!    anything changes.
//! 4. Each action is applied through descriptors (`prepare/apply.rs`: creation with
//!    `O_EXCL|O_NOFOLLOW`, `rmdir` of an empty directory, `fchownat` on the descriptor); each
//!    plan comes back with the descriptor that was checked ([`prepare::Prepared`]).
//! 5. [`staging::stage_private`] mounts a clone of each descriptor's mount
//!    (open_tree/move_mount) onto a slot, `<staging_dir>/@slots/d<n>` or `f<n>`;
//!    [`sources::point_at`] edits config.json as a `serde_json::Value`
//!    ([`spec::set_source`]); [`staging::show_config`] bind-mounts the edited document over
//!    the bundle's config.json in that namespace only (the bundle's file is never written).
//! 6. [`runtime::exec`] replaces the wrapper with runc, argv unchanged, in that namespace:
//!    runc keeps the wrapper's pid, signals and descriptors, and the namespace dies with it.
//!
//! podman's precreate stage ([`precreate`]) and the OCI hook ([`hook`]) enter at step 3.

#![forbid(unsafe_code)]

pub mod atomic;
pub mod chroot;
pub mod config;
pub mod configure;
pub mod doctor;
pub mod features;
pub mod go_json;
pub mod hook;
pub mod host_sources;
pub mod idmap;
pub mod install_node;
pub mod logging;
pub mod manual;
pub mod names;
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
pub mod wanted;
pub mod wrapper;
