//! Planning one mount: where its source lies, what the image wants, what the chroot has,
//! and the action that brings one to the other — read-only.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag, fstat};

use super::*;
use crate::config::{ANNOTATION_PREFIX, Ownership, Settings};
use crate::refusal::Cause;
use crate::resolve::{self, Found, Lookup, open_nofollow};
use crate::spec::{BindMount, MountIdmap};

/// What planning decided for a source in a chroot.
type Decision = (Action, String);

fn refused(r: Refusal) -> Decision {
    (Action::Refuse(r), String::new())
}

impl Preparer<'_> {
    /// Plans one bind mount. A source in a chroot is resolved inside it (and so pinned or
    /// refused) whatever the annotations: they can only narrow what is done there.
    pub(super) fn plan_bind(&mut self, b: &BindMount, settings: &Settings) -> Result<MountPlan> {
        let host = |action, reason: &str| {
            let target = Target::Host {
                source: b.source.clone(),
            };
            let mut p = MountPlan::new(b.index, b.destination.clone(), target, action);
            if !reason.is_empty() {
                p.reason = reason.into();
            }
            p
        };
        let place = chroot::place(
            &self.config.chroots,
            &b.source,
            self.config.refuse_chroot_bases,
        );
        Ok(match place {
            Err(r) => host(Action::Refuse(r.into()), ""),
            Ok(Place::Inside(inside)) => match self.covering_mount(b) {
                Some(destination) => host(
                    Action::Refuse(Refusal::UnderEarlierMount { destination }),
                    "",
                ),
                None => self.plan_chroot_mount(b, inside, settings)?,
            },
            Ok(Place::Chroot(_)) => host(Action::Nothing, "source is a chroot itself"),
            Ok(Place::Outside) => match self.config.host_sources.as_deref() {
                None => host(Action::Nothing, "source is in no chroot"),
                Some(list) => {
                    match crate::host_sources::check(list, &b.source, &self.view.annotations) {
                        Ok(()) => host(
                            Action::Nothing,
                            "source is in no chroot, listed in host_sources",
                        ),
                        Err(r) => host(Action::Refuse(r), ""),
                    }
                }
            },
        })
    }

    /// The destination of an earlier mount of this container that covers `b`'s source: a
    /// source in the rootfs at or below where that mount lands. runc resolves sources in a
    /// mount namespace where the earlier mounts are already made (runc 1.3's suite builds
    /// mount trees this way), so it would mount what that mount shows there — content the
    /// host path, which is all the tool can check and pin, does not name. A destination
    /// already starting with the rootfs is the host path itself, as runc reads it.
    fn covering_mount(&self, b: &BindMount) -> Option<PathBuf> {
        let rootfs = self.view.rootfs.as_deref()?;
        // Most sources are not in the rootfs at all: one comparison, not one per mount (a
        // container of 256 mounts would otherwise make 65,536).
        let source = b.source.strip_prefix(rootfs).ok()?;
        let under = |dest: &Path| -> bool {
            let dest = dest.strip_prefix(rootfs).unwrap_or(dest);
            source.starts_with(dest.strip_prefix("/").unwrap_or(dest))
        };
        let binds = self.view.binds.iter().map(|m| (m.index, &m.destination));
        let others = self.view.others.iter().map(|(i, d, _)| (*i, d));
        binds
            .chain(others)
            .filter(|(i, d)| *i < b.index && under(d))
            .min_by_key(|(i, _)| *i)
            .map(|(_, d)| d.clone())
    }

    fn plan_chroot_mount(
        &mut self,
        b: &BindMount,
        inside: chroot::InChroot,
        settings: &Settings,
    ) -> Result<MountPlan> {
        let name = || mount::name(&b.destination, Some(&b.source));
        self.container_owner(settings).with_context(name)?;
        let (idmap, idmap_fallback) = self.idmap_of(b, settings.ownership, &inside);
        let through = match (&b.idmap, &idmap) {
            (Some(engine), _) => Some(engine.clone()),
            (None, Some(_)) => Some(MountIdmap::default()),
            (None, None) => None,
        };
        let (uid, gid) = ownership::disk_owner(
            settings.owner,
            settings.owner_by_annotation,
            self.view,
            through.as_ref(),
        )
        .with_context(name)?;
        let (wanted, seed_file) = self.wanted(&b.destination, &inside.rel);
        let mut m = ChrootMount {
            source: b.source.clone(),
            chroot: inside.chroot,
            rel: inside.rel,
            owner: Owner { uid, gid },
            ownership: match settings.enabled {
                true => settings.ownership,
                false => Ownership::None,
            },
            idmap,
            idmap_fallback,
            wanted,
            seed_from: None,
            resolved_source: None,
        };
        // (config.json's destinations are shorter than PATH_MAX: `spec::View` refuses others.)
        let (mut action, mut reason) = self.plan_in_chroot(&mut m, seed_file, b.index);
        if !settings.enabled {
            (action, reason) = narrowed(action, reason);
        }
        let target = Target::Chroot(Box::new(m));
        let mut p = MountPlan::new(b.index, b.destination.clone(), target, action);
        if !reason.is_empty() {
            p.reason = reason;
        }
        Ok(p)
    }

    /// The mapping a mount's owner goes through: the engine's idmap, or the one
    /// `ownership = "idmap"` adds when this node can make it; else why not.
    fn idmap_of(
        &mut self,
        b: &BindMount,
        ownership: Ownership,
        inside: &chroot::InChroot,
    ) -> (Option<Idmapped>, Option<String>) {
        let view = self.view;
        let container = || (view.uid_mappings.clone(), view.gid_mappings.clone());
        if let Some(i) = &b.idmap {
            let (uid_mappings, gid_mappings) = match i.has_own_mappings() {
                true => (i.uid_mappings.clone(), i.gid_mappings.clone()),
                false => container(),
            };
            let by = IdmapBy::Engine;
            return (
                Some(Idmapped {
                    by,
                    uid_mappings,
                    gid_mappings,
                }),
                None,
            );
        }
        if ownership != Ownership::Idmap {
            return (None, None);
        }
        match self.can_idmap(&inside.chroot, &inside.rel) {
            Ok(()) => {
                let (uid_mappings, gid_mappings) = container();
                let by = IdmapBy::Ownership;
                (
                    Some(Idmapped {
                        by,
                        uid_mappings,
                        gid_mappings,
                    }),
                    None,
                )
            }
            Err(why) => (None, Some(why)),
        }
    }

    /// Whether the runtime, the kernel and the source's filesystem (the chroot's, while the
    /// source is missing) allow an idmapped mount.
    fn can_idmap(&mut self, chroot: &Path, rel: &Path) -> Result<(), idmap::Unsupported> {
        if self.view.uid_mappings.is_empty() {
            return Err("the container has no user namespace: its root is the host's".into());
        }
        let Some(runtime) = self.runtime.clone() else {
            return Err("only the runtime wrapper can hand the runtime an idmapped mount".into());
        };
        self.node_idmap
            .get_or_insert_with(|| idmap::node_support(&runtime, Some(&self.config.staging_dir)))
            .clone()?;
        let probe = match self.chroot_state(chroot, false) {
            Ok(Chroot::Open(root)) => match root.lookup_plain(rel) {
                Some(node) => Ok(node.fd),
                None => root.fd().try_clone_to_owned(),
            },
            // A chroot still to be created lives where its parent is.
            _ => std::fs::File::open(chroot.parent().unwrap_or(chroot)).map(OwnedFd::from),
        };
        let fd = probe.map_err(|e| format!("its chroot cannot be opened: {e}"))?;
        idmap::filesystem_support(&fd).map_err(|why| format!("chroot {}: {why}", chroot.display()))
    }

    fn plan_in_chroot(
        &mut self,
        m: &mut ChrootMount,
        seed_file: Option<PathBuf>,
        index: usize,
    ) -> Decision {
        let wanted = m.wanted.clone();
        let (create, caller) = (self.config.create_chroots, self.caller);
        let root = match self.chroot_state(&m.chroot, false) {
            Ok(Chroot::Open(r)) => r,
            Ok(Chroot::Missing) if create => return plan_new_chroot(m, &wanted, seed_file),
            Ok(Chroot::Missing) => {
                let chroot = m.chroot.clone();
                return refused(Refusal::ChrootMissing { chroot });
            }
            Err(r) => return refused(r),
        };
        // Already there, no symlink on the way: one openat2 tells all.
        if let Some(node) = root.lookup_plain(&m.rel) {
            if fit(wanted.want, node.kind) == Fit::Fits {
                let decision = plan_owner(m, &node);
                self.checked.insert(index, node);
                return decision;
            }
        }
        let lookup = match root.lookup(&m.rel) {
            Ok(l) => l,
            Err(e) => return refused(Refusal::Resolve(Cause::new(e))),
        };
        match resolved_source(root, &lookup, &m.source, caller) {
            Ok(resolved) => m.resolved_source = resolved,
            Err(r) => return refused(r),
        }
        match lookup {
            Lookup::Missing(miss) => {
                let first = root.host_path(&miss.parent_rel.join(&miss.name));
                let whole = root.host_path(&miss.whole());
                plan_missing(m, &wanted, miss.is_last, &first, &whole, seed_file)
            }
            Lookup::Found(f) => self.plan_found(m, f, &wanted, seed_file, index),
        }
    }

    /// Plans a source that exists: nothing, a chown, a repair, or a refusal.
    fn plan_found(
        &mut self,
        m: &mut ChrootMount,
        found: Found,
        wanted: &Wanted,
        seed_file: Option<PathBuf>,
        index: usize,
    ) -> Decision {
        match fit(wanted.want, found.node.kind) {
            Fit::DirForFile => match is_empty_dir(&found) {
                Ok(true) => {
                    let reason = match &seed_file {
                        None => {
                            format!("an empty directory where {wanted}: replaced by an empty file")
                        }
                        Some(h) => format!(
                            "an empty directory where {wanted}: replaced by a copy of the host's {}",
                            h.display()
                        ),
                    };
                    m.seed_from = seed_file;
                    (Action::Repair, reason)
                }
                Ok(false) => refused(Refusal::NonEmptyDir {
                    wanted: wanted.clone(),
                }),
                Err(r) => refused(r),
            },
            Fit::FileForDir => refused(Refusal::FileForDir {
                wanted: wanted.clone(),
            }),
            Fit::Fits => {
                let decision = plan_owner(m, &found.node);
                self.checked.insert(index, found.node);
                decision
            }
            Fit::Special(kind) => refused(Refusal::Special { kind }),
        }
    }

    /// What the image has at `dest`, symlinks resolved inside the image; when it has
    /// nothing, the host's `seed_from_host` file of the same path decides. Also returns that
    /// host file when it is a file (a created file's content).
    fn wanted(&self, dest: &Path, rel: &Path) -> (Wanted, Option<PathBuf>) {
        // The chroot stands for the host: `<chroot>/etc/localtime` is the host's /etc/localtime.
        let seed = self
            .config
            .seed_from_host
            .iter()
            .find(|h| h.strip_prefix("/").ok() == Some(rel));
        let seed_meta = seed.and_then(|h| std::fs::metadata(h).ok());
        let mut wanted = Wanted {
            want: self.image_wants(dest),
            destination: dest.to_path_buf(),
            seed: None,
        };
        if let (Want::Any, Some(meta)) = (wanted.want, &seed_meta) {
            wanted.want = if meta.is_dir() { Want::Dir } else { Want::File };
            wanted.seed = seed.cloned();
        }
        let seed_file = seed.filter(|_| seed_meta.as_ref().is_some_and(|m| m.is_file()));
        (wanted, seed_file.cloned())
    }

    fn image_wants(&self, dest: &Path) -> Want {
        let rootfs = self
            .rootfs
            .as_ref()
            .expect("rootfs opened with the owner, before any chroot mount");
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

    /// Whether the tenant could swap a directory on the way to the (resolved) source of
    /// `m`, i.e. whether the runtime must be handed a pinned copy rather than the path.
    /// Only a directory that is not root's, or that others may write, can have its entries
    /// renamed by a tenant; if none lies between the chroot and the source, the path the
    /// tool checked is the path the runtime will resolve. Checked from the chroot down, so
    /// each step stands on directories no tenant can change.
    pub fn could_be_swapped(&mut self, m: &ChrootMount) -> bool {
        let rel = match &m.resolved_source {
            Some(r) => r.strip_prefix(&m.chroot).map(Path::to_path_buf).ok(),
            None => Some(m.rel.clone()),
        };
        let Some(parent) = rel.as_deref().and_then(Path::parent) else {
            return true;
        };
        let Some(root) = self
            .open_root(&m.chroot, false)
            .ok()
            .and_then(|r| r.fd().try_clone_to_owned().ok())
        else {
            return true;
        };
        // The chroot, then each directory below it; mounts share most of them.
        let mut steps: Vec<PathBuf> = parent.ancestors().map(Path::to_path_buf).collect();
        steps.reverse();
        let mut above: Option<OwnedFd> = None;
        for dir in steps {
            let key = (m.chroot.clone(), dir);
            if let Some(&known) = self.changeable.get(&key) {
                above = None;
                if known {
                    return true;
                }
                continue;
            }
            let fd = open_step(&root, above.as_ref(), &key.1);
            let changeable = fd.as_ref().is_none_or(is_changeable);
            above = fd;
            self.changeable.insert(key, changeable);
            if changeable {
                return true;
            }
        }
        false
    }
}

