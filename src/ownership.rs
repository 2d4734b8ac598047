//! Which host uid/gid a prepared source belongs to.

use anyhow::{Result, bail};
use oci_spec::runtime::LinuxIdMapping;

use crate::config::Owner;
use crate::spec::View;

/// Maps a container id to the host through `mappings`; no mappings means no user namespace,
/// where ids are the host's own.
pub fn map_id(mappings: &[LinuxIdMapping], id: u32, what: &str) -> Result<u32> {
    if mappings.is_empty() {
        return Ok(id);
    }
    for m in mappings {
        let (inside, outside, size) =
            (m.container_id() as u64, m.host_id() as u64, m.size() as u64);
        if inside + size > 1 << 32 || outside + size > 1 << 32 {
            bail!("{what} mapping {inside}:{outside}:{size} overflows 32-bit ids");
        }
        let id = id as u64;
        if id >= inside && id < inside + size {
            let host = outside + (id - inside);
            // (uid_t)-1 means "leave unchanged" to chown(2): never a real owner.
            if host >= u32::MAX as u64 {
                bail!("{what} {id} maps to the invalid host id {host}");
            }
            return Ok(host as u32);
        }
    }
    bail!("container {what} {id} is not mapped by linux.{what}Mappings")
}

/// The host (uid, gid) that prepared sources are given to.
pub fn host_owner(owner: Owner, view: &View) -> Result<(u32, u32)> {
    let (uid, gid) = match owner {
        Owner::ContainerRoot => (0, 0),
        Owner::ProcessUser => view.user,
    };
    Ok((
        map_id(&view.uid_mappings, uid, "uid")?,
        map_id(&view.gid_mappings, gid, "gid")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        serde_json::from_value(serde_json::json!({"containerID": c, "hostID": h, "size": s}))
            .unwrap()
    }

    #[test]
    fn identity_without_userns() {
        assert_eq!(map_id(&[], 0, "uid").unwrap(), 0);
        assert_eq!(map_id(&[], 1000, "uid").unwrap(), 1000);
    }

    #[test]
    fn maps_through_ranges() {
        let maps = [m(0, 100000, 1000), m(1000, 5000, 1), m(1001, 101001, 64535)];
        assert_eq!(map_id(&maps, 0, "uid").unwrap(), 100000);
        assert_eq!(map_id(&maps, 999, "uid").unwrap(), 100999);
        assert_eq!(map_id(&maps, 1000, "uid").unwrap(), 5000);
        assert_eq!(map_id(&maps, 1001, "uid").unwrap(), 101001);
        let err = map_id(&maps, 65536, "uid").unwrap_err().to_string();
        assert!(err.contains("not mapped"), "{err}");
    }

    #[test]
    fn overflowing_mappings_are_refused() {
        assert!(map_id(&[m(0, u32::MAX - 10, 65536)], 0, "uid").is_err());
        assert!(map_id(&[m(u32::MAX, 0, 2)], 0, "uid").is_err());
        assert!(map_id(&[m(0, u32::MAX - 1, 2)], 1, "uid").is_err());
    }
}
