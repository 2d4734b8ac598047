//! The plan of one mount: what it is (not a bind, a host path, a source in a chroot, each
//! variant carrying exactly its data), what the tool does about it, and why.

use std::fmt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxIdMapping;
use serde::{Serialize, Serializer};

use crate::config::Ownership;
use crate::refusal::{Refusal, shorten};
pub use crate::wanted::{Want, Wanted};

/// What the tool does about a mount; a refusal says why, typed.
#[derive(Debug, Clone)]
pub enum Action {
    Nothing,
    Chown,
    CreateFile,
    CreateDir,
    /// Replace an empty directory by an empty file (or a copy of the seed file).
    Repair,
    Refuse(Refusal),
}

impl Action {
    /// The action's name in `plan` and its JSON (`create-file`...).
    pub fn word(&self) -> &'static str {
        match self {
            Action::Nothing => "nothing",
            Action::Chown => "chown",
            Action::CreateFile => "create-file",
            Action::CreateDir => "create-dir",
            Action::Repair => "repair",
            Action::Refuse(_) => "refuse",
        }
    }

    pub fn is_nothing(&self) -> bool {
        matches!(self, Action::Nothing)
    }

    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Action::Refuse(r) => Some(r),
            _ => None,
        }
    }
}

/// Host uid and gid a source is given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Who made a mount idmapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdmapBy {
    /// config.json has it so (`idmap`, `ridmap` or mount mappings).
    Engine,
    /// The tool adds `idmap` (`ownership = "idmap"`).
    Ownership,
}

/// The mapping a source's owner was computed through: the mount's own mappings, or the
/// container's when the mount has none (as runc and crun use them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Idmapped {
    pub by: IdmapBy,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
}

impl fmt::Display for Idmapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges = |maps: &[LinuxIdMapping]| {
            let r: Vec<String> = maps
                .iter()
                .map(|m| format!("{}:{}:{}", m.container_id(), m.host_id(), m.size()))
                .collect();
            if r.is_empty() {
                "identity".to_string()
            } else {
                r.join(",")
            }
        };
        let by = match self.by {
            IdmapBy::Engine => "by the engine",
            IdmapBy::Ownership => "by ownership = idmap",
        };
        write!(
            f,
            "idmapped {by}, uid {} gid {}",
            ranges(&self.uid_mappings),
            ranges(&self.gid_mappings)
        )
    }
}

/// What a mount is, as far as the tool is concerned.
#[derive(Debug, Clone)]
pub enum Target {
    /// Not a bind mount (`type` as config.json gives it, possibly empty).
    NotBind { kind: String },
    /// A bind source the tool leaves to the platform (in no chroot, a chroot itself,
    /// disabled by annotation) or refuses before it reaches a chroot (`..`, a chroot base).
    Host { source: PathBuf },
    /// A source in a tenant's chroot.
    Chroot(Box<ChrootMount>),
}

/// A source in a chroot, as planning found it.
#[derive(Debug, Clone)]
pub struct ChrootMount {
    pub source: PathBuf,
    /// The tenant's chroot, e.g. `/containerdata/user-toto`.
    pub chroot: PathBuf,
    /// The source below the chroot as written (`etc/localtime`): never empty, no `..`.
    pub rel: PathBuf,
    pub owner: Owner,
    /// How far ownership is changed for this container.
    pub ownership: Ownership,
    /// The mount is idmapped: `owner` is the on-disk owner seen through this mapping.
    pub idmap: Option<Idmapped>,
    /// Why `ownership = "idmap"` falls back to chowning, when it does.
    pub idmap_fallback: Option<String>,
    /// The type wanted and why.
    pub wanted: Wanted,
    /// The host file whose content a created (or repaired) file receives (`seed_from_host`).
    pub seed_from: Option<PathBuf>,
    /// The source resolved inside its chroot, when a symlink was followed on the way.
    pub resolved_source: Option<PathBuf>,
}

impl ChrootMount {
    /// How far owners are changed on disk: `idmap` chowns at most the top (to the id the
    /// container sees as its own through the mount), or, fallen back, recursively.
    pub fn chowning(&self) -> Ownership {
        match (self.ownership, &self.idmap) {
            (Ownership::Idmap, Some(_)) => Ownership::Top,
            (Ownership::Idmap, None) => Ownership::RecursiveOnMismatch,
            (o, _) => o,
        }
    }
}

