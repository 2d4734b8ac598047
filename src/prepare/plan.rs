//! Planning one mount in a chroot: what the image wants, what the chroot has, and the action
//! that brings one to the other — read-only.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::{SFlag, fstat};

use super::*;
use crate::chroot;
use crate::config::Ownership;
use crate::resolve::{self, Chroot, Found, Kind, Lookup, Node, Root, open_nofollow};

impl Preparer<'_> {
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

    pub(super) fn plan_in_chroot(&mut self, p: &mut MountPlan, inside: &chroot::InChroot) {
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
            if fit(want, node.kind) == Fit::Fits {
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
        match fit(want, found.node.kind) {
            Fit::DirForFile => match is_empty_dir(&found) {
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
            Fit::FileForDir => {
                let why = p.why_wanted.clone();
                refuse(p, format!("is a regular file, but {why}"))
            }
            Fit::Fits => {
                plan_owner(p, &found.node, owner, ownership);
                self.checked.insert(p.index, found.node);
            }
            Fit::Special(other) => {
                refuse(p, format!("is a {other}, not a regular file or directory"))
            }
        }
    }
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
