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
        comps.len() >= self.parts.len() && self.matches_prefix(comps)
    }

    /// Whether the first components of `comps` agree with the pattern's (as far as both go).
    fn matches_prefix(&self, comps: &[&OsStr]) -> bool {
        self.parts.iter().zip(comps).all(|(p, c)| p.matches(c))
    }

    /// Why a source with components `comps` (no chroot of this pattern, nor inside one)
    /// would expose chroots: it is one of their ancestors (`/` excepted: binding the whole
    /// host is an explicit choice), or it lies under the directory holding the `*` chroots
    /// without being in one.
    fn exposes(&self, comps: &[&OsStr]) -> Option<Misplaced> {
        let n = self.parts.len();
        if !comps.is_empty() && comps.len() < n && self.matches_prefix(comps) {
            return Some(Misplaced::AncestorOfChroots {
                pattern: self.text.clone(),
            });
        }
        let base = self.parts.iter().position(|p| *p == Part::Any)?;
        let under_base = comps.len() > base && self.matches_prefix(&comps[..base]);
        if under_base && !self.matches_prefix(comps) {
            return Some(Misplaced::BesideChroots {
                pattern: self.text.clone(),
            });
        }
        None
    }
}

impl Part {
    fn matches(&self, c: &OsStr) -> bool {
        match self {
            Part::Any => true,
            Part::Literal(l) => l == c,
        }
    }
}

/// Linux's PATH_MAX, which counts the terminating NUL: a source has at most 4,095 bytes (the
/// runtime could not mount a longer one), and the walk's cost grows with it.
pub const PATH_MAX: usize = 4096;
/// The most components a source may have below its chroot.
pub const MAX_COMPONENTS: usize = 256;

/// Why a source must be refused for where it lies, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misplaced {
    #[error("the source is {len} bytes long: paths must be shorter than PATH_MAX ({PATH_MAX})")]
    SourceTooLong { len: usize },
    #[error("path contains a NUL byte")]
    NulByte,
    /// `..` once the path reached a chroot, or landing in one: the host would resolve it
    /// through the tenant's symlinks (`<chroot>/..` is every tenant's base).
    #[error("path {} contains `..`", .path.display())]
    DotDot { path: PathBuf },
    #[error("the source has {below} components below its chroot, more than {MAX_COMPONENTS}")]
    TooDeep { below: usize },
    #[error(
        "is an ancestor of the chroots {pattern}: it would hand out other tenants' chroots (refuse_chroot_bases = true)"
    )]
    AncestorOfChroots { pattern: String },
    #[error(
        "lies beside the chroots {pattern}, in no chroot: it would hand out other tenants' chroots (refuse_chroot_bases = true)"
    )]
    BesideChroots { pattern: String },
}

/// Where a bind-mount source lies with respect to the chroots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Nowhere near a chroot: the source is the platform's business.
    Outside,
    /// A chroot itself: the platform's, never prepared.
    Chroot(PathBuf),
    Inside(InChroot),
}

/// Finds where `source` lies, or why it must be refused:
/// - longer than [`PATH_MAX`], or more than [`MAX_COMPONENTS`] components in a chroot;
/// - `..` anywhere once the path has reached a chroot (`<chroot>/..` is the chroot base, with
///   every other tenant in it), or `..` landing in a chroot: the host would resolve it
///   through the tenant's symlinks;
/// - with `refuse_bases`, a chroot base, an ancestor of chroots, or a path under a base that
///   is in no chroot (see [`Pattern`]), `..` or not: such a mount hands out other tenants.
pub fn place(
    patterns: &[Pattern],
    source: &Path,
    refuse_bases: bool,
) -> std::result::Result<Place, Misplaced> {
    let bytes = source.as_os_str().as_bytes();
    if bytes.len() >= PATH_MAX {
        return Err(Misplaced::SourceTooLong { len: bytes.len() });
    }
    if !source.is_absolute() {
        return Ok(Place::Outside);
    }
    if bytes.contains(&0) {
        return Err(Misplaced::NulByte);
    }
    let dot_dot = || Misplaced::DotDot {
        path: source.to_path_buf(),
    };
    let at_or_in_chroot = |comps: &[&OsStr]| patterns.iter().any(|p| p.matches(comps));
    let mut comps: Vec<&OsStr> = Vec::new();
    let mut dotdot = false;
    for c in source.components() {
        match c {
            Component::Normal(n) => comps.push(n),
            Component::ParentDir => {
                if at_or_in_chroot(&comps) {
                    return Err(dot_dot());
                }
                dotdot = true;
                comps.pop();
            }
            _ => {}
        }
    }
    if dotdot && at_or_in_chroot(&comps) {
        return Err(dot_dot());
    }
    for p in patterns {
        if p.matches(&comps) && comps.len() > p.parts.len() {
            let n = p.parts.len();
            if comps.len() - n > MAX_COMPONENTS {
                return Err(Misplaced::TooDeep {
                    below: comps.len() - n,
                });
            }
            let chroot: PathBuf = std::iter::once(OsStr::new("/"))
                .chain(comps[..n].iter().copied())
                .collect();
            let rel: PathBuf = comps[n..].iter().collect();
            return Ok(Place::Inside(InChroot { chroot, rel }));
        }
    }
    if at_or_in_chroot(&comps) {
        let chroot: PathBuf = std::iter::once(OsStr::new("/")).chain(comps).collect();
        return Ok(Place::Chroot(chroot));
    }
    if refuse_bases {
        if let Some(refusal) = patterns.iter().find_map(|p| p.exposes(&comps)) {
            return Err(refusal);
        }
    }
    Ok(Place::Outside)
}

