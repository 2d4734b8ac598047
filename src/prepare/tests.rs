//! Planning tables, without root: a temp dir stands for the host's `/` (the `Host` seam), so
//! every `cargo test` plans each case against a real tree and matches the typed outcome.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;
use crate::chroot::Misplaced;
use crate::refusal::Refused;
use crate::resolve;

/// A fake host: `<host>/containerdata/<tenant>` chroots, an image at `<host>/image`.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let h = Fake { dir };
        for d in [
            "containerdata/t1/etc",
            "image/etc",
            "image/data",
            "image/usr/share",
        ] {
            std::fs::create_dir_all(h.at(d)).unwrap();
        }
        std::fs::write(h.at("image/usr/share/UTC"), "tz").unwrap();
        symlink("/usr/share/UTC", h.at("image/etc/localtime")).unwrap();
        std::fs::write(h.at("image/etc/hostname"), "h").unwrap();
        h
    }

    /// A path below the fake `/`.
    fn at(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self, extra: &str) -> Config {
        Config::parse(&format!("chroots = [\"/containerdata/*\"]\n{extra}")).unwrap()
    }

    /// config.json with these `(destination, source)` binds (sources as the host sees them,
    /// i.e. `/containerdata/...`), container root mapped to 100000.
    fn doc(&self, binds: &[(&str, &str)], annotations: Value) -> Value {
        let mounts: Vec<Value> = binds
            .iter()
            .map(|(d, s)| json!({"destination": d, "source": s, "type": "bind", "options": ["rbind"]}))
            .collect();
        json!({
            "ociVersion": "1.0.2",
            "root": {"path": self.at("image")},
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
            "annotations": annotations,
            "mounts": mounts,
            "linux": {
                "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]
            }
        })
    }

    fn plan_with(&self, config: &Config, doc: &Value, caller: Caller) -> Vec<MountPlan> {
        let view = View::of(doc, Path::new("/")).unwrap();
        let host = crate::resolve::Host::fake(self.dir.path());
        Preparer::new(config, &view, caller)
            .with_host(host)
            .plan()
            .unwrap()
    }

    /// The plan of one mount `destination <- source`, as the runtime wrapper sees it.
    fn plan_one(&self, destination: &str, source: &str) -> MountPlan {
        let doc = self.doc(&[(destination, source)], json!({}));
        self.plan_with(&self.config(""), &doc, Caller::Rewrite)
            .remove(0)
    }

    fn tree(&self) -> Vec<(PathBuf, u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let mut v = Vec::new();
        let mut stack = vec![self.at("containerdata")];
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            v.push((p.clone(), m.mode(), m.uid()));
            if m.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        v.sort();
        v
    }
}

fn chroot_mount(p: &MountPlan) -> &ChrootMount {
    p.in_chroot()
        .unwrap_or_else(|| panic!("not in a chroot: {p:?}"))
}

