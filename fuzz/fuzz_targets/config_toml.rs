//! The operator's TOML: any text gives a configuration or a one-line error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = oci_volume_hook::config::Config::parse(text) {
        assert!(!format!("{e:#}").contains('\n'), "multi-line error");
    }
});
