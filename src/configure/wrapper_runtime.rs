//! The runtime the wrapper execs, recorded in the tool's own configuration (`runtime`).
//!
//! containerd's handler has one binary, and the wrapper takes that place: when the runc
//! handler it was copied from named a runc of the operator's (`BinaryName`, say a patched
//! one), that runc must stay the one that runs. The wrapper reads `runtime` from its
//! configuration for every call, and salvages it from a file TOML cannot read
//! ([`crate::config::Config::load_lenient`]), so it is recorded there.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use toml_edit::{DocumentMut, value};

use super::{Change, read_optional, replace_file, under};

/// Comment above a `runtime` this tool set.
const SET_MARK: &str =
    "# Set by `oci-volume-hook configure containerd`: the runc its runc handler named.";

/// What is to be done with the tool's configuration, decided before anything is written.
pub struct Plan {
    path: PathBuf,
    file: PathBuf,
    original: Option<String>,
    text: Option<String>,
    /// The one line that says which runtime the wrapper runs, and why.
    pub line: String,
}

/// `wanted`: the runtime the engine's template handler named, if any. A configuration that
/// names another runtime is the operator's choice and kept (the line says so); one TOML
/// cannot read is refused when something must be recorded in it.
pub fn plan(root: &Path, path: &Path, wanted: Option<&str>) -> Result<Plan> {
    let file = under(root, path)?;
    let original = read_optional(&file)?;
    let parsed = original.as_deref().unwrap_or("").parse::<DocumentMut>();
    let shown = path.display();
    let mut doc = match (parsed, wanted) {
        (Ok(doc), _) => doc,
        (Err(e), Some(w)) => {
            let why = super::toml_error(path, &e);
            bail!("{why}: the runtime {w} the runc handler names cannot be recorded there")
        }
        (Err(_), None) => {
            let line = format!(
                "the wrapper runs the `runtime` salvaged from {shown} (not valid TOML), else runc from PATH"
            );
            return Ok(Plan::keep(path, file, original, line));
        }
    };
    let current = doc
        .get("runtime")
        .and_then(|v| v.as_str())
        .map(String::from);
    let (text, line) = match (wanted, current) {
        (Some(w), None) => {
            insert(&mut doc, w);
            let line = format!(
                "the wrapper runs {w}, the runtime the runc handler named: `runtime` set in {shown}"
            );
            (Some(doc.to_string()), line)
        }
        (Some(w), Some(c)) if c == w => (
            None,
            format!("the wrapper runs {w} (`runtime` in {shown}), as the runc handler did"),
        ),
        (Some(w), Some(c)) => (
            None,
            format!(
                "the wrapper runs {c} (`runtime` in {shown}), not {w} that the runc handler named: change `runtime` if {w} is meant"
            ),
        ),
        (None, c) => {
            let c = c.unwrap_or_else(|| "runc from PATH".into());
            (None, format!("the wrapper runs {c} (`runtime` in {shown})"))
        }
    };
    Ok(Plan {
        path: path.to_path_buf(),
        file,
        original,
        text,
        line,
    })
}

/// `text` (a configuration about to replace `old`, as install-node's ConfigMap does) with the
/// runtime this tool recorded in `old`, when `text` names none: kill and delete must keep
/// reaching it, and an unchanged node must not be rewritten at every start.
pub fn keep_recorded(text: String, old: &str) -> String {
    let recorded = old
        .parse::<DocumentMut>()
        .ok()
        .filter(|d| d.key("runtime").is_some_and(|k| set_here(k.leaf_decor())))
        .and_then(|d| d.get("runtime")?.as_str().map(String::from));
    let (Some(runtime), Ok(mut doc)) = (recorded, text.parse::<DocumentMut>()) else {
        return text;
    };
    if doc.contains_key("runtime") {
        return text;
    }
    insert(&mut doc, &runtime);
    doc.to_string()
}

fn set_here(decor: &toml_edit::Decor) -> bool {
    decor
        .prefix()
        .and_then(|p| p.as_str())
        .is_some_and(|p| p.contains(SET_MARK))
}

fn insert(doc: &mut DocumentMut, runtime: &str) {
    doc.insert("runtime", value(runtime));
    if let Some(mut k) = doc.key_mut("runtime") {
        k.leaf_decor_mut().set_prefix(format!("{SET_MARK}\n"));
    }
}

impl Plan {
    fn keep(path: &Path, file: PathBuf, original: Option<String>, line: String) -> Plan {
        Plan {
            path: path.to_path_buf(),
            file,
            original,
            text: None,
            line,
        }
    }

    /// Writes the configuration if it changes; the change, and the line, for the report.
    pub fn apply(self) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        if let Some(text) = &self.text {
            let backup = replace_file(
                &self.file,
                text,
                self.original.as_deref().map(str::as_bytes),
            )?;
            out.push(Change::Written {
                path: self.path,
                backup,
            });
        }
        out.push(Change::Note(self.line));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_handlers_runc_unless_the_operator_chose_one() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.toml");
        std::fs::write(
            &p,
            "# mine\nchroots = [\"/srv/*\"]\n[log]\nlevel = \"info\"\n",
        )
        .unwrap();
        let plan_ = plan(Path::new("/"), &p, Some("/opt/runc")).unwrap();
        assert!(plan_.line.contains("/opt/runc"), "{}", plan_.line);
        plan_.apply().unwrap();
        let c = crate::config::Config::parse(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(c.runtime, "/opt/runc");
        assert_eq!(c.log.level, "info");
        // Again: nothing to write.
        assert!(
            plan(Path::new("/"), &p, Some("/opt/runc"))
                .unwrap()
                .text
                .is_none()
        );
        // Another runtime chosen by the operator stays; the line says so.
        std::fs::write(&p, "runtime = \"/usr/local/sbin/runc\"\n").unwrap();
        let keep = plan(Path::new("/"), &p, Some("/opt/runc")).unwrap();
        assert!(keep.text.is_none());
        assert!(keep.line.contains("not /opt/runc"), "{}", keep.line);
        // Not TOML: refused when something must go in, named otherwise.
        std::fs::write(&p, "runtime = \"/x\"\nchroots = [\n").unwrap();
        let e = plan(Path::new("/"), &p, Some("/opt/runc")).err().unwrap();
        assert!(format!("{e:#}").contains("not valid TOML"), "{e:#}");
        assert!(plan(Path::new("/"), &p, None).is_ok());
    }
}