/// Opens one directory of [`Preparer::could_be_swapped`]'s way down: from the one above when
/// it is held (linear in the depth), else from the chroot in one `openat2`.
fn open_step(root: &OwnedFd, above: Option<&OwnedFd>, dir: &Path) -> Option<OwnedFd> {
    match (above, dir.file_name()) {
        _ if dir.as_os_str().is_empty() => root.try_clone().ok(),
        (Some(up), Some(name)) => open_nofollow(up, name, OFlag::O_DIRECTORY).ok(),
        _ => resolve::open_beneath(root.as_fd(), dir),
    }
}

/// A directory someone but root could change: not root's, writable by others, or no
/// directory at all.
fn is_changeable(fd: &OwnedFd) -> bool {
    fstat(fd).map_or(true, |st| {
        st.st_uid != 0
            || st.st_mode & 0o022 != 0
            || st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits()
    })
}

/// A decision for a container whose annotation turned creation, repair and ownership off
/// (`enabled=false`): a source that would need them is refused, never left to the runtime
/// to resolve; one already right is still resolved in its chroot and pinned.
fn narrowed(action: Action, reason: String) -> Decision {
    match action {
        Action::CreateFile | Action::CreateDir | Action::Repair => {
            let needs = action.word();
            refused(Refusal::DisabledByAnnotation { needs })
        }
        Action::Nothing => {
            // (`plan_owner` words it for `ownership = none`, which this stands for.)
            let what = reason.split(';').next().unwrap_or_default();
            let reason = format!(
                "{what}; annotation {ANNOTATION_PREFIX}enabled=\"false\": nothing created, repaired or given an owner (still resolved in the chroot)"
            );
            (Action::Nothing, reason)
        }
        other => (other, reason),
    }
}