#[test]
fn sources_get_the_type_the_image_has() {
    let h = Fake::new();
    std::fs::create_dir(h.at("containerdata/t1/empty")).unwrap();
    std::fs::create_dir_all(h.at("containerdata/t1/full/x")).unwrap();
    std::fs::write(h.at("containerdata/t1/afile"), "").unwrap();
    nix::unistd::mkfifo(
        &h.at("containerdata/t1/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let before = h.tree();
    // (destination, source in t1, expected action word, wanted)
    let table = [
        ("/etc/localtime", "etc/localtime", "create-file", Want::File),
        ("/etc/hostname", "a/b/hostname", "create-file", Want::File),
        ("/data", "newdir", "create-dir", Want::Dir),
        ("/nothing/in/image", "anything", "create-dir", Want::Any),
        ("/etc/hostname", "empty", "repair", Want::File),
        ("/data", "afile", "refuse", Want::Dir),
        ("/etc/hostname", "full", "refuse", Want::File),
        ("/data", "fifo", "refuse", Want::Dir),
    ];
    for (dest, rel, action, want) in table {
        let p = h.plan_one(dest, &format!("/containerdata/t1/{rel}"));
        assert_eq!(p.action.word(), action, "{dest} <- {rel}: {}", p.reason);
        let m = chroot_mount(&p);
        assert_eq!(m.wanted.want, want, "{rel}");
        assert_eq!(m.chroot, Path::new("/containerdata/t1"));
        assert_eq!(m.rel, Path::new(rel));
        assert_eq!(
            m.owner,
            Owner {
                uid: 100000,
                gid: 100000
            }
        );
    }
    assert_eq!(before, h.tree(), "planning changed the tree");
}

#[test]
fn refusals_are_typed() {
    let h = Fake::new();
    std::fs::create_dir_all(h.at("containerdata/t1/full/x")).unwrap();
    std::fs::write(h.at("containerdata/t1/afile"), "").unwrap();
    std::fs::write(h.at("containerdata/t1/linked"), "").unwrap();
    std::fs::hard_link(
        h.at("containerdata/t1/linked"),
        h.at("containerdata/t1/link2"),
    )
    .unwrap();
    symlink("loop2", h.at("containerdata/t1/loop1")).unwrap();
    symlink("loop1", h.at("containerdata/t1/loop2")).unwrap();
    let refusal = |dest: &str, src: &str| h.plan_one(dest, src).action.refusal().cloned();
    assert!(matches!(
        refusal("/data", "/containerdata/t1/afile"),
        Some(Refusal::FileForDir { wanted }) if wanted.want == Want::Dir
    ));
    assert!(matches!(
        refusal("/etc/hostname", "/containerdata/t1/full"),
        Some(Refusal::NonEmptyDir { .. })
    ));
    assert!(matches!(
        refusal("/etc/hostname", "/containerdata/t1/linked"),
        Some(Refusal::HardLinked { links: 2 })
    ));
    let Some(Refusal::Resolve(cause)) = refusal("/data", "/containerdata/t1/loop1/x") else {
        panic!("a symlink loop is a resolution refusal");
    };
    assert!(matches!(
        cause.error().downcast_ref::<resolve::Error>(),
        Some(resolve::Error::TooManyLinks { .. })
    ));
    assert!(matches!(
        refusal("/data", "/containerdata/t1/.."),
        Some(Refusal::Misplaced(Misplaced::DotDot { .. }))
    ));
    assert!(matches!(
        refusal("/data", "/containerdata"),
        Some(Refusal::Misplaced(Misplaced::AncestorOfChroots { .. }))
    ));
    let deep = format!(
        "/containerdata/t1/{}",
        "d/".repeat(chroot::MAX_COMPONENTS + 1)
    );
    assert!(matches!(
        refusal("/data", &deep),
        Some(Refusal::Misplaced(Misplaced::TooDeep { below })) if below == chroot::MAX_COMPONENTS + 1
    ));
}

#[test]
fn what_the_tool_leaves_alone_says_why() {
    let h = Fake::new();
    let doc = h.doc(
        &[("/a", "/var/tmp"), ("/b", "/containerdata/t1")],
        json!({}),
    );
    let mut doc = doc;
    doc["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/proc", "type": "proc", "source": "proc"}));
    let plans = h.plan_with(&h.config(""), &doc, Caller::Rewrite);
    assert!(matches!(&plans[0].target, Target::Host { source } if source == Path::new("/var/tmp")));
    assert_eq!(plans[0].reason, "source is in no chroot");
    assert!(matches!(plans[1].target, Target::Host { .. }));
    assert_eq!(plans[1].reason, "source is a chroot itself");
    assert!(matches!(&plans[2].target, Target::NotBind { kind } if kind == "proc"));
    assert!(plans.iter().all(|p| p.action.is_nothing()));
}

