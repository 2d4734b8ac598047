//! Bind sources outside the chroots that containers may mount (`host_sources`): the
//! operator's list of the platform's own paths (kubelet's pod volumes, containerd's sandbox
//! files).
//!
//! Why a list: containerd's CRI resolves a hostPath's symlinks on the host at
//! CreateContainer, before any runtime runs, so a tenant's `<chroot>/vol -> /host/dir`
//! reaches the tool as `/host/dir`, in no chroot. Nothing in config.json tells it from the
//! platform's own paths; only a list of what may come from outside the chroots does.
//!
//! These paths are the platform's, so they are resolved with the host's symlinks, as the
//! runtime will (`/var/lib/kubelet` may be a link to another disk): once, through one
//! descriptor whose path the kernel reports. Both the path as given and where it leads must
//! be listed, so no link — nor `..`, refused outright — carries a listed path off the list.
//!
//! A component `{ANNOTATION}` matches only the value of that annotation in the container's
//! config.json, e.g. `{io.kubernetes.cri.sandbox-uid}`, which containerd's CRI sets to the
//! pod's uid: a pod may then mount its own kubelet volumes, not another pod's. Never wider
//! than `*`, so a forged value can only narrow.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{Result, bail};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use serde::Deserialize;

use crate::chroot::Misplaced;
use crate::refusal::Refusal;

/// One `host_sources` entry, such as `/var/lib/kubelet/pods/*/volumes/**`: absolute, `*`
/// for exactly one component, `{ANNOTATION}` for the one component that annotation's value
/// names, a final `**` for one or more (anything below).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Part {
    One,
    Below,
    Annotation(String),
    Literal(OsString),
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for HostPattern {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<HostPattern> {
        HostPattern::parse(&s)
    }
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern> {
        if !text.starts_with('/') {
            bail!("host_sources: {text:?} is not an absolute path");
        }
        let names: Vec<&str> = text.split('/').filter(|c| !c.is_empty()).collect();
        let mut parts = Vec::new();
        for (i, c) in names.iter().enumerate() {
            parts.push(match *c {
                "*" => Part::One,
                "**" if i + 1 == names.len() => Part::Below,
                "**" => bail!("host_sources: {text:?}: `**` may only be the last component"),
                "." | ".." => bail!("host_sources: {text:?} contains {c:?}"),
                c if c.len() > 2 && c.starts_with('{') && c.ends_with('}') && !c.contains('*') => {
                    Part::Annotation(c[1..c.len() - 1].to_string())
                }
                c if c.contains('*') => {
                    bail!("host_sources: {text:?}: `*` must be a whole path component")
                }
                c => Part::Literal(c.into()),
            });
        }
        if !parts.iter().any(|p| matches!(p, Part::Literal(_))) {
            bail!(
                "host_sources: {text:?} would list every host path: leave host_sources unset instead"
            );
        }
        Ok(HostPattern {
            text: text.to_string(),
            parts,
        })
    }

    /// The entry as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches(&self, comps: &[&OsStr], annotations: &Annotations) -> bool {
        let below = self.parts.last() == Some(&Part::Below);
        let long_enough = match below {
            true => comps.len() >= self.parts.len(),
            false => comps.len() == self.parts.len(),
        };
        long_enough
            && self.parts.iter().zip(comps).all(|(p, c)| match p {
                Part::One | Part::Below => true,
                Part::Literal(l) => l == c,
                Part::Annotation(key) => {
                    let value = annotations.get(key).and_then(|v| v.as_str());
                    value.is_some_and(|v| OsStr::new(v) == *c)
                }
            })
    }
}

/// A container's annotations (config.json), for `{ANNOTATION}` components.
pub type Annotations = serde_json::Map<String, serde_json::Value>;

/// Whether the normalized absolute `path` matches an entry.
pub fn listed(patterns: &[HostPattern], path: &Path, annotations: &Annotations) -> bool {
    let comps: Vec<&OsStr> = crate::chroot::names(path);
    patterns.iter().any(|p| p.matches(&comps, annotations))
}

/// Checks a bind source that lies in no chroot against `host_sources`: its path as given
/// (normalized; `..` refused, as the host resolves it after symlinks), then where it leads
/// on the host. Only a listed path is opened, so the refusal of an unlisted one says nothing
/// about the host.
pub fn check(
    patterns: &[HostPattern],
    source: &Path,
    annotations: &Annotations,
) -> Result<(), Refusal> {
    let mut given = PathBuf::from("/");
    for c in source.components() {
        match c {
            Component::Normal(n) => given.push(n),
            Component::ParentDir => {
                return Err(Misplaced::DotDot {
                    path: source.to_path_buf(),
                }
                .into());
            }
            _ => {}
        }
    }
    if !source.is_absolute() || !listed(patterns, &given, annotations) {
        return Err(Refusal::HostSourceNotListed);
    }
    let real = real_path(&given)?;
    if real != given && !listed(patterns, &real, annotations) {
        return Err(Refusal::HostSourceLeadsOff);
    }
    Ok(())
}