/// The chroot itself is missing (and `create_chroots` is on): everything is created.
fn plan_new_chroot(m: &mut ChrootMount, wanted: &Wanted, seed_file: Option<PathBuf>) -> Decision {
    let first = m.rel.iter().next().map(Path::new).unwrap_or(&m.rel);
    let is_last = m.rel.iter().count() == 1;
    let (first, whole) = (m.chroot.join(first), m.source.clone());
    let (action, reason) = plan_missing(m, wanted, is_last, &first, &whole, seed_file);
    let reason = format!(
        "the chroot {} does not exist yet: it is created (root:root, 0755); {reason}",
        m.chroot.display()
    );
    (action, reason)
}

/// Where a source that goes through a symlink lies inside its chroot (`None`: no symlink),
/// or why it is refused.
fn resolved_source(
    root: &Root,
    lookup: &Lookup,
    source: &Path,
    caller: Caller,
) -> Result<Option<PathBuf>, Refusal> {
    let (via_symlink, rel) = match lookup {
        Lookup::Found(f) => (f.via_symlink, f.rel.clone()),
        Lookup::Missing(m) => (m.via_symlink, m.whole()),
    };
    if rel.as_os_str().is_empty() {
        return Err(Refusal::ResolvesToChroot);
    }
    let resolved = root.host_path(&rel);
    if resolved.as_os_str().len() >= chroot::PATH_MAX {
        return Err(Refusal::ResolvedTooLong);
    }
    if !via_symlink {
        return Ok(None);
    }
    if resolved.to_str().is_none() {
        return Err(Refusal::ResolvedNotUtf8 { resolved });
    }
    // The runtime mounted what the host resolves; unless that is the very inode found
    // inside the chroot, refuse. The message says only what is inside the chroot: whether
    // or where a host path exists is none of the caller's business.
    let same = match lookup {
        Lookup::Found(f) => host_is(source, &f.node),
        Lookup::Missing(_) => false,
    };
    if caller == Caller::Hook && !same {
        return Err(Refusal::HookCannotRewrite { resolved });
    }
    Ok(Some(resolved))
}