#[test]
fn disabled_by_annotation_still_resolves_in_the_chroot() {
    let h = Fake::new();
    // The tenant's trap: a symlink that the host would follow to its own directory.
    std::fs::create_dir_all(h.at("hostdir")).unwrap();
    symlink(h.at("hostdir"), h.at("containerdata/t1/vol")).unwrap();
    std::fs::create_dir(h.at("containerdata/t1/data")).unwrap();
    std::fs::write(h.at("image/f"), "").unwrap();
    std::fs::create_dir(h.at("containerdata/t1/emptydir")).unwrap();
    let off = json!({"io.oci-volume-hook.enabled": "false"});
    let plan = |binds: &[(&str, &str)], caller| {
        let doc = h.doc(binds, off.clone());
        h.plan_with(&h.config(""), &doc, caller)
    };
    // Resolved inside the chroot (to nothing there): creating it is off, so refused.
    let p = plan(&[("/c", "/containerdata/t1/vol")], Caller::Rewrite).remove(0);
    assert!(
        matches!(
            p.action,
            Action::Refuse(Refusal::DisabledByAnnotation {
                needs: "create-dir"
            })
        ),
        "{p:?}"
    );
    assert!(
        p.reason.contains("io.oci-volume-hook.enabled"),
        "{}",
        p.reason
    );
    assert!(!p.reason.contains("hostdir"), "{}", p.reason);
    // Already there: nothing done, not even a chown, but held (pinned) all the same.
    let p = plan(&[("/c", "/containerdata/t1/data")], Caller::Rewrite).remove(0);
    assert!(p.action.is_nothing(), "{p:?}");
    assert_eq!(chroot_mount(&p).ownership, crate::config::Ownership::None);
    assert!(p.reason.contains("enabled=\"false\""), "{}", p.reason);
    // A repair is off too.
    let p = plan(&[("/f", "/containerdata/t1/emptydir")], Caller::Rewrite).remove(0);
    assert!(matches!(
        p.action,
        Action::Refuse(Refusal::DisabledByAnnotation { needs: "repair" })
    ));
    // A hook cannot rewrite: a source reached through a symlink is refused there too.
    std::fs::create_dir(h.at("containerdata/t1/real")).unwrap();
    symlink("/real", h.at("containerdata/t1/link")).unwrap();
    let p = plan(&[("/c", "/containerdata/t1/link")], Caller::Hook).remove(0);
    assert!(
        matches!(p.action, Action::Refuse(Refusal::HookCannotRewrite { .. })),
        "{p:?}"
    );
    let p = plan(&[("/c", "/containerdata/t1/link")], Caller::Rewrite).remove(0);
    assert!(p.action.is_nothing(), "{p:?}");
    assert_eq!(
        chroot_mount(&p).resolved_source.as_deref(),
        Some(Path::new("/containerdata/t1/real"))
    );
}

#[test]
fn symlinks_resolve_inside_the_chroot() {
    let h = Fake::new();
    std::fs::create_dir_all(h.at("containerdata/t1/releases/v1")).unwrap();
    symlink("/releases/v1", h.at("containerdata/t1/current")).unwrap();
    symlink("../../../../../etc", h.at("containerdata/t1/escape")).unwrap();
    let p = h.plan_one("/data", "/containerdata/t1/current/app");
    assert_eq!(p.action.word(), "create-dir");
    assert_eq!(
        chroot_mount(&p).resolved_source.as_deref(),
        Some(Path::new("/containerdata/t1/releases/v1/app"))
    );
    // `..` never climbs out: the host's /etc is the chroot's etc.
    let p = h.plan_one("/data", "/containerdata/t1/escape/x");
    assert_eq!(
        chroot_mount(&p).resolved_source.as_deref(),
        Some(Path::new("/containerdata/t1/etc/x"))
    );
    // An OCI hook cannot rewrite config.json: refused there.
    let doc = h.doc(&[("/data", "/containerdata/t1/current/app")], json!({}));
    let p = h.plan_with(&h.config(""), &doc, Caller::Hook).remove(0);
    assert!(matches!(
        p.action,
        Action::Refuse(Refusal::HookCannotRewrite { .. })
    ));
}

#[test]
fn ownership_settings_decide_the_owner_action() {
    let h = Fake::new();
    std::fs::create_dir(h.at("containerdata/t1/data")).unwrap();
    let p = h.plan_one("/data", "/containerdata/t1/data");
    assert_eq!(
        p.action.word(),
        "chown",
        "owned by the test's user, wanted 100000"
    );
    let doc = h.doc(
        &[("/data", "/containerdata/t1/data")],
        json!({"io.oci-volume-hook.ownership": "none"}),
    );
    let p = h.plan_with(&h.config(""), &doc, Caller::Rewrite).remove(0);
    assert!(p.action.is_nothing());
    assert!(p.reason.contains("ownership = none"), "{}", p.reason);
}

