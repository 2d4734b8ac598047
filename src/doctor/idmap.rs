//! Whether this node can give volumes by idmapped mount (`ownership = "idmap"`): the kernel
//! and the runtime (its `features`) once, then each chroot base's filesystem. Never a
//! failure: where idmapping is not possible the tool falls back to chowning.

use super::{Report, Verdict};
use crate::config::{Config, Ownership};
use crate::idmap;

pub fn idmap(config: &Config, r: &mut Report) {
    let chosen = config.ownership == Ownership::Idmap;
    let runtime =
        crate::runtime::find_runtime(&config.runtime, std::env::var_os("PATH").as_deref());
    let node = match &runtime {
        // Asked afresh, not from the copy starts keep: doctor checks the runtime as it is.
        Ok(rt) => idmap::node_support(rt, None),
        Err(e) => Err(format!("runtime {:?} not found: {e:#}", config.runtime)),
    };
    let fallback = |why: &str| {
        let will = if chosen {
            "ownership = idmap falls back to chown (recursive-on-mismatch)"
        } else {
            "ownership = idmap would fall back to chown"
        };
        format!("{will}: {why}")
    };
    // Only a problem where the configuration chose idmap: a skip carries no fix.
    let report = |r: &mut Report, id: String, why: String, fix: &str| match chosen {
        true => r.problem(id, Verdict::Warn, fallback(&why), fix),
        false => r.push(id, Verdict::Skip, fallback(&why)),
    };
    if let Err(why) = node {
        let fix = "runc >= 1.2 or crun >= 1.9 (its `features` list mountExtensions.idmap) on Linux >= 5.12";
        return report(r, "idmap".into(), why, fix);
    }
    let rt = runtime
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    r.push(
        "idmap",
        Verdict::Ok,
        format!("kernel and runtime {rt} can make idmapped mounts"),
    );
    for p in &config.chroots {
        let id = format!("idmap:{}", p.as_str());
        let base = p.base();
        let verdict_fs = std::fs::File::open(&base)
            .map_err(|e| format!("{}: {e}", base.display()))
            .and_then(|f| idmap::filesystem_support(&f));
        match verdict_fs {
            Ok(()) => r.push(
                id,
                Verdict::Ok,
                format!("{}'s filesystem can be idmapped", base.display()),
            ),
            Err(why) => report(
                r,
                id,
                format!("{}: {why}", base.display()),
                "keep chroots on ext4, xfs, btrfs or tmpfs (Linux >= 6.3) to use ownership = idmap",
            ),
        }
    }
}