/// Plans the creation of a missing source: `first` is its first missing component, `whole`
/// everything to create.
fn plan_missing(
    m: &mut ChrootMount,
    wanted: &Wanted,
    is_last: bool,
    first: &Path,
    whole: &Path,
    seed_file: Option<PathBuf>,
) -> Decision {
    let mut reason = if is_last {
        format!("missing; {wanted}")
    } else {
        format!(
            "missing from {} on: {} is created, parents as directories; {wanted}",
            first.display(),
            whole.display()
        )
    };
    if wanted.want != Want::File {
        return (Action::CreateDir, reason);
    }
    m.seed_from = seed_file;
    if let Some(h) = &m.seed_from {
        reason += &format!("; its content is copied from the host's {}", h.display());
    }
    (Action::CreateFile, reason)
}

/// Whether the host resolves `source` (following its symlinks, as the runtime did) to the
/// inode of `node`. A stat, never an open: a FIFO cannot block it.
fn host_is(source: &Path, node: &Node) -> bool {
    nix::sys::stat::stat(source)
        .is_ok_and(|st| (st.st_dev, st.st_ino) == (node.stat.st_dev, node.stat.st_ino))
}

/// Plans `nothing` or `chown` for a source of the right type.
fn plan_owner(m: &ChrootMount, node: &Node) -> Decision {
    let (kind, owner) = (node.kind, m.owner);
    if m.chowning() == Ownership::None {
        let reason = format!("already a {kind}; ownership = none leaves its owner as is");
        return (Action::Nothing, reason);
    }
    match chown_needed(node, owner) {
        Ok(false) => {
            let reason = format!("already a {kind} owned by {}:{}", owner.uid, owner.gid);
            (Action::Nothing, reason)
        }
        Ok(true) => {
            let mut reason = format!(
                "a {kind} owned by {}:{}, wanted {}:{}",
                node.stat.st_uid, node.stat.st_gid, owner.uid, owner.gid
            );
            if m.chowning() == Ownership::RecursiveOnMismatch && kind == Kind::Dir {
                reason += "; everything below it too (recursive-on-mismatch)";
            }
            (Action::Chown, reason)
        }
        Err(r) => refused(r),
    }
}

