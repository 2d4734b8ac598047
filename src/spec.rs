//! Reading a runtime config.json, and the one edit the tool makes to it.
//!
//! The document stays a `serde_json::Value` so that writing it back keeps every field the
//! engine put there; typed oci-spec structs are only used to read parts of it.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};
use oci_spec::runtime::{LinuxIdMapping, Mount};
use serde::Deserialize;
use serde_json::Value;

use crate::chroot::PATH_MAX;
use crate::go_json;

/// config.json and OCI state documents larger than this are refused rather than parsed.
pub const MAX_DOCUMENT: u64 = 64 << 20;

/// Reads a config.json from `input` (podman's precreate stdin), refusing oversized input and
/// any document runc would read differently ([`go_json`]).
pub fn read_config(input: impl Read, what: &str) -> Result<Value> {
    parse(&read_bounded(input, what)?, what, &go_json::CONFIG)
}

/// Reads an OCI state document (a hook's stdin), as [`read_config`] does.
pub fn read_state(input: impl Read, what: &str) -> Result<Value> {
    parse(&read_bounded(input, what)?, what, &go_json::STATE)
}

fn parse(bytes: &[u8], what: &str, shape: &'static go_json::Shape) -> Result<Value> {
    go_json::parse(bytes, shape).map_err(|e| match e.downcast::<go_json::Ambiguity>() {
        Ok(ambiguity) => anyhow!("{what}: {ambiguity}"),
        Err(e) => e.context(format!("{what} is not valid JSON")),
    })
}

fn read_bounded(input: impl Read, what: &str) -> Result<Vec<u8>> {
    read_bounded_sized(input, what, 0)
}

/// [`read_bounded`] into a buffer of `size_hint` bytes (the file's size: one `read` for the
/// document, one for its end, instead of a dozen growing ones).
fn read_bounded_sized(mut input: impl Read, what: &str, size_hint: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size_hint.min(MAX_DOCUMENT) as usize + 1);
    input
        .by_ref()
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {what}"))?;
    if buf.len() as u64 > MAX_DOCUMENT {
        bail!("{what} is larger than {} MiB", MAX_DOCUMENT >> 20);
    }
    Ok(buf)
}

/// Reads `<bundle>/config.json`.
pub fn read_bundle_config(bundle: &Path) -> Result<Value> {
    let bytes = read_bundle_config_bytes(bundle)?;
    parse_config(&bytes, &bundle.join("config.json"))
}

/// A file's identity (device and inode), to tell that a path still names what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(fd: impl std::os::fd::AsFd) -> Result<FileId> {
        let st = fstat(fd).context("fstat")?;
        Ok(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// The bytes of `<bundle>/config.json`. The bundle's path is the engine's (its symlinks are
/// the host's and followed); config.json itself must be a regular file, opened without
/// following a symlink and without blocking (a FIFO there would hang the engine forever).
pub fn read_bundle_config_bytes(bundle: &Path) -> Result<Vec<u8>> {
    read_bundle_config_file(bundle).map(|(bytes, _)| bytes)
}

/// [`read_bundle_config_bytes`], with the identity of the file read.
pub fn read_bundle_config_file(bundle: &Path) -> Result<(Vec<u8>, FileId)> {
    let path = bundle.join("config.json");
    let cannot = || format!("bundle {}: cannot open config.json", bundle.display());
    let dir = openat(
        AT_FDCWD,
        bundle,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(cannot)?;
    let flags = OFlag::O_RDONLY
        | OFlag::O_NONBLOCK
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = openat(&dir, "config.json", flags, Mode::empty()).with_context(cannot)?;
    let st = fstat(&fd).with_context(cannot)?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        bail!("{}: not a regular file", path.display());
    }
    let id = FileId::of(&fd)?;
    let what = path.display().to_string();
    let bytes = read_bounded_sized(std::fs::File::from(fd), &what, st.st_size as u64)?;
    Ok((bytes, id))
}

/// Parses config.json's bytes, naming the file in errors; refuses a document runc would read
/// differently ([`go_json`]).
pub fn parse_config(bytes: &[u8], path: &Path) -> Result<Value> {
    parse(bytes, &path.display().to_string(), &go_json::CONFIG)
}

/// One entry of `mounts`, with its position so it can be edited in place.
#[derive(Debug, Clone)]
pub struct BindMount {
    pub index: usize,
    pub destination: PathBuf,
    pub source: PathBuf,
    /// The mount is idmapped (option `idmap`/`ridmap`, or mappings of its own).
    pub idmap: Option<MountIdmap>,
}

/// An idmapped bind mount's mapping (OCI runtime-spec 1.2): on-disk ids are `containerID`,
/// the ids the kernel sees through the mount are `hostID`. Empty mappings mean the
/// container's own, as runc and crun take them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountIdmap {
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
    /// `ridmap`: submounts are idmapped too.
    pub recursive: bool,
}