#[test]
fn a_missing_chroot_is_created_or_refused_as_configured() {
    let h = Fake::new();
    let doc = h.doc(
        &[
            ("/data", "/containerdata/t9/data"),
            ("/d2", "/containerdata/t9/d2"),
        ],
        json!({}),
    );
    let plans = h.plan_with(&h.config(""), &doc, Caller::Rewrite);
    assert_eq!(plans[0].action.word(), "create-dir");
    assert!(
        plans[0].reason.contains("does not exist yet"),
        "{}",
        plans[0].reason
    );
    assert!(
        !h.at("containerdata/t9").exists(),
        "planning created the chroot"
    );
    let strict = h.config("create_chroots = false");
    let plans = h.plan_with(&strict, &doc, Caller::Rewrite);
    assert!(
        plans
            .iter()
            .all(|p| matches!(p.action, Action::Refuse(Refusal::ChrootMissing { .. })))
    );
    let refused = report::refusal(&plans).expect("refused");
    assert!(
        refused.line.ends_with("(and 1 other mounts in it)"),
        "{}",
        refused.line
    );
    assert_eq!(refused.index, 0);
}

#[test]
fn a_chroot_others_could_swap_is_refused_with_every_mount_in_it() {
    let h = Fake::new();
    std::fs::set_permissions(
        h.at("containerdata"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let doc = h.doc(
        &[("/a", "/containerdata/t1/a"), ("/b", "/containerdata/t1/b")],
        json!({}),
    );
    let view = View::of(&doc, Path::new("/")).unwrap();
    let config = h.config("");
    let host = crate::resolve::Host::fake(h.dir.path());
    let err = Preparer::new(&config, &view, Caller::Rewrite)
        .with_host(host)
        .prepare()
        .err()
        .expect("refused");
    let refused = err.downcast_ref::<Refused>().expect("a typed refusal");
    let Refusal::Chroot(cause) = &refused.refusal else {
        panic!("{refused:?}");
    };
    assert!(matches!(
        cause.error().downcast_ref::<resolve::Error>(),
        Some(resolve::Error::Untrusted { dir, .. }) if dir == Path::new("/containerdata")
    ));
    assert!(
        refused
            .line
            .contains("is not root's or is writable by others")
            && refused.line.ends_with("(and 1 other mounts in it)"),
        "{}",
        refused.line
    );
}

#[test]
fn plan_json_says_what_the_plan_holds() {
    let h = Fake::new();
    let p = h.plan_one("/etc/localtime", "/containerdata/t1/etc/localtime");
    let v = serde_json::to_value(&p).unwrap();
    // (The order of the fields, through the binary: tests/prepare.rs.)
    assert_eq!(v["action"], "create-file");
    assert_eq!(v["wanted"], "file");
    assert_eq!(v["owner"], json!({"uid": 100000, "gid": 100000}));
    assert_eq!(v["ownership"], "top");
    assert_eq!(
        v["reason"],
        "missing; the image has a file at /etc/localtime"
    );
    assert_eq!(
        p.describe(),
        "create-file  /etc/localtime <- /containerdata/t1/etc/localtime [chroot /containerdata/t1, \
         image wants file, owner 100000:100000, ownership top]: missing; the image has a file at /etc/localtime"
    );
}

#[test]
fn an_idmapped_mount_is_owned_through_its_mapping_and_plan_shows_it() {
    let h = Fake::new();
    let mut doc = h.doc(
        &[
            ("/data", "/containerdata/t1/a"),
            ("/more", "/containerdata/t1/b"),
        ],
        json!({}),
    );
    doc["mounts"][0]["options"] = json!(["rbind", "idmap"]);
    let own = json!([{"containerID": 5000, "hostID": 100000, "size": 10}]);
    doc["mounts"][1]["uidMappings"] = own.clone();
    doc["mounts"][1]["gidMappings"] = own;
    let plans = h.plan_with(&h.config(""), &doc, Caller::Rewrite);
    let m = chroot_mount(&plans[0]);
    // The container's own mappings: container root is on-disk 0, not 100000.
    assert_eq!(m.owner, Owner { uid: 0, gid: 0 });
    assert_eq!(m.idmap.as_ref().unwrap().by, IdmapBy::Engine);
    assert_eq!(m.idmap.as_ref().unwrap().uid_mappings[0].host_id(), 100000);
    assert!(
        plans[0]
            .describe()
            .contains("owner 0:0, ownership top, idmapped by the engine, uid 0:100000:65536"),
        "{}",
        plans[0].describe()
    );
    let m = chroot_mount(&plans[1]);
    assert_eq!(
        m.owner,
        Owner {
            uid: 5000,
            gid: 5000
        }
    );
    let wire = serde_json::to_value(&plans[1]).unwrap();
    assert_eq!(wire["idmap"]["by"], "engine");
    assert_eq!(wire["idmap"]["uid_mappings"][0]["containerID"], 5000);
    assert_eq!(wire["idmap_fallback"], Value::Null);
}

#[test]
fn ownership_idmap_asks_the_runtime_and_falls_back_saying_why() {
    let h = Fake::new();
    let doc = h.doc(&[("/data", "/containerdata/t1/a")], json!({}));
    let config = h.config("ownership = \"idmap\"");
    let view = View::of(&doc, Path::new("/")).unwrap();
    let plan = |runtime: Option<PathBuf>| {
        let host = crate::resolve::Host::fake(h.dir.path());
        Preparer::new(&config, &view, Caller::Rewrite)
            .with_host(host)
            .with_runtime(runtime)
            .plan()
            .unwrap()
            .remove(0)
    };
    let p = plan(None);
    let m = chroot_mount(&p);
    assert!(m.idmap.is_none());
    assert_eq!(
        (m.owner.uid, m.chowning()),
        (100000, config::Ownership::RecursiveOnMismatch)
    );
    assert!(
        p.describe()
            .contains("not idmapped: only the runtime wrapper"),
        "{}",
        p.describe()
    );

    let runtime = |features: &str| {
        let script = h.at(&format!("runtime-{}", features.len()));
        std::fs::write(&script, format!("#!/bin/sh\necho '{features}'\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(script)
    };
    // runc 1.1.5's features: no mountExtensions.
    let p = plan(runtime(r#"{"linux": {"namespaces": ["user"]}}"#));
    let why = chroot_mount(&p).idmap_fallback.clone().unwrap();
    assert!(
        why.contains("features do not list idmapped mounts"),
        "{why}"
    );

    let p = plan(runtime(
        r#"{"linux": {"mountExtensions": {"idmap": {"enabled": true}}}}"#,
    ));
    let m = chroot_mount(&p);
    let fs = crate::idmap::filesystem_support(std::fs::File::open(h.at("containerdata")).unwrap());
    if crate::idmap::kernel_support().is_ok() && fs.is_ok() {
        assert_eq!(m.idmap.as_ref().unwrap().by, IdmapBy::Ownership);
        assert_eq!(
            (m.owner, m.chowning()),
            (Owner { uid: 0, gid: 0 }, config::Ownership::Top)
        );
        assert_eq!(
            serde_json::to_value(&p).unwrap()["idmap"]["by"],
            "ownership"
        );
    } else {
        assert!(m.idmap_fallback.is_some());
    }
}

#[test]
fn a_source_on_a_filesystem_that_cannot_be_idmapped_falls_back() {
    if !nix::unistd::geteuid().is_root() {
        return; // mounting needs root; the e2e tests run as root under CI
    }
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let h = Fake::new();
    let ram = h.at("containerdata/t1/ram");
    std::fs::create_dir(&ram).unwrap();
    mount(
        Some("ramfs"),
        &ram,
        Some("ramfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let script = h.at("runtime");
    let features = r#"{"linux": {"mountExtensions": {"idmap": {"enabled": true}}}}"#;
    std::fs::write(&script, format!("#!/bin/sh\necho '{features}'\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let doc = h.doc(&[("/data", "/containerdata/t1/ram")], json!({}));
    let config = h.config("ownership = \"idmap\"");
    let view = View::of(&doc, Path::new("/")).unwrap();
    let p = Preparer::new(&config, &view, Caller::Rewrite)
        .with_host(crate::resolve::Host::fake(h.dir.path()))
        .with_runtime(Some(script))
        .plan()
        .unwrap()
        .remove(0);
    umount2(&ram, MntFlags::MNT_DETACH).unwrap();
    let m = chroot_mount(&p);
    // The chroot's own filesystem could be idmapped: the source's decides.
    let why = m.idmap_fallback.as_deref().unwrap_or_default();
    assert!(
        why.contains("not one known to allow idmapped mounts"),
        "{p:?}"
    );
    assert!(m.idmap.is_none());
}