/// One mount of the container, what it needs and what the tool does about it.
#[derive(Debug, Clone)]
pub struct MountPlan {
    /// Position in config.json's mounts.
    pub index: usize,
    pub destination: PathBuf,
    pub target: Target,
    pub action: Action,
    /// Why, as `plan` and the logs say it (a refusal's own text for a refusal).
    pub reason: String,
}

impl MountPlan {
    /// A plan whose action and reason are decided; a refusal brings its own text.
    pub fn new(index: usize, destination: PathBuf, target: Target, action: Action) -> MountPlan {
        let reason = action
            .refusal()
            .map(ToString::to_string)
            .unwrap_or_default();
        MountPlan {
            index,
            destination,
            target,
            action,
            reason,
        }
    }

    pub fn source(&self) -> Option<&Path> {
        match &self.target {
            Target::NotBind { .. } => None,
            Target::Host { source } => Some(source),
            Target::Chroot(m) => Some(&m.source),
        }
    }

    pub fn in_chroot(&self) -> Option<&ChrootMount> {
        match &self.target {
            Target::Chroot(m) => Some(m),
            _ => None,
        }
    }

    /// "mount /dst (source /src)", how every message names a mount.
    pub fn name(&self) -> String {
        name(&self.destination, self.source())
    }

    /// The mount's one line in `plan`.
    pub fn describe(&self) -> String {
        let mut line = format!("{:<12} {}", self.action.word(), self.destination.display());
        if let Some(s) = self.source() {
            line += &format!(" <- {}", s.display());
        }
        let Some(m) = self.in_chroot() else {
            return line + ": " + &self.reason;
        };
        if let Some(r) = &m.resolved_source {
            line += &format!(" (resolved: {})", r.display());
        }
        let mut facts = vec![format!("chroot {}", m.chroot.display())];
        facts.push(format!("image wants {}", m.wanted.want.word()));
        facts.push(format!("owner {}:{}", m.owner.uid, m.owner.gid));
        facts.push(format!("ownership {}", m.ownership.word()));
        if let Some(i) = &m.idmap {
            facts.push(i.to_string());
        }
        if let Some(why) = &m.idmap_fallback {
            facts.push(format!("not idmapped: {why}"));
        }
        format!("{line} [{}]: {}", facts.join(", "), self.reason)
    }
}

/// "mount /dst (source /src)", how every message names a mount.
pub fn name(destination: &Path, source: Option<&Path>) -> String {
    match source {
        Some(s) => format!("mount {} (source {})", shorten(destination), shorten(s)),
        None => format!("mount {}", shorten(destination)),
    }
}

impl Want {
    pub fn word(self) -> &'static str {
        match self {
            Want::File => "file",
            Want::Dir => "dir",
            Want::Any => "any",
        }
    }
}

/// `plan --json` version 1, field for field (README documents it; it must not change).
#[derive(Serialize)]
struct Wire<'a> {
    index: usize,
    destination: &'a Path,
    source: Option<&'a Path>,
    chroot: Option<&'a Path>,
    wanted: Option<Want>,
    action: &'static str,
    reason: &'a str,
    owner: Option<Owner>,
    ownership: Option<Ownership>,
    seed_from: Option<&'a Path>,
    resolved_source: Option<&'a Path>,
    /// Added in v1 without breaking it: null unless the mount is idmapped.
    idmap: Option<&'a Idmapped>,
    idmap_fallback: Option<&'a str>,
}

impl Serialize for MountPlan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.in_chroot();
        Wire {
            index: self.index,
            destination: &self.destination,
            source: self.source(),
            chroot: m.map(|m| m.chroot.as_path()),
            wanted: m.map(|m| m.wanted.want),
            action: self.action.word(),
            reason: &self.reason,
            owner: m.map(|m| m.owner),
            ownership: m.map(|m| m.ownership),
            seed_from: m.and_then(|m| m.seed_from.as_deref()),
            resolved_source: m.and_then(|m| m.resolved_source.as_deref()),
            idmap: m.and_then(|m| m.idmap.as_ref()),
            idmap_fallback: m.and_then(|m| m.idmap_fallback.as_deref()),
        }
        .serialize(s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}