/// Where `path` leads on the host, following its symlinks as the runtime will: opened once
/// (`O_PATH`, never a FIFO's open), its path as the kernel names the descriptor.
fn real_path(path: &Path) -> Result<PathBuf, Refusal> {
    let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    let fd = open(path, flags, Mode::empty()).map_err(|errno| Refusal::Io {
        what: "opening the host source",
        errno,
    })?;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let real = nix::fcntl::readlink(link.as_str()).map_err(|errno| Refusal::Io {
        what: "reading where the host source leads",
        errno,
    })?;
    // An unreachable or deleted inode is named "... (deleted)" or not absolutely: unlisted.
    Ok(PathBuf::from(real))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Annotations {
        Annotations::new()
    }

    fn chk(p: &[HostPattern], source: &Path) -> Result<(), Refusal> {
        check(p, source, &none())
    }

    fn pats(p: &[&str]) -> Vec<HostPattern> {
        p.iter().map(|s| HostPattern::parse(s).unwrap()).collect()
    }

    #[test]
    fn stars_and_below() {
        let p = pats(&[
            "/var/lib/kubelet/pods/*/volumes/**",
            "/var/lib/kubelet/pods/*/etc-hosts",
        ]);
        for ok in [
            "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/scratch",
            "/var/lib/kubelet/pods/u1/volumes/a/b/c/d",
            "/var/lib/kubelet/pods/u1/etc-hosts",
        ] {
            assert!(listed(&p, Path::new(ok), &none()), "{ok}");
        }
        for no in [
            "/var/lib/kubelet/pods/u1/volumes",
            "/var/lib/kubelet/pods/u1/etc-hosts/x",
            "/var/lib/kubelet/pods/u1/etc-hostsx",
            "/var/lib/kubelet/pods/etc-hosts",
            "/var/lib/kubelet/pods/u1/u2/volumes/a",
            "/var/lib/kubelet/podsx/u1/volumes/a",
            "/host/dir",
            "/",
        ] {
            assert!(!listed(&p, Path::new(no), &none()), "{no}");
        }
    }

    #[test]
    fn an_annotation_component_is_that_value_only() {
        let p = pats(&["/k/pods/{io.kubernetes.cri.sandbox-uid}/volumes/**"]);
        let mut a = none();
        let own = Path::new("/k/pods/uid-1/volumes/secret/token");
        let other = Path::new("/k/pods/uid-2/volumes/secret/token");
        assert!(!listed(&p, own, &a), "no annotation: nothing");
        a.insert("io.kubernetes.cri.sandbox-uid".into(), "uid-1".into());
        assert!(listed(&p, own, &a));
        assert!(!listed(&p, other, &a), "another pod's volume");
        for forged in ["", "..", "uid-1/volumes/x", "*"] {
            a.insert("io.kubernetes.cri.sandbox-uid".into(), forged.into());
            assert!(!listed(&p, own, &a) && !listed(&p, other, &a), "{forged:?}");
        }
        a.insert("io.kubernetes.cri.sandbox-uid".into(), 7.into());
        assert!(
            !listed(&p, Path::new("/k/pods/7/volumes/x"), &a),
            "not a string"
        );
    }

    #[test]
    fn bad_entries() {
        for bad in [
            "relative/**",
            "/",
            "/**",
            "/*/**",
            "/a/**/b",
            "/a/x*",
            "/a/../b",
            "/a/./b",
        ] {
            let e = HostPattern::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("host_sources") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
        assert!(HostPattern::parse("/run/*/shm").is_ok());
    }

    #[test]
    fn dotdot_and_unlisted_are_refused_before_the_host_is_asked() {
        let p = pats(&["/var/lib/kubelet/pods/**"]);
        for (src, dotdot) in [
            ("/var/lib/kubelet/pods/../../../../etc", true),
            ("/var/lib/kubelet/pods/u/..", true),
            ("/etc/shadow", false),
            ("var/lib/kubelet/pods/u", false),
        ] {
            match chk(&p, Path::new(src)) {
                Err(Refusal::Misplaced(Misplaced::DotDot { .. })) if dotdot => {}
                Err(Refusal::HostSourceNotListed) if !dotdot => {}
                other => panic!("{src}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_link_carrying_a_listed_path_off_the_list_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        let (listed_dir, off) = (root.join("listed"), root.join("off"));
        std::fs::create_dir_all(listed_dir.join("real")).unwrap();
        std::fs::create_dir_all(&off).unwrap();
        std::os::unix::fs::symlink(&off, listed_dir.join("out")).unwrap();
        std::os::unix::fs::symlink("real", listed_dir.join("in")).unwrap();
        let p = pats(&[&format!("{}/**", listed_dir.display())]);
        assert!(chk(&p, &listed_dir.join("real")).is_ok());
        assert!(chk(&p, &listed_dir.join("in")).is_ok(), "stays on the list");
        assert!(matches!(
            chk(&p, &listed_dir.join("out")),
            Err(Refusal::HostSourceLeadsOff)
        ));
        assert!(matches!(chk(&p, &off), Err(Refusal::HostSourceNotListed)));
        assert!(matches!(
            chk(&p, &listed_dir.join("missing")),
            Err(Refusal::Io {
                errno: nix::errno::Errno::ENOENT,
                ..
            })
        ));
        // `//`, `.` and a trailing `/` are normalized, not refused.
        let odd = format!("{}//./real/", listed_dir.display());
        assert!(chk(&p, Path::new(&odd)).is_ok());
    }
}
