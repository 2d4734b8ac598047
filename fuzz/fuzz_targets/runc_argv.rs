//! runc's argv as the wrapper reads it: never a panic; a bundle only for create/run/restore with one
//! container id among the arguments.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use oci_volume_hook::runc_args::{self, Action, Subcommand};

fuzz_target!(|data: &[u8]| {
    let args: Vec<OsString> = data.split(|b| *b == 0).map(|a| OsString::from_vec(a.to_vec())).collect();
    let inv = runc_args::parse(&args);
    if let Action::Prepare { id, .. } = &inv.action {
        assert!(matches!(inv.command, Subcommand::Create | Subcommand::Run | Subcommand::Restore));
        assert!(args.iter().any(|a| a.to_string_lossy() == *id));
    }
    if let Subcommand::Other(c) = &inv.command {
        assert!(args.iter().any(|a| a.to_string_lossy() == *c));
    }
});