impl MountIdmap {
    /// Whether the mount carries mappings of its own (else the container's are used).
    pub fn has_own_mappings(&self) -> bool {
        !self.uid_mappings.is_empty() || !self.gid_mappings.is_empty()
    }
}

/// The mount's idmapping, if it has one.
fn mount_idmap(m: &Mount, has_opt: impl Fn(&str) -> bool) -> Option<MountIdmap> {
    let uid_mappings = m.uid_mappings().clone().unwrap_or_default();
    let gid_mappings = m.gid_mappings().clone().unwrap_or_default();
    let recursive = has_opt("ridmap");
    let idmapped =
        recursive || has_opt("idmap") || !uid_mappings.is_empty() || !gid_mappings.is_empty();
    idmapped.then_some(MountIdmap {
        uid_mappings,
        gid_mappings,
        recursive,
    })
}

/// What the tool needs to know from a config.json.
#[derive(Debug, Clone)]
pub struct View {
    /// The rootfs, made absolute against the bundle.
    pub rootfs: Option<PathBuf>,
    pub binds: Vec<BindMount>,
    /// Mounts that are not bind mounts: (index, destination, type).
    pub others: Vec<(usize, PathBuf, String)>,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
    /// `process.user` uid and gid; 0/0 when absent.
    pub user: (u32, u32),
    pub annotations: serde_json::Map<String, Value>,
}

impl View {
    /// `base` is the bundle directory, where relative paths are taken from: `root.path`, and
    /// bind sources, which runc joins to the bundle (its working directory) — so that a
    /// relative source reaching into a chroot is prepared, or refused, like an absolute one.
    pub fn of(doc: &Value, base: &Path) -> Result<View> {
        if !doc.is_object() {
            bail!("config.json is not a JSON object");
        }
        let base =
            &std::path::absolute(base).with_context(|| format!("bundle {}", base.display()))?;
        let rootfs = match doc.pointer("/root/path") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if !p.is_empty() => Some(base.join(p)),
            Some(other) => bail!("config.json: root.path is not a path: {other}"),
        };
        let mut binds = Vec::new();
        let mut others = Vec::new();
        if let Some(mounts) = doc.get("mounts").filter(|m| !m.is_null()) {
            let mounts = mounts
                .as_array()
                .ok_or_else(|| anyhow!("config.json: mounts is not an array"))?;
            for (index, m) in mounts.iter().enumerate() {
                check_lengths(m, index)?;
                let m = Mount::deserialize(m)
                    .with_context(|| format!("config.json: mounts[{index}]"))?;
                let typ = m.typ().clone().unwrap_or_default();
                let has_opt = |o: &str| {
                    m.options()
                        .as_ref()
                        .is_some_and(|opts| opts.iter().any(|x| x == o))
                };
                let is_bind = typ == "bind" || has_opt("bind") || has_opt("rbind");
                match m.source() {
                    // Joined as written: a `..` stays for `chroot::place` to judge.
                    Some(source) if is_bind => binds.push(BindMount {
                        index,
                        destination: m.destination().clone(),
                        source: base.join(source),
                        idmap: mount_idmap(&m, has_opt),
                    }),
                    _ => others.push((index, m.destination().clone(), typ)),
                }
            }
        }
        let mappings = |key: &str| -> Result<Vec<LinuxIdMapping>> {
            match doc.pointer(&format!("/linux/{key}")) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(v) => serde_json::from_value(v.clone())
                    .with_context(|| format!("config.json: linux.{key}")),
            }
        };
        let id = |key: &str| -> Result<u32> {
            match doc.pointer(&format!("/process/user/{key}")) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        anyhow!("config.json: process.user.{key} is not a 32-bit id: {v}")
                    }),
            }
        };
        let annotations = match doc.get("annotations") {
            Some(Value::Object(a)) => a.clone(),
            _ => Default::default(),
        };
        Ok(View {
            rootfs,
            binds,
            others,
            uid_mappings: mappings("uidMappings")?,
            gid_mappings: mappings("gidMappings")?,
            user: (id("uid")?, id("gid")?),
            annotations,
        })
    }
}