/// A bind-mount source split at its chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InChroot {
    /// The tenant's chroot, e.g. `/containerdata/user-toto`.
    pub chroot: PathBuf,
    /// The source relative to the chroot, e.g. `etc/localtime`; never empty, no `.`/`..`.
    pub rel: PathBuf,
}

/// The names `path` walks through, in order (`/`, `.` and `..` left out: callers pass
/// normalized paths).
pub fn names(path: &Path) -> Vec<&OsStr> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
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
    fn dotdot_once_in_a_chroot_is_refused_whatever_the_switch() {
        let p = pats(&["/containerdata/*"]);
        for refuse in [false, true] {
            for bad in [
                "/containerdata/user-dd/..",
                "/containerdata/user-dd/../",
                "/containerdata/user-dd/a/../../user-titi",
                "/containerdata/../containerdata/user-dd/x",
                "/var/../containerdata/user-dd/x",
            ] {
                let e = place(&p, Path::new(bad), refuse).unwrap_err();
                assert!(matches!(e, Misplaced::DotDot { .. }), "{bad}: {e:?}");
                assert!(e.to_string().contains("contains `..`"), "{bad}: {e}");
            }
        }
        // Through root's directories only, ending nowhere near a chroot: the host's business.
        assert_eq!(
            place(&p, Path::new("/var/lib/../log"), true).unwrap(),
            Place::Outside
        );
    }

    #[test]
    fn bases_and_ancestors_are_refused_when_asked() {
        let p = pats(&["/containerdata/*", "/srv/*/chroot", "/home/alice"]);
        for (bad, ancestor) in [
            ("/containerdata", true),
            ("/containerdata/", true),
            ("/srv", true),
            ("/srv/t1", true),
            ("/srv/t1/other/x", false),
            ("/home", true),
        ] {
            match place(&p, Path::new(bad), true) {
                Err(Misplaced::AncestorOfChroots { .. }) if ancestor => {}
                Err(Misplaced::BesideChroots { .. }) if !ancestor => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            place(&p, Path::new("/containerdata/user-dd/.."), true),
            Err(Misplaced::DotDot { .. })
        ));
        for (refuse, ok) in [
            (true, "/"),
            (true, "/etc/localtime"),
            (true, "/home/bob/x"),
            (false, "/containerdata"),
            (false, "/srv/t1/other/x"),
        ] {
            assert_eq!(
                place(&p, Path::new(ok), refuse).unwrap(),
                Place::Outside,
                "{ok}"
            );
        }
        assert_eq!(
            place(&p, Path::new("/srv/t1/chroot"), true).unwrap(),
            Place::Chroot("/srv/t1/chroot".into())
        );
        assert!(matches!(
            place(&p, Path::new("/srv/t1/chroot/x"), true).unwrap(),
            Place::Inside(_)
        ));
    }

    #[test]
    fn long_sources_are_refused() {
        let p = pats(&["/c/*"]);
        let long = format!("/c/t/{}", "a".repeat(PATH_MAX));
        assert!(matches!(
            place(&p, Path::new(&long), true),
            Err(Misplaced::SourceTooLong { len }) if len == long.len()
        ));
        let deep = format!("/c/t{}", "/a".repeat(MAX_COMPONENTS + 1));
        assert!(matches!(
            place(&p, Path::new(&deep), true),
            Err(Misplaced::TooDeep { below }) if below == MAX_COMPONENTS + 1
        ));
        let ok = format!("/c/t{}", "/a".repeat(MAX_COMPONENTS));
        assert!(place(&p, Path::new(&ok), true).is_ok());
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
