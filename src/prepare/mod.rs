//! Planning and preparing the bind-mount sources of one container.
//!
//! Everything is planned first, read-only (`plan.rs`); a container with any mount that cannot
//! be fixed is refused before anything is touched. Then each source is brought to the wanted
//! state (`apply.rs`) by one walk from the chroot that creates what is missing from held
//! descriptors, so concurrent preparers and a tenant changing its tree converge or fail, but
//! never act on a stale path. Both sides decide with one verdict, [`fit`].

mod apply;
mod plan;

use std::collections::HashMap;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use caps::{CapSet, Capability};
use nix::sys::stat::Mode as Perm;
use serde::Serialize;

use crate::chroot::{self, Place};
use crate::config::{self, ANNOTATION_PREFIX, Config, Ownership};
use crate::ownership;
use crate::resolve::{Chroot, Kind, Lookup, Node, Root};
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
    /// Where the wanted type comes from, for messages: "the image has a file at /x", or the
    /// host's seed file when the image has nothing there.
    #[serde(skip)]
    pub why_wanted: String,
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
                shorten(&self.destination),
                shorten(s)
            ),
            None => format!("mount {}", shorten(&self.destination)),
        }
    }
}

/// The one verdict on an existing source against what the container wants, shared by the
/// fast path, the plan and the apply loop (which meet the same cases at different times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// The right type (or any type will do): at most a chown.
    Fits,
    /// A directory where the image has a file: repaired if empty, else refused.
    DirForFile,
    /// A file where the image has a directory: refused.
    FileForDir,
    /// A FIFO, socket, device or symlink: refused, never opened.
    Special(Kind),
}

fn fit(want: Want, kind: Kind) -> Fit {
    match (want, kind) {
        (Want::File, Kind::Dir) => Fit::DirForFile,
        (Want::Dir, Kind::File) => Fit::FileForDir,
        (_, Kind::Dir | Kind::File) => Fit::Fits,
        (_, other) => Fit::Special(other),
    }
}