/// Refuses a mount whose source or destination no runtime could use (PATH_MAX counts the
/// NUL) before it is copied about: a 30 MB source must not cost five times 30 MB.
fn check_lengths(mount: &Value, index: usize) -> Result<()> {
    let text = |key: &str| mount.get(key).and_then(Value::as_str).unwrap_or_default();
    let (source, dest) = (text("source"), text("destination"));
    let dest = if dest.len() < PATH_MAX {
        dest
    } else {
        "(too long)"
    };
    for (what, len) in [
        ("source", source.len()),
        ("destination", text("destination").len()),
    ] {
        if len >= PATH_MAX {
            bail!(
                "config.json: mount {dest} (mounts[{index}]): the {what} is {len} bytes long: paths must be shorter than PATH_MAX ({PATH_MAX})"
            );
        }
    }
    Ok(())
}

/// Points `mounts[index].source` at `source`, leaving every other field as it was.
pub fn set_source(doc: &mut Value, index: usize, source: &Path) -> Result<()> {
    let source = source
        .to_str()
        .ok_or_else(|| anyhow!("resolved source {} is not UTF-8", source.display()))?;
    let slot = doc
        .pointer_mut(&format!("/mounts/{index}/source"))
        .ok_or_else(|| anyhow!("config.json: mounts[{index}] has no source"))?;
    *slot = Value::String(source.to_string());
    Ok(())
}

