//! OCI state and config.json parsing: any bytes give a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_volume_hook::{config::Config, spec};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = spec::read_config(data, "input") else { return };
    // What the Go-alike reader accepts, serde_json reads to the same value.
    assert_eq!(serde_json::from_slice::<serde_json::Value>(data).ok(), Some(doc.clone()));
    let _ = oci_volume_hook::precreate::podman_ids(&doc, &Config::default().chroots);
    let _ = spec::container_id(&doc);
    if let Ok(view) = spec::View::of(&doc, std::path::Path::new("/bundle")) {
        let _ = Config::default().settings(&view.annotations);
        let _ = oci_volume_hook::ownership::host_owner(oci_volume_hook::config::Owner::ProcessUser, true, &view);
        for b in &view.binds {
            let _ = oci_volume_hook::chroot::locate(&Config::default().chroots, &b.source);
        }
    }
});