/// The mounts of one container, with the roots they are resolved in.
pub struct Preparer<'a> {
    view: &'a View,
    config: &'a Config,
    mode: Mode,
    rootfs: Option<Root>,
    chroots: HashMap<PathBuf, Result<Chroot, String>>,
    /// The soft RLIMIT_NOFILE to put back once done, when it had to be raised.
    saved_nofile: Option<(u64, u64)>,
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
            saved_nofile: None,
            checked: HashMap::new(),
            changeable: HashMap::new(),
        }
    }

    /// Makes sure the descriptors preparation may hold at once — one per source in a
    /// chroot (kept for pinning), one per chroot, a walk's worth and a margin — fit under
    /// RLIMIT_NOFILE, raising the soft limit to the hard one if needed (put back when the
    /// preparer is dropped, before the runtime starts). Otherwise the container is refused
    /// here, before any change, rather than half-prepared at the first EMFILE.
    fn reserve_descriptors(&mut self) -> Result<()> {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let mut chroots = std::collections::HashSet::new();
        let mut in_chroots = 0u64;
        for b in &self.view.binds {
            if let Ok(Place::Inside(i)) = chroot::place(&self.config.chroots, &b.source, false) {
                in_chroots += 1;
                chroots.insert(i.chroot);
            }
        }
        if in_chroots == 0 {
            return Ok(());
        }
        let needed = in_chroots + chroots.len() as u64 + chroot::MAX_COMPONENTS as u64 + 64;
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
        if needed <= soft {
            return Ok(());
        }
        if needed > hard {
            bail!(
                "{in_chroots} mounts in chroots need up to {needed} open files, more than the limit of {hard} (ulimit -n); nothing was changed"
            );
        }
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
        self.saved_nofile.get_or_insert((soft, hard));
        Ok(())
    }

    /// The plan for every mount, in config.json order. Touches nothing.
    /// Errors that concern the whole container (no rootfs, unmapped ids) are returned as
    /// errors, naming the first mount they affect.
    pub fn plan(&mut self) -> Result<Vec<MountPlan>> {
        let settings = self.config.settings(&self.view.annotations)?;
        self.reserve_descriptors()?;
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
                why_wanted: String::new(),
            };
            // Refusals of `..` and of chroot bases hold even where annotations disable the
            // tool: they are what keeps one tenant out of the others.
            match chroot::place(
                &self.config.chroots,
                &b.source,
                self.config.refuse_chroot_bases,
            ) {
                Err(e) => refuse(&mut p, format!("{e:#}")),
                Ok(Place::Inside(_)) if !settings.enabled => {
                    p.reason = format!(
                        "disabled for this container by annotation {ANNOTATION_PREFIX}enabled"
                    );
                }
                Ok(Place::Inside(inside)) => {
                    if owner.is_none() {
                        owner = Some(self.owner(settings.owner).with_context(|| p.name())?);
                        self.open_rootfs().with_context(|| p.name())?;
                    }
                    p.chroot = Some(inside.chroot.clone());
                    p.owner = owner;
                    p.ownership = Some(settings.ownership);
                    if b.destination.as_os_str().len() >= chroot::PATH_MAX {
                        refuse(&mut p, "the destination is longer than PATH_MAX".into());
                    } else {
                        self.plan_in_chroot(&mut p, &inside);
                    }
                }
                Ok(Place::Chroot(_)) => p.reason = "source is a chroot itself".into(),
                Ok(Place::Outside) => p.reason = "source is in no chroot".into(),
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
                why_wanted: String::new(),
            });
        }
        plans.sort_by_key(|p| p.index);
        Ok(plans)
    }

    /// Plans, refuses the whole container if any mount cannot be fixed, then prepares.
    /// The returned plans carry the in-chroot path of every source that must be rewritten.
    pub fn prepare(&mut self) -> Result<Vec<MountPlan>> {
        let mut plans = self.plan()?;
        if let Some(line) = refusal(&plans) {
            bail!("{line}");
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
        // The engine's path (trusted): its symlinks are the host's, resolved once.
        self.rootfs =
            Some(Root::open_trusted(path).with_context(|| format!("rootfs {}", path.display()))?);
        Ok(())
    }

    /// The chroot at `path` as planning finds it: open, missing, or refused (why).
    fn chroot_state(&mut self, path: &Path) -> Result<&Chroot, String> {
        self.chroots
            .entry(path.to_path_buf())
            .or_insert_with(|| Root::chroot(path, false).map_err(|e| format!("chroot {e:#}")))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The open chroot at `path`; with `create`, a missing one is made first.
    fn chroot_open(&mut self, path: &Path, create: bool) -> Result<&Root, String> {
        let missing = matches!(self.chroot_state(path), Ok(Chroot::Missing));
        if missing && create {
            let made = Root::chroot(path, true).map_err(|e| format!("chroot {e:#}"));
            self.chroots.insert(path.to_path_buf(), made);
        }
        match self.chroot_state(path)? {
            Chroot::Open(root) => Ok(root),
            Chroot::Missing => Err(format!("chroot {} does not exist", path.display())),
        }
    }

    fn chroot(&mut self, path: &Path) -> Result<&Root, String> {
        self.chroot_open(path, false)
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
}

/// A path for a message: whole up to PATH_MAX, else its start and its length (a refused
/// 30 MB source must not make a 30 MB log line).
fn shorten(path: &Path) -> String {
    let text = path.display().to_string();
    if text.len() <= chroot::PATH_MAX {
        return text;
    }
    let mut end = 256;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// The line refusing a container, if any mount is refused; every refusal is logged, a
/// cause shared by several mounts (their chroot) once, with how many it concerns.
fn refusal(plans: &[MountPlan]) -> Option<String> {
    let refused: Vec<&MountPlan> = plans
        .iter()
        .filter(|p| p.action == Action::Refuse)
        .collect();
    refused.first()?;
    let sharing = |p: &MountPlan| {
        refused
            .iter()
            .filter(|q| q.chroot.is_some() && q.chroot == p.chroot && q.reason == p.reason)
            .count()
    };
    let line = |p: &MountPlan| match sharing(p) {
        n if n > 1 && p.reason.starts_with("chroot ") => {
            format!(
                "{}: {} (and {} other mounts in it)",
                p.name(),
                p.reason,
                n - 1
            )
        }
        _ => format!("{}: {}", p.name(), p.reason),
    };
    let mut seen: Vec<(&Option<PathBuf>, &str)> = Vec::new();
    let mut lines = Vec::new();
    for p in &refused {
        if p.chroot.is_some() && p.reason.starts_with("chroot ") {
            let key = (&p.chroot, p.reason.as_str());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
        }
        lines.push(line(p));
    }
    // The first is the container's refusal line, which the caller reports and logs.
    for l in &lines[1..] {
        tracing::error!("{l}");
    }
    Some(lines.swap_remove(0))
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

impl Drop for Preparer<'_> {
    fn drop(&mut self) {
        if let Some((soft, hard)) = self.saved_nofile.take() {
            let _ = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                soft,
                hard,
            );
        }
    }
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