/// Makes `mounts[index]` an idmapped mount with the container's own mappings: the option
/// `idmap` is added (once), every other field left as it was.
pub fn add_idmap(doc: &mut Value, index: usize) -> Result<()> {
    let mount = doc
        .pointer_mut(&format!("/mounts/{index}"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("config.json: mounts[{index}] is not an object"))?;
    let options = mount
        .entry("options")
        .or_insert_with(|| Value::Array(Vec::new()));
    if options.is_null() {
        *options = Value::Array(Vec::new());
    }
    let options = options
        .as_array_mut()
        .ok_or_else(|| anyhow!("config.json: mounts[{index}].options is not an array"))?;
    if !options.iter().any(|o| o == "idmap" || o == "ridmap") {
        options.push(Value::String("idmap".into()));
    }
    Ok(())
}

/// A name for log lines when only config.json is at hand.
pub fn container_id(doc: &Value) -> String {
    const KEYS: [&str; 3] = [
        "io.kubernetes.cri-o.ContainerID",
        "io.container.id",
        "io.podman.annotations.name",
    ];
    KEYS.iter()
        .find_map(|k| {
            doc.pointer(&format!("/annotations/{}", k.replace('/', "~1")))
                .and_then(Value::as_str)
        })
        .or_else(|| doc.get("hostname").and_then(Value::as_str))
        .unwrap_or("-")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relative_bind_sources_are_the_bundles_as_runc_takes_them() {
        let doc = json!({"mounts": [
            {"destination": "/a", "source": "data", "options": ["rbind"]},
            {"destination": "/b", "source": "../../c/t/x", "options": ["rbind"]}
        ]});
        let v = View::of(&doc, Path::new("/run/b")).unwrap();
        assert_eq!(v.binds[0].source, Path::new("/run/b/data"));
        assert_eq!(v.binds[1].source, Path::new("/run/b/../../c/t/x"));
        // `..` reaching a chroot is what `place` refuses, whatever the path it came in by.
        let chroots = [crate::chroot::Pattern::parse("/c/*").unwrap()];
        assert!(matches!(
            crate::chroot::place(&chroots, &v.binds[1].source, true),
            Err(crate::chroot::Misplaced::DotDot { .. })
        ));
        let cwd = std::env::current_dir().unwrap();
        let v = View::of(&doc, Path::new("bundle")).unwrap();
        assert_eq!(v.binds[0].source, cwd.join("bundle/data"));
    }

    #[test]
    fn finds_bind_mounts_and_keeps_the_rest() {
        let doc = json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"user": {"uid": 1000, "gid": 100}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/localtime", "type": "bind", "source": "/c/t/etc/localtime", "options": ["ro"]},
                {"destination": "/data", "source": "/c/t/data", "options": ["rbind", "rw"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
            ],
            "linux": {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]},
            "x-unknown": {"kept": true}
        });
        let v = View::of(&doc, Path::new("/bundle")).unwrap();
        assert_eq!(v.rootfs.as_deref(), Some(Path::new("/bundle/rootfs")));
        assert_eq!(
            v.binds.iter().map(|b| b.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(v.others.len(), 2);
        assert_eq!(v.user, (1000, 100));
        assert_eq!(v.uid_mappings.len(), 1);
        assert!(v.gid_mappings.is_empty());

        let mut doc2 = doc.clone();
        set_source(&mut doc2, 1, Path::new("/c/t/usr/share/zoneinfo/UTC")).unwrap();
        assert_eq!(doc2["mounts"][1]["source"], "/c/t/usr/share/zoneinfo/UTC");
        assert_eq!(doc2["mounts"][1]["options"], json!(["ro"]));
        assert_eq!(doc2["x-unknown"], json!({"kept": true}));
        doc2["mounts"][1]["source"] = doc["mounts"][1]["source"].clone();
        assert_eq!(doc, doc2);
    }

    #[test]
    fn idmapped_mounts_are_seen_with_their_mappings() {
        let map = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        let doc = json!({"mounts": [
            {"destination": "/a", "source": "/c/t/a", "options": ["rbind", "idmap"]},
            {"destination": "/b", "source": "/c/t/b", "options": ["rbind", "ridmap"]},
            {"destination": "/c", "source": "/c/t/c", "type": "bind",
             "uidMappings": map, "gidMappings": map},
            {"destination": "/d", "source": "/c/t/d", "options": ["rbind"]}
        ]});
        let v = View::of(&doc, Path::new("/")).unwrap();
        let idmaps: Vec<_> = v.binds.iter().map(|b| b.idmap.clone()).collect();
        assert_eq!(idmaps[0], Some(MountIdmap::default()));
        assert!(idmaps[1].as_ref().unwrap().recursive);
        assert!(idmaps[2].as_ref().unwrap().has_own_mappings());
        assert_eq!(
            idmaps[2].as_ref().unwrap().uid_mappings[0].host_id(),
            200000
        );
        assert_eq!(idmaps[3], None);
    }

    #[test]
    fn add_idmap_adds_the_option_once_and_keeps_the_rest() {
        let mut doc = json!({"mounts": [
            {"destination": "/a", "source": "/s", "options": ["rbind", "rw"], "x": 1},
            {"destination": "/b", "source": "/s", "type": "bind"},
            {"destination": "/c", "source": "/s", "options": ["ridmap"]}
        ]});
        for i in 0..3 {
            add_idmap(&mut doc, i).unwrap();
            add_idmap(&mut doc, i).unwrap();
        }
        assert_eq!(doc["mounts"][0]["options"], json!(["rbind", "rw", "idmap"]));
        assert_eq!(doc["mounts"][0]["x"], 1);
        assert_eq!(doc["mounts"][1]["options"], json!(["idmap"]));
        assert_eq!(doc["mounts"][2]["options"], json!(["ridmap"]));
        assert!(add_idmap(&mut doc, 9).is_err());
    }

    #[test]
    fn bad_documents() {
        assert!(View::of(&json!([1]), Path::new("/")).is_err());
        assert!(View::of(&json!({"mounts": {}}), Path::new("/")).is_err());
        assert!(View::of(&json!({"mounts": [{"type": "bind"}]}), Path::new("/")).is_err());
        assert!(View::of(&json!({"process": {"user": {"uid": -1}}}), Path::new("/")).is_err());
        assert!(View::of(&json!({"root": {"path": 3}}), Path::new("/")).is_err());
        assert!(
            View::of(
                &json!({"linux": {"uidMappings": [{"containerID": "x"}]}}),
                Path::new("/")
            )
            .is_err()
        );
        assert!(
            View::of(&json!({}), Path::new("/"))
                .unwrap()
                .rootfs
                .is_none()
        );
    }

    #[test]
    fn oversized_and_malformed_input() {
        assert!(read_config(&b"{\"a\":"[..], "stdin").is_err());
        let big = std::io::repeat(b' ').take(MAX_DOCUMENT + 10);
        let err = read_config(big, "stdin").unwrap_err();
        assert!(err.to_string().contains("larger than"));
    }
}
