//! Planning and preparing the bind-mount sources of one container.
//!
//! Everything is planned first, read-only (`plan.rs`); a container with any mount that cannot
//! be fixed is refused before anything is touched (`report.rs` words the refusal). Then each
//! source is brought to the wanted state (`apply.rs`) by one walk from the chroot that
//! creates what is missing from held descriptors, so concurrent preparers and a tenant
//! changing its tree converge or fail, but never act on a stale path. Both sides decide with
//! one verdict, `fit`.

mod apply;
mod mount;
mod plan;
mod report;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use caps::{CapSet, Capability};

pub use mount::{Action, ChrootMount, IdmapBy, Idmapped, MountPlan, Owner, Target, Want, Wanted};

use crate::chroot::{self, Place};
use crate::config::{self, Config};
use crate::idmap;
use crate::ownership;
use crate::refusal::{Cause, Refusal};
use crate::resolve::{Chroot, Host, Kind, Node, Root};
use crate::spec::View;

/// Who asks, which decides what may change besides the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// An OCI hook: config.json cannot change, so a source that the host would resolve
    /// differently from the chroot is refused.
    Hook,
    /// precreate and the runtime wrapper: sources going through symlinks are rewritten to
    /// the path resolved inside the chroot (or pinned).
    Rewrite,
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

/// A prepared mount: its plan, and for a source in a chroot the descriptor of the very inode
/// that was checked (what pinning hands the runtime).
pub struct Prepared {
    pub plan: MountPlan,
    pub node: Option<Node>,
}

/// The mounts of one container, with the roots they are resolved in.
pub struct Preparer<'a> {
    view: &'a View,
    config: &'a Config,
    caller: Caller,
    /// Where chroot paths are resolved from (the host's `/`; a temp dir in unit tests).
    host: Option<Host>,
    rootfs: Option<Root>,
    /// The host ids the container's sources go to, once a source in a chroot needs them.
    owner: Option<Owner>,
    chroots: HashMap<PathBuf, Result<Chroot, Refusal>>,
    /// The soft RLIMIT_NOFILE to put back once done, when it had to be raised.
    saved_nofile: Option<(u64, u64)>,
    /// The descriptor of each source found right while planning, by mount index.
    checked: HashMap<usize, Node>,
    /// Whether a directory (chroot, path in it) could be changed by someone but root.
    changeable: HashMap<(PathBuf, PathBuf), bool>,
    /// The runtime that will mount (for `ownership = "idmap"`: whether it can idmap).
    runtime: Option<PathBuf>,
    /// What the kernel and the runtime say about idmapped mounts, once asked.
    node_idmap: Option<Result<(), idmap::Unsupported>>,
}

