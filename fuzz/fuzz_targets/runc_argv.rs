//! runc's argv as the wrapper reads it: never a panic, and a bundle only for create/run.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args: Vec<OsString> = data.split(|b| *b == 0).map(|a| OsString::from_vec(a.to_vec())).collect();
    let inv = oci_volume_hook::wrapper::parse(&args);
    if inv.bundle.is_some() {
        assert!(inv.prepares());
    }
    if let Some(c) = &inv.command {
        assert!(args.iter().any(|a| a.to_string_lossy() == *c));
    }
});
