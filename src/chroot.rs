//! Tenant chroots: which bind-mount sources lie inside one, matched component by component.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Result, bail};
use serde::Deserialize;

/// A chroot pattern such as `/containerdata/*`: absolute, `*` standing for exactly one component.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Part {
    Any,
    Literal(OsString),
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for Pattern {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Pattern> {
        Pattern::parse(&s)
    }
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern> {
        if !text.starts_with('/') {
            bail!("chroot pattern {text:?} is not an absolute path");
        }
        let mut parts = Vec::new();
        for c in text.split('/').filter(|c| !c.is_empty()) {
            parts.push(match c {
                "*" => Part::Any,
                "." | ".." => bail!("chroot pattern {text:?} contains {c:?}"),
                c if c.contains('*') => {
                    bail!("chroot pattern {text:?}: `*` must be a whole path component")
                }
                c => Part::Literal(c.into()),
            });
        }
        if parts.is_empty() {
            bail!("chroot pattern {text:?} would make the whole host a chroot");
        }
        Ok(Pattern {
            text: text.to_string(),
            parts,
        })
    }

    /// The pattern as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its components in order: `None` for `*`, else the literal name.
    pub fn components(&self) -> impl Iterator<Item = Option<&OsStr>> {
        self.parts.iter().map(|p| match p {
            Part::Any => None,
            Part::Literal(l) => Some(l.as_os_str()),
        })
    }

    /// The literal directory every chroot of this pattern lies below (up to the first `*`).
    pub fn base(&self) -> PathBuf {
        std::iter::once(OsStr::new("/"))
            .chain(self.components().map_while(|c| c))
            .collect()
    }

    fn matches(&self, comps: &[&OsStr]) -> bool {
        comps.len() >= self.parts.len()
            && self.parts.iter().zip(comps).all(|(p, c)| match p {
                Part::Any => true,
                Part::Literal(l) => l == c,
            })
    }
}

/// A bind-mount source split at its chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InChroot {
    /// The tenant's chroot, e.g. `/containerdata/user-toto`.
    pub chroot: PathBuf,
    /// The source relative to the chroot, e.g. `etc/localtime`; never empty, no `.`/`..`.
    pub rel: PathBuf,
}

/// Lexically normalizes an absolute host path: collapses `//`, `.` and a trailing `/`.
/// `..` is refused rather than interpreted: on the host it would be resolved through
/// symlinks the tenant controls.
pub fn normalize(path: &Path) -> Result<PathBuf> {
    if !path.is_absolute() {
        bail!("path {} is not absolute", path.display());
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => bail!("path {} contains `..`", path.display()),
            Component::Prefix(_) => unreachable!("no prefixes on Unix"),
        }
    }
    // `Path::components` drops interior `.` but keeps a lone trailing `/.`; both are gone now.
    if out.as_os_str().as_bytes().contains(&0) {
        bail!("path contains a NUL byte");
    }
    Ok(out)
}

/// Finds the chroot that `source` lies in. `None` when the source is in no chroot, or is a
/// chroot itself (a whole chroot is the platform's business, not a volume to prepare).
/// The first pattern that matches wins.
pub fn locate(patterns: &[Pattern], source: &Path) -> Result<Option<InChroot>> {
    let source = normalize(source)?;
    let comps: Vec<&OsStr> = source.iter().skip(1).collect();
    for p in patterns {
        if p.matches(&comps) && comps.len() > p.parts.len() {
            let n = p.parts.len();
            let chroot: PathBuf = std::iter::once(OsStr::new("/"))
                .chain(comps[..n].iter().copied())
                .collect();
            let rel: PathBuf = comps[n..].iter().collect();
            return Ok(Some(InChroot { chroot, rel }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<Pattern> {
        p.iter().map(|s| Pattern::parse(s).unwrap()).collect()
    }

    #[test]
    fn star_is_one_component() {
        let p = pats(&["/containerdata/*"]);
        let got = locate(&p, Path::new("/containerdata/user-toto/etc/localtime"))
            .unwrap()
            .unwrap();
        assert_eq!(got.chroot, Path::new("/containerdata/user-toto"));
        assert_eq!(got.rel, Path::new("etc/localtime"));
        assert_eq!(
            locate(&p, Path::new("/containerdata/user-toto")).unwrap(),
            None
        );
        assert_eq!(locate(&p, Path::new("/containerdata")).unwrap(), None);
        assert_eq!(locate(&p, Path::new("/other/user-toto/x")).unwrap(), None);
    }

    #[test]
    fn prefix_of_a_name_is_not_inside() {
        let p = pats(&["/containerdata/user-toto"]);
        assert_eq!(
            locate(&p, Path::new("/containerdata/user-toto2/x")).unwrap(),
            None
        );
        assert!(
            locate(&p, Path::new("/containerdata/user-toto/x"))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn slashes_and_dots_are_normalized() {
        let p = pats(&["/containerdata/*"]);
        let got = locate(
            &p,
            Path::new("//containerdata//user-toto/./etc//localtime/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.chroot, Path::new("/containerdata/user-toto"));
        assert_eq!(got.rel, Path::new("etc/localtime"));
    }

    #[test]
    fn dotdot_is_refused() {
        let p = pats(&["/containerdata/*"]);
        assert!(locate(&p, Path::new("/containerdata/user-toto/../user-titi/x")).is_err());
        assert!(locate(&p, Path::new("/containerdata/user-toto/a/..")).is_err());
    }

    #[test]
    fn star_in_the_middle() {
        let p = pats(&["/srv/*/chroot"]);
        let got = locate(&p, Path::new("/srv/t1/chroot/data"))
            .unwrap()
            .unwrap();
        assert_eq!(got.chroot, Path::new("/srv/t1/chroot"));
        assert_eq!(locate(&p, Path::new("/srv/t1/other/data")).unwrap(), None);
    }

    #[test]
    fn base_is_the_literal_prefix() {
        let base = |s: &str| Pattern::parse(s).unwrap().base();
        assert_eq!(base("/containerdata/*"), Path::new("/containerdata"));
        assert_eq!(base("/srv/*/chroot"), Path::new("/srv"));
        assert_eq!(base("/*/x"), Path::new("/"));
        assert_eq!(base("/a/b"), Path::new("/a/b"));
    }

    #[test]
    fn bad_patterns() {
        for bad in ["relative/*", "/", "/a/../b", "/a/user-*", "/a/./b"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_utf8_components_match() {
        use std::os::unix::ffi::OsStrExt;
        let p = pats(&["/containerdata/*"]);
        let src = Path::new(OsStr::from_bytes(b"/containerdata/t\xff/d\xfe"));
        let got = locate(&p, src).unwrap().unwrap();
        assert_eq!(got.rel.as_os_str().as_bytes(), b"d\xfe");
    }
}