impl<'a> Preparer<'a> {
    pub fn new(config: &'a Config, view: &'a View, caller: Caller) -> Preparer<'a> {
        Preparer {
            view,
            config,
            caller,
            host: None,
            rootfs: None,
            owner: None,
            chroots: HashMap::new(),
            saved_nofile: None,
            checked: HashMap::new(),
            changeable: HashMap::new(),
            runtime: None,
            node_idmap: None,
        }
    }

    /// The runtime that will mount the sources: only then can `ownership = "idmap"` hand it
    /// idmapped mounts (it is asked for its features when a mount needs it).
    pub fn with_runtime(mut self, runtime: Option<PathBuf>) -> Self {
        self.runtime = runtime;
        self
    }

    /// Resolves chroot paths below `host` instead of `/` (unit tests: planning without root).
    #[cfg(test)]
    pub(crate) fn with_host(mut self, host: Host) -> Self {
        self.host = Some(host);
        self
    }

    /// The plan for every mount, in config.json order. Touches nothing.
    /// Errors that concern the whole container (no rootfs, unmapped ids) are returned as
    /// errors, naming the first mount they affect.
    pub fn plan(&mut self) -> Result<Vec<MountPlan>> {
        let settings = self.config.settings(&self.view.annotations)?;
        self.reserve_descriptors()?;
        let mut plans = Vec::new();
        for b in &self.view.binds {
            plans.push(self.plan_bind(b, &settings)?);
        }
        for (index, destination, kind) in &self.view.others {
            let shown = if kind.is_empty() { "no type" } else { kind };
            let target = Target::NotBind { kind: kind.clone() };
            let mut p = MountPlan::new(*index, destination.clone(), target, Action::Nothing);
            p.reason = format!("not a bind mount ({shown})");
            plans.push(p);
        }
        plans.sort_by_key(|p| p.index);
        Ok(plans)
    }

    /// Plans, refuses the whole container if any mount cannot be fixed (a
    /// [`Refused`](crate::refusal::Refused) error), then prepares each mount.
    pub fn prepare(&mut self) -> Result<Vec<Prepared>> {
        let plans = self.plan()?;
        if let Some(refused) = report::refusal(&plans) {
            return Err(refused.into());
        }
        if let Some(p) = plans.iter().find(|p| p.in_chroot().is_some()) {
            let mut needed = vec![
                Capability::CAP_CHOWN,
                Capability::CAP_DAC_OVERRIDE,
                Capability::CAP_FOWNER,
            ];
            if self.caller == Caller::Rewrite && self.config.pin_sources != config::Pin::Never {
                needed.push(Capability::CAP_SYS_ADMIN); // the staging mounts
            }
            require_capabilities(&needed).with_context(|| p.name())?;
        }
        let mut prepared = Vec::with_capacity(plans.len());
        for mut plan in plans {
            let name = plan.name();
            let node = match &mut plan.target {
                // Planned as `nothing`: already right, and held since planning.
                Target::Chroot(_) if plan.action.is_nothing() => self.checked.remove(&plan.index),
                Target::Chroot(m) => {
                    let (resolved, node) = self.apply(m).context(name)?;
                    m.resolved_source = resolved;
                    Some(node)
                }
                _ => None,
            };
            prepared.push(Prepared { plan, node });
        }
        Ok(prepared)
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

    /// The host ids the container's sources go to, and the image opened: what every
    /// source in a chroot needs, found once.
    fn container_owner(&mut self, settings: &config::Settings) -> Result<Owner> {
        if let Some(o) = self.owner {
            return Ok(o);
        }
        let (owner, by_annotation) = (settings.owner, settings.owner_by_annotation);
        let (uid, gid) = ownership::host_owner(owner, by_annotation, self.view)?;
        let path = self
            .view
            .rootfs
            .as_ref()
            .ok_or_else(|| anyhow!("config.json has no root.path"))?;
        // The engine's path (trusted): its symlinks are the host's, resolved once.
        self.rootfs =
            Some(Root::open_trusted(path).with_context(|| format!("rootfs {}", path.display()))?);
        Ok(*self.owner.insert(Owner { uid, gid }))
    }

    /// The chroot at `path` as planning finds it: open, missing, or refused (why); with
    /// `create`, a missing one is made first.
    fn chroot_state(&mut self, path: &Path, create: bool) -> Result<&Chroot, Refusal> {
        let missing = matches!(self.chroots.get(path), Some(Ok(Chroot::Missing)));
        if missing && create {
            self.chroots.remove(path);
        }
        if !self.chroots.contains_key(path) {
            let opened = self.open_chroot(path, create);
            self.chroots.insert(path.to_path_buf(), opened);
        }
        self.chroots[path].as_ref().map_err(Clone::clone)
    }

    fn open_chroot(&mut self, path: &Path, create: bool) -> Result<Chroot, Refusal> {
        if self.host.is_none() {
            self.host = Some(Host::real().map_err(|e| Refusal::Chroot(Cause::new(e)))?);
        }
        let host = self.host.as_ref().expect("opened above");
        Root::chroot_in(host, path, create).map_err(|e| Refusal::Chroot(Cause::new(e)))
    }

    /// The open chroot at `path` (made first when missing and `create`), for applying.
    fn open_root(&mut self, path: &Path, create: bool) -> Result<&Root> {
        match self.chroot_state(path, create)? {
            Chroot::Open(root) => Ok(root),
            Chroot::Missing => Err(Refusal::ChrootMissing {
                chroot: path.to_path_buf(),
            }
            .into()),
        }
    }
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

/// Whether the owner of `node` must change; a hard-linked file is refused, since its other
/// names may lie outside the chroot.
fn chown_needed(node: &Node, owner: Owner) -> Result<bool, Refusal> {
    let st = &node.stat;
    if st.st_uid == owner.uid && st.st_gid == owner.gid {
        return Ok(false);
    }
    if node.kind == Kind::File && st.st_nlink > 1 {
        return Err(Refusal::HardLinked { links: st.st_nlink });
    }
    Ok(true)
}
