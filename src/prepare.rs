//! Planning and preparing the bind-mount sources of one container.
//!
//! Everything is planned first, read-only; a container with any mount that cannot be fixed is
//! refused before anything is touched. Then each source is brought to the wanted state by a
//! loop that re-resolves after every change, so concurrent preparers and a tenant changing
//! its tree converge or fail, but never act on a stale path.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode as Perm, SFlag, fstat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, unlinkat};
use serde::Serialize;

use crate::chroot::{self, Place};
use crate::config::{self, ANNOTATION_PREFIX, Config, Ownership};
use crate::ownership;
use crate::resolve::{self, Chroot, Found, Kind, Lookup, Node, Root, open_nofollow};
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
        let Some(root) = self
            .chroot(&chroot_path)
            .ok()
            .and_then(|r| r.fd().try_clone_to_owned().ok())
        else {
            return true;
        };
        // Each step opened from the one above (linear in the depth), unless already known.
        let mut above: Option<OwnedFd> = None;
        for dir in steps {
            let key = (chroot_path.clone(), dir);
            let changeable = match self.changeable.get(&key) {
                Some(c) => {
                    above = None;
                    *c
                }
                None => {
                    let fd = match (&above, key.1.file_name()) {
                        _ if key.1.as_os_str().is_empty() => root.try_clone().ok(),
                        (Some(up), Some(name)) => open_nofollow(up, name, OFlag::O_DIRECTORY).ok(),
                        _ => resolve::open_beneath(root.as_fd(), &key.1),
                    };
                    let c = match fd.as_ref().and_then(|fd| fstat(fd).ok()) {
                        Some(st) => {
                            st.st_uid != 0
                                || st.st_mode & 0o022 != 0
                                || st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits()
                        }
                        None => true,
                    };
                    above = fd;
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

    fn plan_in_chroot(&mut self, p: &mut MountPlan, inside: &chroot::InChroot) {
        let mut want = self.wanted(&p.destination);
        // The chroot stands for the host: `<chroot>/etc/localtime` is the host's /etc/localtime.
        let seed = self
            .config
            .seed_from_host
            .iter()
            .find(|h| h.strip_prefix("/").ok() == Some(inside.rel.as_path()));
        let seed_meta = seed.and_then(|h| std::fs::metadata(h).ok());
        let mut seeded = None;
        if want == Want::Any {
            if let Some(m) = &seed_meta {
                want = if m.is_dir() { Want::Dir } else { Want::File };
                seeded = seed.map(PathBuf::as_path);
            }
        }
        p.why_wanted = why_wanted(want, seeded, &p.destination.display().to_string());
        let seed_file = seed
            .filter(|_| seed_meta.as_ref().is_some_and(|m| m.is_file()))
            .cloned();
        p.wanted = Some(want);
        let ownership = p.ownership.unwrap_or_default();
        let mode = self.mode;
        let owner = p.owner.expect("owner set for chroot mounts");
        let dest = p.destination.display().to_string();
        let source = p.source.clone().expect("bind mounts have a source");
        let create_chroots = self.config.create_chroots;
        let root = match self.chroot_state(&inside.chroot) {
            Ok(Chroot::Open(r)) => r,
            Ok(Chroot::Missing) if create_chroots => {
                let first = inside
                    .rel
                    .iter()
                    .next()
                    .map(Path::new)
                    .unwrap_or(&inside.rel);
                let is_last = inside.rel.iter().count() == 1;
                let c = &inside.chroot;
                plan_missing(p, want, is_last, &c.join(first), &source, &dest, seed_file);
                p.reason = format!(
                    "the chroot {} does not exist yet: it is created (root:root, 0755); {}",
                    c.display(),
                    p.reason
                );
                return;
            }
            Ok(Chroot::Missing) => {
                let c = inside.chroot.display();
                return refuse(
                    p,
                    format!("chroot {c} does not exist (create_chroots = false)"),
                );
            }
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
        match resolved_source(root, &lookup, &source, mode) {
            Ok(resolved) => p.resolved_source = resolved,
            Err(e) => return refuse(p, e),
        }
        let found = match lookup {
            Lookup::Missing(m) => {
                let first = root.host_path(&m.parent_rel.join(&m.name));
                let whole = root.host_path(&m.whole());
                plan_missing(p, want, m.is_last, &first, &whole, &dest, seed_file);
                return;
            }
            Lookup::Found(f) => f,
        };
        self.plan_found(p, found, want, seed_file);
    }

    /// Plans a source that exists: nothing, a chown, a repair, or a refusal.
    fn plan_found(
        &mut self,
        p: &mut MountPlan,
        found: Found,
        want: Want,
        seed_file: Option<PathBuf>,
    ) {
        let owner = p.owner.expect("owner set for chroot mounts");
        let ownership = p.ownership.unwrap_or_default();
        let kind = found.node.kind;
        match (want, kind) {
            (Want::File, Kind::Dir) => match is_empty_dir(&found) {
                Ok(true) => {
                    p.action = Action::Repair;
                    p.seed_from = seed_file;
                    let why = &p.why_wanted;
                    p.reason = match &p.seed_from {
                        None => {
                            format!("an empty directory where {why}: replaced by an empty file")
                        }
                        Some(h) => format!(
                            "an empty directory where {why}: replaced by a copy of the host's {}",
                            h.display()
                        ),
                    };
                }
                Ok(false) => {
                    let why = p.why_wanted.clone();
                    refuse(p, format!("is a non-empty directory, but {why}"))
                }
                Err(e) => refuse(p, format!("{e:#}")),
            },
            (Want::Dir, Kind::File) => {
                let why = p.why_wanted.clone();
                refuse(p, format!("is a regular file, but {why}"))
            }
            (_, Kind::Dir | Kind::File) => {
                plan_owner(p, &found.node, owner, ownership);
                self.checked.insert(p.index, found.node);
            }
            (_, other) => refuse(p, format!("is a {other}, not a regular file or directory")),
        }
    }

    /// Brings one source to the planned state; returns its in-chroot path if it must be
    /// rewritten. One walk creates what is missing, each component from its parent's
    /// descriptor; only a repair (rmdir, then create) walks again.
    fn apply(&mut self, p: &MountPlan) -> Result<(Option<PathBuf>, Node)> {
        let (Some(chroot_path), Some(source), Some(want), Some(owner)) =
            (&p.chroot, &p.source, p.wanted, p.owner)
        else {
            bail!("not a mount in a chroot");
        };
        let ownership = p.ownership.unwrap_or_default();
        let inside =
            chroot::locate(&self.config.chroots, source)?.expect("planned inside a chroot");
        let create_chroots = self.config.create_chroots;
        let root = self
            .chroot_open(chroot_path, create_chroots)
            .map_err(|e| anyhow!(e))?;
        let seed = p.seed_from.as_deref();
        for _ in 0..MAX_ROUNDS {
            let mut make = |parent: BorrowedFd<'_>, at: &Path, name: &OsStr, last: bool| {
                let path = root.host_path(&at.join(name));
                create(
                    parent,
                    name,
                    &path,
                    last && want == Want::File,
                    seed,
                    |fd| {
                        if ownership == Ownership::None {
                            Ok(())
                        } else {
                            chown(fd, owner)
                        }
                    },
                )
            };
            let f = match root.walk(&inside.rel, Some(&mut make))? {
                Lookup::Found(f) => f,
                Lookup::Missing(m) => bail!(
                    "{} could not be created",
                    root.host_path(&m.whole()).display()
                ),
            };
            let Some((parent, name)) = &f.parent else {
                bail!("resolves to the chroot itself")
            };
            let path = root.host_path(&f.rel);
            match (want, f.node.kind) {
                (Want::File, Kind::Dir) => remove_empty_dir(parent, name, &path, &p.why_wanted)?,
                (Want::Dir, Kind::File) => {
                    bail!("{} is a regular file, but {}", path.display(), p.why_wanted)
                }
                (_, Kind::Dir | Kind::File) => {
                    if ownership != Ownership::None && chown_needed(&f.node, owner)? {
                        give(&f.node, &path, owner, ownership)?;
                    }
                    return Ok((f.via_symlink.then_some(path), f.node));
                }
                (_, other) => bail!(
                    "{} is a {other}, not a regular file or directory",
                    path.display()
                ),
            }
        }
        bail!(
            "{} keeps changing while it is prepared; gave up",
            shorten(source)
        )
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

/// Walks a source may take: a repair (rmdir, then create) needs two; a tenant racing the
/// tool may cost a few more.
const MAX_ROUNDS: usize = 16;

/// Creates the missing `name` in `parent`: the source file (`file`), else a directory. An
/// existing name (a racing creator's) is left as it is: the walk opens whatever it holds.
fn create(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    file: bool,
    seed: Option<&Path>,
    finish: impl Fn(&OwnedFd) -> Result<()>,
) -> Result<()> {
    if !file {
        match mkdirat(parent, name, Perm::from_bits_truncate(0o755)) {
            Ok(()) => {
                let fd = open_nofollow(parent, name, OFlag::O_DIRECTORY)?;
                finish(&fd)?;
                tracing::info!("created directory {}", path.display());
            }
            Err(Errno::EEXIST) => {}
            Err(e) => bail!("creating directory {}: {}", path.display(), e.desc()),
        }
        return Ok(());
    }
    let created = match seed {
        Some(host) => create_seeded(parent, name, host, finish),
        None => create_empty(parent, name, finish),
    };
    if created.with_context(|| format!("creating file {}", path.display()))? {
        match seed {
            Some(h) => tracing::info!(
                "created file {} from the host's {}",
                path.display(),
                h.display()
            ),
            None => tracing::info!("created file {}", path.display()),
        }
    }
    Ok(())
}

/// rmdir removes nothing but an empty directory, whatever the name now stands for.
fn remove_empty_dir(parent: &OwnedFd, name: &OsStr, path: &Path, why: &str) -> Result<()> {
    match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
        Ok(()) => tracing::info!(
            "removed empty directory {} to make it a file",
            path.display()
        ),
        Err(Errno::ENOENT | Errno::ENOTDIR) => {}
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
            bail!("{} is a non-empty directory, but {why}", path.display())
        }
        Err(e) => bail!("removing empty directory {}: {}", path.display(), e.desc()),
    }
    Ok(())
}

/// Gives a source to `owner` (and, recursive-on-mismatch, what is below it): the top last,
/// so that an interrupted run sees the mismatch again and walks again.
fn give(node: &Node, path: &Path, owner: Owner, ownership: Ownership) -> Result<()> {
    if ownership == Ownership::RecursiveOnMismatch && node.kind == Kind::Dir {
        let stats = ownership::chown_below(&node.fd, owner.uid, owner.gid)
            .with_context(|| format!("changing owners below {}", path.display()))?;
        tracing::info!(
            "below {}: {} changed, {} already right, {} hard-linked entries and {} mount points left alone",
            path.display(),
            stats.changed,
            stats.already_right,
            stats.skipped_hard_links,
            stats.skipped_mounts
        );
    }
    chown(&node.fd, owner)?;
    tracing::info!("gave {} to {}:{}", path.display(), owner.uid, owner.gid);
    Ok(())
}

/// Where a source that goes through a symlink lies inside its chroot (`None`: no symlink),
/// or why it is refused.
fn resolved_source(
    root: &Root,
    lookup: &Lookup,
    source: &Path,
    mode: Mode,
) -> Result<Option<PathBuf>, String> {
    let (via_symlink, rel) = match lookup {
        Lookup::Found(f) => (f.via_symlink, f.rel.clone()),
        Lookup::Missing(m) => (m.via_symlink, m.whole()),
    };
    if rel.as_os_str().is_empty() {
        return Err("resolves to the chroot itself".into());
    }
    let resolved = root.host_path(&rel);
    if resolved.as_os_str().len() >= chroot::PATH_MAX {
        return Err("resolves inside the chroot to a path longer than PATH_MAX".into());
    }
    if via_symlink && resolved.to_str().is_none() {
        // config.json is UTF-8: such a source could not be written back.
        return Err(format!(
            "resolves inside the chroot to {}, which is not UTF-8",
            resolved.display()
        ));
    }
    if via_symlink {
        // The runtime mounted what the host resolves; unless that is the very inode
        // found inside the chroot, refuse. The message says only what is inside the
        // chroot: whether or where a host path exists is none of the caller's business.
        let same = match lookup {
            Lookup::Found(f) => host_is(source, &f.node),
            Lookup::Missing(_) => false,
        };
        if mode == Mode::Hook && !same {
            return Err(format!(
                "goes through a symlink (inside the chroot: {}); an OCI hook cannot rewrite the mount: use the precreate hook or oci-volume-runtime",
                resolved.display()
            ));
        }
        return Ok(Some(resolved));
    }
    Ok(None)
}

/// Plans the creation of a missing source: `first` is its first missing component, `whole`
/// everything to create.
fn plan_missing(
    p: &mut MountPlan,
    want: Want,
    is_last: bool,
    first: &Path,
    whole: &Path,
    dest: &str,
    seed_file: Option<PathBuf>,
) {
    let image = if p.why_wanted.is_empty() {
        why_wanted(want, None, dest)
    } else {
        p.why_wanted.clone()
    };
    p.action = what_for(want);
    p.reason = if is_last {
        format!("missing; {image}")
    } else {
        format!(
            "missing from {} on: {} is created, parents as directories; {image}",
            first.display(),
            whole.display()
        )
    };
    if p.action == Action::CreateFile {
        p.seed_from = seed_file;
    }
    if let Some(h) = &p.seed_from {
        p.reason += &format!("; its content is copied from the host's {}", h.display());
    }
}

/// Whether the host resolves `source` (following its symlinks, as the runtime did) to the
/// inode of `node`. A stat, never an open: a FIFO cannot block it.
fn host_is(source: &Path, node: &Node) -> bool {
    nix::sys::stat::stat(source)
        .is_ok_and(|st| (st.st_dev, st.st_ino) == (node.stat.st_dev, node.stat.st_ino))
}

/// Where the wanted type comes from, as messages say it.
fn why_wanted(want: Want, seed: Option<&Path>, dest: &str) -> String {
    match (want, seed) {
        (Want::Any, _) => format!("the image has nothing at {dest}, so a directory"),
        (Want::File, None) => format!("the image has a file at {dest}"),
        (Want::Dir, None) => format!("the image has a directory at {dest}"),
        (Want::File, Some(h)) => format!(
            "the image has nothing at {dest} and the host's {} (seed_from_host) is a file",
            h.display()
        ),
        (Want::Dir, Some(h)) => format!(
            "the image has nothing at {dest} and the host's {} (seed_from_host) is a directory",
            h.display()
        ),
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
    parent: BorrowedFd<'_>,
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
    parent: BorrowedFd<'_>,
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
