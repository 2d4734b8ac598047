//! The chroot walker over generated hostile trees. The input builds a tenant's tree of
//! directories, files and symlinks (absolute, relative, `..` chains, into the host, loops)
//! next to a host tree, then prepares mounts into it. Property: nothing outside the chroot
//! changes. Run as root (it chowns).
#![no_main]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use oci_volume_hook::config::Config;
use oci_volume_hook::prepare::{Caller, Preparer};
use oci_volume_hook::spec::View;

const NAMES: [&str; 6] = ["a", "b", "etc", "data", "..", "localtime"];

fn snapshot(p: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(md) = std::fs::symlink_metadata(p) else { return };
    out.insert(p.to_path_buf(), format!("{:o} {} {} {} {}", md.mode(), md.uid(), md.gid(), md.mtime_nsec(), md.size()));
    if md.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            snapshot(&e.path(), out);
        }
    }
}

fn rel(bytes: &[u8]) -> PathBuf {
    bytes.iter().take(4).map(|b| NAMES[*b as usize % NAMES.len()]).collect()
}

fuzz_target!(|data: &[u8]| {
    if !nix::unistd::geteuid().is_root() || data.len() < 4 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    let base = dir.path().join("chroots");
    let tenant = base.join("t");
    let rootfs = dir.path().join("rootfs");
    for d in [&host.join("etc"), &tenant, &rootfs.join("etc")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(host.join("etc/localtime"), "host").unwrap();
    std::fs::write(rootfs.join("etc/localtime"), "image").unwrap();
    // Build the tenant's tree: 5 bytes per entry.
    for chunk in data.chunks(5).take(24) {
        if chunk.len() < 5 {
            break;
        }
        let at = tenant.join(rel(&chunk[1..3]));
        if !at.starts_with(&tenant) || at.components().any(|c| c.as_os_str() == "..") {
            continue;
        }
        if let Some(parent) = at.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = match chunk[0] % 5 {
            0 => std::fs::create_dir(&at),
            1 => std::fs::write(&at, "x"),
            2 => std::os::unix::fs::symlink(&host, &at),
            3 => std::os::unix::fs::symlink(rel(&chunk[3..5]), &at),
            _ => std::os::unix::fs::symlink(Path::new("/").join(rel(&chunk[3..5])), &at),
        };
    }
    let mut before = BTreeMap::new();
    snapshot(&host, &mut before);
    snapshot(&rootfs, &mut before);
    let mut config = Config::parse(&format!("chroots = [\"{}/*\"]", base.display())).unwrap();
    config.pin_sources = oci_volume_hook::config::Pin::Never;
    let sources = [rel(&data[0..2]), rel(&data[2..4]), PathBuf::from("etc/localtime")];
    let mounts: Vec<_> = sources
        .iter()
        .map(|s| serde_json::json!({"destination": "/etc/localtime", "type": "bind", "source": tenant.join(s), "options": ["rbind"]}))
        .collect();
    let doc = serde_json::json!({
        "root": {"path": rootfs},
        "mounts": mounts,
        "linux": {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                  "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}
    });
    let view = View::of(&doc, Path::new("/")).unwrap();
    let _ = Preparer::new(&config, &view, Caller::Rewrite).prepare();
    let mut after = BTreeMap::new();
    snapshot(&host, &mut after);
    snapshot(&rootfs, &mut after);
    assert_eq!(before, after, "something outside the chroot changed");
});
