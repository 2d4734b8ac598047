//! Planning and preparing the bind-mount sources of one container.
//!
//! Everything is planned first, read-only; a container with any mount that cannot be fixed is
//! refused before anything is touched. Then each source is brought to the wanted state by a
//! loop that re-resolves after every change, so concurrent preparers and a tenant changing
//! its tree converge or fail, but never act on a stale path.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode as Perm, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, unlinkat};
use serde::Serialize;

use crate::chroot;
use crate::config::{self, ANNOTATION_PREFIX, Config, Ownership};
use crate::ownership;
use crate::resolve::{Found, Kind, Lookup, Node, Root, open_nofollow};
use crate::spec::View;

/// What the container needs at a mount's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Want {
    File,
    Dir,
    /// The image has nothing there: an existing source of either type will do, a missing
    /// one becomes a directory, as the engines do.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Nothing,
    Chown,
    CreateFile,
    CreateDir,
    /// Replace an empty directory by an empty file.
    Repair,
    Refuse,
}

/// How the caller will use the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An OCI hook: config.json cannot change, so a source that the host would resolve
    /// differently from the chroot is refused.
    Hook,
    /// precreate and the runtime wrapper: sources going through symlinks are rewritten to
    /// the path resolved inside the chroot.
    Rewrite,
}

/// One mount of the container, what it needs and what the tool does about it.
#[derive(Debug, Clone, Serialize)]
pub struct MountPlan {
    pub index: usize,
    pub destination: PathBuf,
    pub source: Option<PathBuf>,
    pub chroot: Option<PathBuf>,
    pub wanted: Option<Want>,
    pub action: Action,
    pub reason: String,
    /// Host uid and gid the source is given to.
    pub owner: Option<Owner>,
    /// How far ownership is changed for this container.
    pub ownership: Option<Ownership>,
    /// The host file whose content a created file receives (`seed_from_host`).
    pub seed_from: Option<PathBuf>,
    /// The source resolved inside its chroot, when that differs from `source`.
    pub resolved_source: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl MountPlan {
    /// "mount /dst (source /src)", how every message names a mount.
    pub fn name(&self) -> String {
        match &self.source {
            Some(s) => format!(
                "mount {} (source {})",
                self.destination.display(),
                s.display()
            ),
            None => format!("mount {}", self.destination.display()),
        }
    }
}

/// The mounts of one container, with the roots they are resolved in.
pub struct Preparer<'a> {
    view: &'a View,
    config: &'a Config,
    mode: Mode,
    rootfs: Option<Root>,
    chroots: HashMap<PathBuf, Result<Root, String>>,
    /// The descriptor of each prepared source, by mount index: what was checked is what gets
    /// mounted (see `staging`).
    checked: HashMap<usize, Node>,
    /// Whether a directory (chroot, path in it) could be changed by someone but root.
    changeable: HashMap<(PathBuf, PathBuf), bool>,
}

