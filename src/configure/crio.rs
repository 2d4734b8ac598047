//! `configure crio`: a CRI-O runtime handler running the wrapper, in a drop-in of
//! `/etc/crio/crio.conf.d` (CRI-O merges those over crio.conf key by key). Nothing goes into
//! CRI-O's hooks directories: CRI-O rejects hook files with the precreate stage.

use std::path::Path;

use anyhow::{Result, anyhow};
use toml_edit::{Array, DocumentMut, Item, Table, value};

use super::{Change, MARK, read_optional, replace_file, toml_error, under};

pub const DEFAULT_PATH: &str = "/etc/crio/crio.conf.d/50-oci-volume.conf";
/// runc's state directory under CRI-O (CRI-O's own default for its runc handler).
pub const RUNTIME_ROOT: &str = "/run/runc";

pub use super::containerd::Request;

/// Adds (or with `remove`, takes away) `[crio.runtime.runtimes.NAME]` in the drop-in,
/// keeping anything else an operator put there. A drop-in left empty is removed.
pub fn configure(req: &Request) -> Result<Vec<Change>> {
    super::containerd::check_name(req.name)?;
    let file = under(req.root, req.path)?;
    let original = read_optional(&file)?;
    let mut doc: DocumentMut = original
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|e| toml_error(req.path, &e))?;
    let runtimes = runtimes_mut(&mut doc, req.path)?;
    if req.remove {
        runtimes.remove(req.name);
    } else {
        runtimes.insert(req.name, Item::Table(handler(req.wrapper, req.root)?));
    }
    let text = doc.to_string();
    if original.as_deref() == Some(text.as_str()) || (original.is_none() && req.remove) {
        return Ok(vec![]);
    }
    if req.remove && text.trim().is_empty() {
        std::fs::remove_file(&file).map_err(|e| anyhow!("removing {}: {e}", file.display()))?;
        return Ok(vec![Change::Removed {
            path: req.path.to_path_buf(),
        }]);
    }
    let backup = replace_file(&file, &text, original.as_deref().map(str::as_bytes))?;
    Ok(vec![Change::Written {
        path: req.path.to_path_buf(),
        backup,
    }])
}

fn runtimes_mut<'a>(doc: &'a mut DocumentMut, path: &Path) -> Result<&'a mut Table> {
    let mut t = doc.as_table_mut();
    for key in ["crio", "runtime", "runtimes"] {
        let item = t.entry(key).or_insert_with(|| {
            let mut n = Table::new();
            n.set_implicit(true);
            Item::Table(n)
        });
        t = item
            .as_table_mut()
            .ok_or_else(|| anyhow!("{}: `{key}` is not a table; left unchanged", path.display()))?;
    }
    Ok(t)
}

fn handler(wrapper: &Path, root: &Path) -> Result<Table> {
    let wrapper = wrapper
        .to_str()
        .ok_or_else(|| anyhow!("{}: not UTF-8", wrapper.display()))?;
    let mut t = Table::new();
    t.decor_mut().set_prefix(format!("{MARK}\n"));
    t.insert("runtime_path", value(wrapper));
    t.insert("runtime_type", value("oci"));
    t.insert("runtime_root", value(RUNTIME_ROOT));
    // CRI-O lets a handler see only the annotations it allows.
    let allowed: Array = super::annotation_keys(root)?.into_iter().collect();
    t.insert("allowed_annotations", value(allowed));
    Ok(t)
}