fn is_empty_dir(f: &Found) -> Result<bool, Refusal> {
    let io = |errno| Refusal::Io {
        what: "reading directory",
        errno,
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::openat(&f.node.fd, ".", flags, Mode::empty()).map_err(io)?;
    for entry in dir.iter() {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::View;

    /// Which earlier mount covers each bind's source, for one container: only sources in the
    /// rootfs, only earlier mounts (binds or not), the first of several, by whole
    /// components, and a destination already spelled as the host path.
    #[test]
    fn covering_mount_is_the_first_earlier_mount_over_a_source_in_the_rootfs() {
        let doc = serde_json::json!({
            "root": {"path": "/b/rootfs"},
            "mounts": [
                {"destination": "/mnt", "type": "bind", "source": "/c/t/vol", "options": ["rbind"]},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/final", "type": "bind", "source": "/b/rootfs/mnt/x", "options": ["rbind"]},
                {"destination": "/y", "type": "bind", "source": "/b/rootfs/run/y", "options": ["rbind"]},
                {"destination": "/s", "type": "bind", "source": "/b/rootfs/srv/a", "options": ["rbind"]},
                {"destination": "/srv", "type": "bind", "source": "/c/t/srv", "options": ["rbind"]},
                {"destination": "/m2", "type": "bind", "source": "/b/rootfs/mntx/a", "options": ["rbind"]},
                {"destination": "/b/rootfs/opt", "type": "bind", "source": "/c/t/opt", "options": ["rbind"]},
                {"destination": "/o", "type": "bind", "source": "/b/rootfs/opt/k", "options": ["rbind"]},
                {"destination": "/mnt/x/deeper", "type": "bind", "source": "/c/t/d", "options": ["rbind"]},
                {"destination": "/z", "type": "bind", "source": "/b/rootfs/mnt/x/deeper/f", "options": ["rbind"]},
                {"destination": "/h", "type": "bind", "source": "/c/t/mnt/x", "options": ["rbind"]}
            ]
        });
        let view = View::of(&doc, Path::new("/b")).unwrap();
        let config = crate::config::Config::default();
        let preparer = Preparer::new(&config, &view, Caller::Rewrite);
        let covering: Vec<(usize, Option<PathBuf>)> = view
            .binds
            .iter()
            .map(|b| (b.index, preparer.covering_mount(b)))
            .collect();
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            covering,
            [
                (0, None),               // not in the rootfs
                (2, p("/mnt")),          // below the first mount
                (3, p("/run")),          // below a tmpfs, not only binds
                (4, None),               // /srv is mounted later, not earlier
                (5, None),               // not in the rootfs
                (6, None),               // mntx is not below mnt: whole components
                (7, None),               // not in the rootfs
                (8, p("/b/rootfs/opt")), // the destination spelled as the host path
                (9, None),               // not in the rootfs
                (10, p("/mnt")),         // several cover it: the first one
                (11, None),              // a chroot path that merely looks alike
            ]
        );
    }
}