impl<'a> Preparer<'a> {
    pub fn new(config: &'a Config, view: &'a View, mode: Mode) -> Preparer<'a> {
        Preparer {
            view,
            config,
            mode,
            rootfs: None,
            chroots: HashMap::new(),
            checked: HashMap::new(),
            changeable: HashMap::new(),
        }
    }

    /// The plan for every mount, in config.json order. Touches nothing.
    /// Errors that concern the whole container (no rootfs, unmapped ids) are returned as
    /// errors, naming the first mount they affect.
    pub fn plan(&mut self) -> Result<Vec<MountPlan>> {
        let settings = self.config.settings(&self.view.annotations)?;
        let mut plans: Vec<MountPlan> = Vec::new();
        let mut owner: Option<Owner> = None;
        for b in &self.view.binds {
            let mut p = MountPlan {
                index: b.index,
                destination: b.destination.clone(),
                source: Some(b.source.clone()),
                chroot: None,
                wanted: None,
                action: Action::Nothing,
                reason: String::new(),
                owner: None,
                ownership: None,
                seed_from: None,
                resolved_source: None,
            };
            let located = if b.source.is_absolute() {
                chroot::locate(&self.config.chroots, &b.source)
            } else {
                Ok(None)
            };
            match located {
                Err(e)
                    if chroot::locate(&self.config.chroots, &strip_dotdot(&b.source))
                        .ok()
                        .flatten()
                        .is_some() =>
                {
                    p.action = Action::Refuse;
                    p.reason = format!("{e:#}");
                }
                Ok(Some(_)) if !settings.enabled => {
                    p.reason = format!(
                        "disabled for this container by annotation {ANNOTATION_PREFIX}enabled"
                    );
                }
                Ok(Some(inside)) => {
                    if owner.is_none() {
                        owner = Some(self.owner(settings.owner).with_context(|| p.name())?);
                        self.open_rootfs().with_context(|| p.name())?;
                    }
                    p.chroot = Some(inside.chroot.clone());
                    p.owner = owner;
                    p.ownership = Some(settings.ownership);
                    self.plan_in_chroot(&mut p, &inside);
                }
                _ => p.reason = "source is in no chroot".into(),
            }
            plans.push(p);
        }
        for (index, dest, typ) in &self.view.others {
            plans.push(MountPlan {
                index: *index,
                destination: dest.clone(),
                source: None,
                chroot: None,
                wanted: None,
                action: Action::Nothing,
                reason: format!(
                    "not a bind mount ({})",
                    if typ.is_empty() { "no type" } else { typ }
                ),
                owner: None,
                ownership: None,
                seed_from: None,
                resolved_source: None,
            });
        }
        plans.sort_by_key(|p| p.index);
        Ok(plans)
    }

    /// Plans, refuses the whole container if any mount cannot be fixed, then prepares.
    /// The returned plans carry the in-chroot path of every source that must be rewritten.
    pub fn prepare(&mut self) -> Result<Vec<MountPlan>> {
        let mut plans = self.plan()?;
        for p in &plans {
            if p.action == Action::Refuse {
                tracing::error!(mount = %p.destination.display(), "{}: {}", p.name(), p.reason);
            }
        }
        if let Some(p) = plans.iter().find(|p| p.action == Action::Refuse) {
            bail!("{}: {}", p.name(), p.reason);
        }
        if let Some(p) = plans.iter().find(|p| p.chroot.is_some()) {
            let mut needed = vec![
                Capability::CAP_CHOWN,
                Capability::CAP_DAC_OVERRIDE,
                Capability::CAP_FOWNER,
            ];
            if self.mode == Mode::Rewrite && self.config.pin_sources != config::Pin::Never {
                needed.push(Capability::CAP_SYS_ADMIN); // the staging mounts
            }
            require_capabilities(&needed).with_context(|| p.name())?;
        }
        // A mount planned as `nothing` is already right: resolving it again would only cost.
        for p in plans
            .iter_mut()
            .filter(|p| p.chroot.is_some() && p.action != Action::Nothing)
        {
            let (resolved, node) = self.apply(p).with_context(|| p.name())?;
            p.resolved_source = resolved;
            self.checked.insert(p.index, node);
        }
        Ok(plans)
    }

    /// After [`prepare`](Self::prepare): each source in a chroot as the descriptor that was
    /// checked, with its type.
    pub fn take_checked(&mut self) -> Vec<(usize, Node)> {
        let mut v: Vec<(usize, Node)> = self.checked.drain().collect();
        v.sort_by_key(|(i, _)| *i);
        v
    }

    /// Whether the tenant could swap a directory on the way to the (resolved) source of
    /// `plan`, i.e. whether the runtime must be handed a pinned copy rather than the path.
    /// Only a directory that is not root's, or that others may write, can have its entries
    /// renamed by a tenant; if none lies between the chroot and the source, the path the
    /// tool checked is the path the runtime will resolve. Checked from the chroot down, so
    /// each step stands on directories no tenant can change.
    pub fn could_be_swapped(&mut self, plan: &MountPlan) -> bool {
        let (Some(chroot_path), Some(source)) = (&plan.chroot, &plan.source) else {
            return true;
        };
        let rel = match &plan.resolved_source {
            Some(r) => r.strip_prefix(chroot_path).map(Path::to_path_buf).ok(),
            None => chroot::locate(&self.config.chroots, source)
                .ok()
                .flatten()
                .map(|i| i.rel),
        };
        let Some(parent) = rel.as_deref().and_then(Path::parent) else {
            return true;
        };
        // The chroot, then each directory below it; mounts share most of them.
        let steps = std::iter::once(PathBuf::new()).chain(
            parent
                .ancestors()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .skip(1)
                .map(Path::to_path_buf),
        );
        let chroot_path = chroot_path.clone();
        for dir in steps {
            let key = (chroot_path.clone(), dir);
            let changeable = match self.changeable.get(&key) {
                Some(c) => *c,
                None => {
                    let c = match self
                        .chroot(&chroot_path)
                        .ok()
                        .and_then(|root| root.stat_plain(&key.1))
                    {
                        Some(st) => st.st_uid != 0 || st.st_mode & 0o022 != 0,
                        None => true,
                    };
                    *self.changeable.entry(key).or_insert(c)
                }
            };
            if changeable {
                return true;
            }
        }
        false
    }

    fn owner(&self, owner: config::Owner) -> Result<Owner> {
        let (uid, gid) = ownership::host_owner(owner, self.view)?;
        Ok(Owner { uid, gid })
    }

    fn open_rootfs(&mut self) -> Result<()> {
        let path = self
            .view
            .rootfs
            .as_ref()
            .ok_or_else(|| anyhow!("config.json has no root.path"))?;
        self.rootfs = Some(Root::open(path).with_context(|| format!("rootfs {}", path.display()))?);
        Ok(())
    }

    fn chroot(&mut self, path: &Path) -> Result<&Root, String> {
        self.chroots
            .entry(path.to_path_buf())
            .or_insert_with(|| Root::open_chroot(path).map_err(|e| format!("chroot {e:#}")))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// What the image has at `dest`, symlinks resolved inside the image.
    fn wanted(&self, dest: &Path) -> Want {
        let rootfs = self
            .rootfs
            .as_ref()
            .expect("rootfs opened before planning a chroot mount");
        let rel = dest.strip_prefix("/").unwrap_or(dest);
        if let Some(node) = rootfs.lookup_plain(rel) {
            return if node.kind == Kind::Dir {
                Want::Dir
            } else {
                Want::File
            };
        }
        match rootfs.lookup(dest) {
            Ok(Lookup::Found(f)) if f.node.kind == Kind::Dir => Want::Dir,
            Ok(Lookup::Found(_)) => Want::File,
            Ok(Lookup::Missing(_)) => Want::Any,
            Err(e) => {
                // The runtime will report this itself when it mounts; no reason to guess.
                tracing::debug!("destination {} in the image: {e:#}", dest.display());
                Want::Any
            }
        }
    }

    fn plan_in_chroot(&mut self, p: &mut MountPlan, inside: &chroot::InChroot) {
        let mut want = self.wanted(&p.destination);
        // The chroot stands for the host: `<chroot>/etc/localtime` is the host's /etc/localtime.
        let seed = self
            .config
            .seed_from_host
            .iter()
            .find(|h| h.strip_prefix("/").ok() == Some(inside.rel.as_path()));
        let seed_meta = seed.and_then(|h| std::fs::metadata(h).ok());
        if want == Want::Any {
            if let Some(m) = &seed_meta {
                want = if m.is_dir() { Want::Dir } else { Want::File };
            }
        }
        let seed_file = seed
            .filter(|_| seed_meta.as_ref().is_some_and(|m| m.is_file()))
            .cloned();
        p.wanted = Some(want);
        let ownership = p.ownership.unwrap_or_default();
        let mode = self.mode;
        let owner = p.owner.expect("owner set for chroot mounts");
        let dest = p.destination.display().to_string();
        let source = p.source.clone().expect("bind mounts have a source");
        let root = match self.chroot(&inside.chroot) {
            Ok(r) => r,
            Err(e) => return refuse(p, e),
        };
        // Already there, no symlink on the way: one openat2 tells all.
        if let Some(node) = root.lookup_plain(&inside.rel) {
            if matches!(
                (want, node.kind),
                (Want::File, Kind::File)
                    | (Want::Dir, Kind::Dir)
                    | (Want::Any, Kind::File | Kind::Dir)
            ) {
                plan_owner(p, &node, owner, ownership);
                self.checked.insert(p.index, node);
                return;
            }
        }
        let lookup = match root.lookup(&inside.rel) {
            Ok(l) => l,
            Err(e) => return refuse(p, format!("{e:#}")),
        };
        let (via_symlink, rel) = match &lookup {
            Lookup::Found(f) => (f.via_symlink, f.rel.clone()),
            Lookup::Missing(m) => (m.via_symlink, m.parent_rel.join(&m.name)),
        };
        if rel.as_os_str().is_empty() {
            return refuse(p, "resolves to the chroot itself".into());
        }
        let resolved = root.host_path(&rel);
        if via_symlink && resolved.to_str().is_none() {
            // config.json is UTF-8: such a source could not be written back.
            return refuse(
                p,
                format!(
                    "resolves inside the chroot to {}, which is not UTF-8",
                    resolved.display()
                ),
            );
        }
        if via_symlink {
            if mode == Mode::Hook {
                let host = std::fs::canonicalize(&source).ok();
                if host.as_deref() != Some(resolved.as_path())
                    || matches!(lookup, Lookup::Missing(_))
                {
                    let host = host.map_or("nothing".into(), |h| h.display().to_string());
                    return refuse(
                        p,
                        format!(
                            "goes through a symlink: inside the chroot it is {}, the host resolves {}; an OCI hook cannot rewrite the mount (use the precreate hook or oci-volume-runtime)",
                            resolved.display(),
                            host
                        ),
                    );
                }
            }
            p.resolved_source = Some(resolved.clone());
        }
        let found = match lookup {
            Lookup::Missing(m) => {
                let (action, reason) = match (m.is_last, want) {
                    (true, Want::File) => (
                        Action::CreateFile,
                        format!("missing; the image has a file at {dest}"),
                    ),
                    (true, Want::Dir) => (
                        Action::CreateDir,
                        format!("missing; the image has a directory at {dest}"),
                    ),
                    (true, Want::Any) => (
                        Action::CreateDir,
                        format!("missing; the image has nothing at {dest}, so a directory"),
                    ),
                    (false, _) => (
                        what_for(want),
                        format!(
                            "missing from {} on; parents are created as directories",
                            root.host_path(&m.parent_rel.join(&m.name)).display()
                        ),
                    ),
                };
                p.action = action;
                p.reason = reason;
                if action == Action::CreateFile {
                    p.seed_from = seed_file.clone();
                }
                if let Some(h) = &p.seed_from {
                    p.reason += &format!("; its content is copied from the host's {}", h.display());
                }
                return;
            }
            Lookup::Found(f) => f,
        };
        let kind = found.node.kind;
        match (want, kind) {
            (Want::File, Kind::Dir) => match is_empty_dir(&found) {
                Ok(true) => {
                    p.action = Action::Repair;
                    p.seed_from = seed_file.clone();
                    p.reason = match &p.seed_from {
                        None => format!(
                            "an empty directory where the image has a file at {dest}: replaced by an empty file"
                        ),
                        Some(h) => format!(
                            "an empty directory where the image has a file at {dest}: replaced by a copy of the host's {}",
                            h.display()
                        ),
                    };
                }
                Ok(false) => refuse(
                    p,
                    format!("is a non-empty directory, but the image has a file at {dest}"),
                ),
                Err(e) => refuse(p, format!("{e:#}")),
            },
            (Want::Dir, Kind::File) => refuse(
                p,
                format!("is a regular file, but the image has a directory at {dest}"),
            ),
            (_, Kind::Dir | Kind::File) => {
                plan_owner(p, &found.node, owner, ownership);
                self.checked.insert(p.index, found.node);
            }
            (_, other) => refuse(p, format!("is a {other}, not a regular file or directory")),
        }
    }

    /// Brings one source to the planned state; returns its in-chroot path if it must be
    /// rewritten.
    fn apply(&mut self, p: &MountPlan) -> Result<(Option<PathBuf>, Node)> {
        let (Some(chroot_path), Some(source), Some(want), Some(owner)) =
            (&p.chroot, &p.source, p.wanted, p.owner)
        else {
            bail!("not a mount in a chroot");
        };
        let ownership = p.ownership.unwrap_or_default();
        let chown = |fd: &OwnedFd| {
            if ownership == Ownership::None {
                Ok(())
            } else {
                chown(fd, owner)
            }
        };
        let inside =
            chroot::locate(&self.config.chroots, source)?.expect("planned inside a chroot");
        let root = self.chroot(chroot_path).map_err(|e| anyhow!(e))?;
        let max_steps = 2 * inside.rel.components().count() + 64;
        for _ in 0..max_steps {
            match root.lookup(&inside.rel)? {
                Lookup::Missing(m) => {
                    let name = m.name.as_os_str();
                    if !m.is_last || want != Want::File {
                        match mkdirat(&m.parent, name, Perm::from_bits_truncate(0o755)) {
                            Ok(()) => {
                                let fd = open_nofollow(&m.parent, name, OFlag::O_DIRECTORY)?;
                                chown(&fd)?;
                                tracing::info!(
                                    "created directory {}",
                                    root.host_path(&m.parent_rel.join(name)).display()
                                );
                            }
                            Err(Errno::EEXIST) => {}
                            Err(e) => bail!(
                                "creating directory {}: {}",
                                root.host_path(&m.parent_rel.join(name)).display(),
                                e.desc()
                            ),
                        }
                    } else {
                        let path = root.host_path(&m.parent_rel.join(name));
                        let created = match &p.seed_from {
                            Some(host) => create_seeded(&m.parent, name, host, |fd| chown(fd)),
                            None => create_empty(&m.parent, name, |fd| chown(fd)),
                        };
                        if created.with_context(|| format!("creating file {}", path.display()))? {
                            match &p.seed_from {
                                Some(h) => tracing::info!(
                                    "created file {} from the host's {}",
                                    path.display(),
                                    h.display()
                                ),
                                None => tracing::info!("created file {}", path.display()),
                            }
                        }
                    }
                }
                Lookup::Found(f) => {
                    let Some((parent, name)) = &f.parent else {
                        bail!("resolves to the chroot itself")
                    };
                    let path = root.host_path(&f.rel);
                    match (want, f.node.kind) {
                        (Want::File, Kind::Dir) => {
                            // rmdir removes nothing but an empty directory, whatever the name
                            // now stands for.
                            match unlinkat(parent, name.as_os_str(), UnlinkatFlags::RemoveDir) {
                                Ok(()) => tracing::info!(
                                    "removed empty directory {} to make it a file",
                                    path.display()
                                ),
                                Err(Errno::ENOENT | Errno::ENOTDIR) => {}
                                Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
                                    bail!(
                                        "{} is a non-empty directory, but the image has a file at {}",
                                        path.display(),
                                        p.destination.display()
                                    )
                                }
                                Err(e) => bail!(
                                    "removing empty directory {}: {}",
                                    path.display(),
                                    e.desc()
                                ),
                            }
                        }
                        (Want::Dir, Kind::File) => {
                            bail!(
                                "{} is a regular file, but the image has a directory at {}",
                                path.display(),
                                p.destination.display()
                            )
                        }
                        (_, Kind::Dir | Kind::File) => {
                            if ownership != Ownership::None && chown_needed(&f.node, owner)? {
                                if ownership == Ownership::RecursiveOnMismatch
                                    && f.node.kind == Kind::Dir
                                {
                                    let stats =
                                        ownership::chown_below(&f.node.fd, owner.uid, owner.gid)
                                            .with_context(|| {
                                                format!("changing owners below {}", path.display())
                                            })?;
                                    tracing::info!(
                                        "below {}: {} changed, {} already right, {} hard-linked files and {} mount points left alone",
                                        path.display(),
                                        stats.changed,
                                        stats.already_right,
                                        stats.skipped_hard_links,
                                        stats.skipped_mounts
                                    );
                                }
                                // The top last: if anything above failed, a rerun sees the
                                // mismatch and walks again.
                                chown(&f.node.fd)?;
                                tracing::info!(
                                    "gave {} to {}:{}",
                                    path.display(),
                                    owner.uid,
                                    owner.gid
                                );
                            }
                            return Ok((f.via_symlink.then_some(path), f.node));
                        }
                        (_, other) => bail!(
                            "{} is a {other}, not a regular file or directory",
                            path.display()
                        ),
                    }
                }
            }
        }
        bail!(
            "{} keeps changing while it is prepared; gave up",
            p.source.as_deref().unwrap_or(Path::new("")).display()
        )
    }
}

