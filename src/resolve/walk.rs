//! The walk: one component at a time, each opened from its parent's descriptor.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::Mode;

use super::{Create, Error, Found, Kind, Lookup, Missing, Node, Result, Root};
use crate::chroot::MAX_COMPONENTS;

/// Linux's own limit on symlinks in one resolution.
const MAX_SYMLINKS: u32 = 40;

/// Missing components one walk may create (each racing deletion costs one more).
const MAX_CREATIONS: usize = 4 * MAX_COMPONENTS;

impl Root {
    /// Resolves `rel` inside the root; with `create`, each missing component is made from
    /// the descriptor of its parent and the walk goes on from there, so a path of n missing
    /// components costs O(n), not a walk from the root per component.
    pub fn walk(&self, rel: &Path, create: Option<Create<'_>>) -> Result<Lookup> {
        let mut queue = VecDeque::new();
        push_front(&mut queue, rel);
        Walker {
            root: self,
            rel,
            queue,
            stack: Vec::new(),
            links: 0,
            creations: 0,
            via_symlink: false,
            create,
        }
        .run()
    }
}

/// One walk's state: the components still to take, and the descriptors of the directories
/// taken so far (the last one is where the next component is opened).
struct Walker<'r, 'c> {
    root: &'r Root,
    /// What was asked for, for the message of a walk that goes too deep.
    rel: &'r Path,
    queue: VecDeque<OsString>,
    stack: Vec<(OwnedFd, OsString)>,
    links: u32,
    creations: usize,
    via_symlink: bool,
    create: Option<Create<'c>>,
}

impl Walker<'_, '_> {
    fn run(mut self) -> Result<Lookup> {
        while let Some(name) = self.queue.pop_front() {
            if self.stack.len() > MAX_COMPONENTS {
                return Err(Error::TooDeep {
                    path: self.root.host_path(self.rel),
                    max: MAX_COMPONENTS,
                });
            }
            if name == ".." {
                // Only ever back to a directory the walk came through: never above the root.
                self.stack.pop();
                continue;
            }
            if let Some(missing) = self.step(name)? {
                return Ok(Lookup::Missing(missing));
            }
        }
        self.found().map(Lookup::Found)
    }

    /// Takes `name`: descends into it, splices a symlink's target in, or creates it when it
    /// is missing. `Some`: it is missing and nothing may create it.
    fn step(&mut self, name: OsString) -> Result<Option<Missing>> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(self.cur(), name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return self.missing(name),
            Err(errno) => {
                let path = self.show(&name);
                return Err(Error::Open { path, errno });
            }
        };
        let node = Node::from_fd(fd)?;
        if node.kind == Kind::Symlink {
            self.symlink(&name, &node)?;
        } else {
            self.descend(node, name)?;
        }
        Ok(None)
    }

    /// A missing `name`: created, then taken again (whatever a racer left there is opened
    /// like anything else), or reported where the walk stopped.
    fn missing(&mut self, name: OsString) -> Result<Option<Missing>> {
        let Some(make) = self.create.as_mut() else {
            return self.stop_at(name).map(Some);
        };
        if self.creations >= MAX_CREATIONS {
            let path = self.show(&name);
            return Err(Error::KeepsChanging { path });
        }
        self.creations += 1;
        let cur = self
            .stack
            .last()
            .map_or(self.root.fd(), |(fd, _)| fd.as_fd());
        let last = self.queue.is_empty();
        make(cur, &rel_of(&self.stack), &name, last).map_err(Error::Create)?;
        self.queue.push_front(name);
        Ok(None)
    }

    /// Where a lookup stopped: the parent held, the missing name and what followed it.
    fn stop_at(&mut self, name: OsString) -> Result<Missing> {
        let parent_rel = rel_of(&self.stack);
        let parent = match self.stack.pop() {
            Some((fd, _)) => fd,
            None => self.dup_root()?,
        };
        Ok(Missing {
            parent,
            name,
            parent_rel,
            is_last: self.queue.is_empty(),
            rest: self.queue.drain(..).collect(),
            via_symlink: self.via_symlink,
        })
    }

    /// Splices the target of the symlink `name` into the walk: an absolute one restarts at
    /// the root. The link is read through its own descriptor.
    fn symlink(&mut self, name: &OsStr, link: &Node) -> Result<()> {
        self.links += 1;
        if self.links > MAX_SYMLINKS {
            let path = self.show(name);
            return Err(Error::TooManyLinks { path });
        }
        let target = readlinkat(&link.fd, "").map_err(Error::fd("readlink"))?;
        if target.is_empty() {
            let path = self.show(name);
            return Err(Error::EmptySymlink { path });
        }
        let target = Path::new(&target);
        if target.is_absolute() {
            self.stack.clear();
        }
        push_front(&mut self.queue, target);
        self.via_symlink = true;
        Ok(())
    }

    /// Takes `name` (not a symlink): only a directory may have components after it.
    fn descend(&mut self, node: Node, name: OsString) -> Result<()> {
        if !self.queue.is_empty() && node.kind != Kind::Dir {
            let path = self.show(&name);
            return Err(Error::NotADirectory {
                path,
                kind: node.kind,
            });
        }
        self.stack.push((node.fd, name));
        Ok(())
    }

    /// The end of a walk with every component there.
    fn found(mut self) -> Result<Found> {
        let rel = rel_of(&self.stack);
        let (node, parent) = match self.stack.pop() {
            Some((fd, name)) => {
                let parent = match self.stack.pop() {
                    Some((p, _)) => p,
                    None => self.dup_root()?,
                };
                (Node::from_fd(fd)?, Some((parent, name)))
            }
            None => (Node::from_fd(self.dup_root()?)?, None),
        };
        Ok(Found {
            node,
            parent,
            rel,
            via_symlink: self.via_symlink,
        })
    }

    /// The directory the next component is opened in.
    fn cur(&self) -> BorrowedFd<'_> {
        self.stack
            .last()
            .map_or(self.root.fd(), |(fd, _)| fd.as_fd())
    }

    fn dup_root(&self) -> Result<OwnedFd> {
        nix::unistd::dup(self.root.fd()).map_err(Error::fd("dup"))
    }

    /// `name` in the current directory, as the host sees it.
    fn show(&self, name: &OsStr) -> PathBuf {
        self.root.host_path(&rel_of(&self.stack).join(name))
    }
}

fn rel_of(stack: &[(OwnedFd, OsString)]) -> PathBuf {
    stack.iter().map(|(_, n)| n.as_os_str()).collect()
}

/// Puts the components of `path` in front of the queue; `.` and the root are dropped.
fn push_front(queue: &mut VecDeque<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => queue.push_front(n.to_os_string()),
            Component::ParentDir => queue.push_front("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}