fn what_for(want: Want) -> Action {
    if want == Want::File {
        Action::CreateFile
    } else {
        Action::CreateDir
    }
}

fn refuse(p: &mut MountPlan, reason: String) {
    p.action = Action::Refuse;
    p.reason = reason;
}

/// Fails, naming what is missing, unless every capability in `needed` is effective: the
/// tool must run as host root (rootless engines cannot use it).
pub fn require_capabilities(needed: &[Capability]) -> Result<()> {
    let effective =
        caps::read(None, CapSet::Effective).map_err(|e| anyhow!("reading capabilities: {e}"))?;
    let missing: Vec<String> = needed
        .iter()
        .filter(|c| !effective.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing capabilities {}: the tool must run as host root with them (rootless engines are not supported)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// `a/../b` → `a/b`: only used to tell whether a refused path was aimed at a chroot.
fn strip_dotdot(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::ParentDir))
        .collect()
}

/// Whether the owner must change; a hard-linked file is refused, since its other names may
/// lie outside the chroot.
/// Plans `nothing` or `chown` for a source of the right type.
fn plan_owner(p: &mut MountPlan, node: &Node, owner: Owner, ownership: Ownership) {
    let kind = node.kind;
    if ownership == Ownership::None {
        p.reason = format!("already a {kind}; ownership = none leaves its owner as is");
        return;
    }
    match chown_needed(node, owner) {
        Ok(false) => p.reason = format!("already a {kind} owned by {}:{}", owner.uid, owner.gid),
        Ok(true) => {
            p.action = Action::Chown;
            p.reason = format!(
                "a {kind} owned by {}:{}, wanted {}:{}",
                node.stat.st_uid, node.stat.st_gid, owner.uid, owner.gid
            );
            if ownership == Ownership::RecursiveOnMismatch && kind == Kind::Dir {
                p.reason += "; everything below it too (recursive-on-mismatch)";
            }
        }
        Err(e) => refuse(p, format!("{e:#}")),
    }
}

fn chown_needed(node: &Node, owner: Owner) -> Result<bool> {
    let st = &node.stat;
    if st.st_uid == owner.uid && st.st_gid == owner.gid {
        return Ok(false);
    }
    if node.kind == Kind::File && st.st_nlink > 1 {
        bail!(
            "is a file with {} hard links; its owner is not changed, as another link may lie outside the chroot",
            st.st_nlink
        );
    }
    Ok(true)
}

/// Creates an empty file with `O_CREAT|O_EXCL|O_NOFOLLOW`, then `finish`es it through its
/// descriptor. `false` when the name exists already, whatever it is.
fn create_empty(
    parent: &OwnedFd,
    name: &OsStr,
    finish: impl Fn(&OwnedFd) -> Result<()>,
) -> Result<bool> {
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    match openat(parent, name, flags, Perm::from_bits_truncate(0o644)) {
        Ok(fd) => finish(&fd).map(|()| true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates a file holding a copy of the host file `host`: written and `finish`ed as an
/// unnamed `O_TMPFILE`, then linked in, so the name appears complete or not at all (`linkat`
/// fails with `EEXIST` like `O_EXCL`) and a failed copy leaves nothing behind.
fn create_seeded(
    parent: &OwnedFd,
    name: &OsStr,
    host: &Path,
    finish: impl Fn(&OwnedFd) -> Result<()>,
) -> Result<bool> {
    let tmp = match openat(
        parent,
        ".",
        OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Perm::from_bits_truncate(0o644),
    ) {
        Ok(fd) => fd,
        // A filesystem without O_TMPFILE: an exclusive create, then the copy.
        Err(Errno::EOPNOTSUPP | Errno::EISDIR) => {
            return create_empty(parent, name, |fd| {
                copy_host_file(host, fd)?;
                finish(fd)
            });
        }
        Err(e) => return Err(e.into()),
    };
    copy_host_file(host, &tmp)?;
    finish(&tmp)?;
    match linkat(&tmp, "", parent, name, AtFlags::AT_EMPTY_PATH) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The host side is trusted: its symlinks are followed.
fn copy_host_file(host: &Path, to: &OwnedFd) -> Result<()> {
    let mut src =
        std::fs::File::open(host).with_context(|| format!("opening {}", host.display()))?;
    let mut dst = std::fs::File::from(to.try_clone()?);
    std::io::copy(&mut src, &mut dst).with_context(|| format!("copying {}", host.display()))?;
    Ok(())
}

/// Changes the owner of exactly the inode `fd` refers to (`O_PATH` descriptors included).
fn chown(fd: &OwnedFd, owner: Owner) -> Result<()> {
    fchownat(
        fd.as_fd(),
        "",
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
        AtFlags::AT_EMPTY_PATH,
    )
    .context("chown")
}

fn is_empty_dir(f: &Found) -> Result<bool> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::openat(&f.node.fd, ".", flags, Perm::empty())
        .context("reading directory")?;
    for entry in dir.iter() {
        let name = entry
            .context("reading directory")?
            .file_name()
            .to_bytes()
            .to_vec();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}
