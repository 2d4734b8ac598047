//! `configure containerd`: a CRI runtime handler whose runc is the wrapper.
//!
//! Config version 2 (containerd 1.6/1.7, plugin `io.containerd.grpc.v1.cri`) is edited in
//! place: those versions merge an imported file per top-level plugin key, so a drop-in
//! holding only the handler would replace the whole CRI section (containerd issue 5837).
//! Version 3 (containerd 2.x, plugin `io.containerd.cri.v1.runtime`) merges plugin sections
//! key by key: there the handler goes into a drop-in named in `imports`.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value, value};

use super::{Change, MARK, read_optional, replace_file, toml_error, under, wrapper_runtime};

pub const DEFAULT_PATH: &str = "/etc/containerd/config.toml";
const PLUGIN_V2: &str = "io.containerd.grpc.v1.cri";
const PLUGIN_V3: &str = "io.containerd.cri.v1.runtime";
const RUNC_SHIM: &str = "io.containerd.runc.v2";

/// What to register, and where. Files are read and written at `root` + path; paths written
/// into files are the host's.
pub struct Request<'a> {
    pub root: &'a Path,
    pub path: &'a Path,
    pub wrapper: &'a Path,
    pub name: &'a str,
    pub remove: bool,
    /// The tool's own configuration, where the runtime the wrapper execs is recorded.
    pub config: &'a Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V2,
    V3,
}

impl Version {
    pub(super) fn plugin(self) -> &'static str {
        match self {
            Version::V2 => PLUGIN_V2,
            Version::V3 => PLUGIN_V3,
        }
    }
}

/// Adds (or with `remove`, takes away) the handler. An empty result: nothing to change.
pub fn configure(req: &Request) -> Result<Vec<Change>> {
    check_name(req.name)?;
    let file = under(req.root, req.path)?;
    let original = read_optional(&file)?;
    let mut doc: DocumentMut = original
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|e| toml_error(req.path, &e))?;
    let version = match version_of(&doc, req.path) {
        Ok(v) => v,
        // Nothing of ours can be in a file of a version this tool never writes.
        Err(_) if req.remove => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    if version == Version::V2 && doc.get("version").is_none() && !req.remove {
        doc.insert("version", value(2));
    }
    // Decided before any file is written: a configuration that cannot take the runtime
    // stops everything.
    let runtime_plan = if req.remove {
        None
    } else {
        let carried = operator_runtime(&doc, version.plugin(), req);
        Some(wrapper_runtime::plan(
            req.root,
            req.config,
            carried.as_deref(),
        )?)
    };
    let mut changes = match version {
        Version::V2 => in_place(req, &file, &mut doc, original.as_deref()),
        Version::V3 => drop_in(req, &file, &mut doc, original.as_deref()),
    }?;
    if let Some(plan) = runtime_plan {
        changes.extend(plan.apply()?);
    }
    Ok(changes)
}

/// The runc the template handler names (`options.BinaryName`), unless it is the wrapper.
pub(super) fn operator_runtime(doc: &DocumentMut, plugin: &str, req: &Request) -> Option<String> {
    let runtimes = doc
        .get("plugins")?
        .get(plugin)?
        .get("containerd")?
        .get("runtimes")?
        .as_table_like()?;
    let binary = template(runtimes, req.name)?
        .get("options")?
        .get("BinaryName")?
        .as_str()?;
    let ours = req.wrapper.to_str() == Some(binary);
    (!binary.is_empty() && !ours).then(|| binary.to_string())
}

/// The handler ours is copied from: the runc handler, else one named `default`.
fn template<'a>(runtimes: &'a dyn TableLike, name: &str) -> Option<&'a dyn TableLike> {
    [BUILTIN, "default"]
        .into_iter()
        .filter(|k| *k != name)
        .find_map(|k| runtimes.get(k).and_then(Item::as_table_like))
}

/// Handler names become TOML keys and CRI handler names: keep them plain.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        bail!("runtime name {name:?}: use letters, digits, `-`, `_` or `.`");
    }
    Ok(())
}

pub(super) fn version_of(doc: &DocumentMut, path: &Path) -> Result<Version> {
    match doc.get("version").map(|v| v.as_integer()) {
        Some(Some(2)) => Ok(Version::V2),
        Some(Some(3)) => Ok(Version::V3),
        // A new or empty file: version 2 is read by containerd 1.6, 1.7 and 2.x alike.
        None if doc.is_empty() => Ok(Version::V2),
        None => bail!(
            "{}: config version 1 (no `version` key) is not supported; migrate it with `containerd config migrate`; left unchanged",
            path.display()
        ),
        Some(v) => bail!(
            "{}: containerd config version {} is not supported (2 or 3); left unchanged",
            path.display(),
            v.map(|n| n.to_string())
                .unwrap_or_else(|| "(not an integer)".into())
        ),
    }
}

/// Version 2: the handler goes into the main file.
fn in_place(
    req: &Request,
    file: &Path,
    doc: &mut DocumentMut,
    original: Option<&str>,
) -> Result<Vec<Change>> {
    let path = req.path;
    if !req.remove {
        check_imports(req, doc)?;
    }
    let default = default_runtime(doc, Version::V2.plugin());
    let runtimes = runtimes_mut(doc.as_table_mut(), Version::V2.plugin(), path)?;
    if req.remove {
        take_back(runtimes, req.name, req.wrapper);
    } else {
        let handler = handler(runtimes, req.name, req.wrapper, (req.root, path))?;
        runtimes.insert(req.name, Item::Table(handler));
        keep_builtin(runtimes, &default);
    }
    let text = doc.to_string();
    if original == Some(text.as_str()) || (original.is_none() && req.remove) {
        return Ok(vec![]);
    }
    let backup = replace_file(file, &text, original.map(str::as_bytes))?;
    Ok(vec![Change::Written {
        path: path.to_path_buf(),
        backup,
    }])
}

/// containerd's own default handler, which it defines when the file names no runtime.
const BUILTIN: &str = "runc";
const BUILTIN_MARK: &str = "# Added by oci-volume-hook with its handler: containerd's built-in runc handler,\n# which containerd forgets once this file names any other runtime.";

fn default_runtime(doc: &DocumentMut, plugin: &str) -> String {
    doc.get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("default_runtime_name"))
        .and_then(Item::as_str)
        .unwrap_or(BUILTIN)
        .to_string()
}

/// Takes our handler away and, when no other handler is left that needs it, the runc handler
/// written out with it. A `runc` stays while any other handler is named: containerd forgets
/// its built-in one then, and pods (default_runtime_name, RuntimeClass `runc`) still use it.
/// What is not ours as written (mark or binary, and nothing added since) stays.
fn take_back(runtimes: &mut Table, name: &str, wrapper: &Path) {
    let ours = runtimes
        .get(name)
        .and_then(Item::as_table)
        .is_some_and(|t| {
            has_mark(t, MARK) || binary_of(t).is_some_and(|b| Some(b) == wrapper.to_str())
        });
    if ours {
        runtimes.remove(name);
    }
    let written = runtimes
        .get(BUILTIN)
        .and_then(Item::as_table)
        .is_some_and(|t| has_mark(t, BUILTIN_MARK) && is_plain_builtin(t));
    let others = runtimes.iter().any(|(k, _)| k != BUILTIN);
    if written && !others {
        runtimes.remove(BUILTIN);
    }
}

fn has_mark(t: &Table, mark: &str) -> bool {
    t.decor()
        .prefix()
        .and_then(|p| p.as_str())
        .is_some_and(|p| p.contains(mark))
}

fn binary_of(t: &Table) -> Option<&str> {
    t.get("options")?.get("BinaryName")?.as_str()
}

/// The runc handler exactly as [`keep_builtin`] writes it: nobody has added to it.
fn is_plain_builtin(t: &Table) -> bool {
    t.len() == 1 && t.get("runtime_type").and_then(Item::as_str) == Some(RUNC_SHIM)
}

/// containerd decodes the file's `runtimes` over its defaults as a whole (`config dump` on
/// 1.6 shows it): a file naming only our handler would leave no `runc`, the handler of
/// every other pod. So, when the default handler is the built-in one and the file lacks
/// it, it is written out as containerd defines it.
fn keep_builtin(runtimes: &mut Table, default: &str) {
    if default != BUILTIN || runtimes.contains_key(BUILTIN) {
        return;
    }
    let mut runc = Table::new();
    runc.decor_mut().set_prefix(format!("\n{BUILTIN_MARK}\n"));
    runc.insert("runtime_type", value(RUNC_SHIM));
    runtimes.insert(BUILTIN, Item::Table(runc));
}

/// `plugins.<plugin>.containerd.runtimes`, created as implicit tables (no empty headers).
pub(super) fn runtimes_mut<'a>(
    root: &'a mut Table,
    plugin: &str,
    path: &Path,
) -> Result<&'a mut Table> {
    let mut t = root;
    for key in ["plugins", plugin, "containerd", "runtimes"] {
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

/// The handler: the default runc handler's settings (SystemdCgroup, Root...) with the
/// wrapper as its binary, and the wrapper's annotations let through.
pub(super) fn handler(
    runtimes: &Table,
    name: &str,
    wrapper: &Path,
    (root, path): (&Path, &Path),
) -> Result<Table> {
    let mut t = match template(runtimes, name) {
        Some(tpl) => fresh_table(tpl),
        None => Table::new(),
    };
    t.decor_mut().set_prefix(format!("\n{MARK}\n"));
    t.insert("runtime_type", value(RUNC_SHIM));
    let wrapper = wrapper
        .to_str()
        .ok_or_else(|| anyhow!("{}: not UTF-8", wrapper.display()))?;
    let keys = super::annotation_keys(root)?;
    for key in ["pod_annotations", "container_annotations"] {
        let template: Vec<String> = t
            .get(key)
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let list: Array = super::let_through(&template, &keys).into_iter().collect();
        t.insert(key, value(list));
    }
    let options = t
        .entry("options")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| {
            anyhow!(
                "{}: the runc handler's `options` is not a table; left unchanged",
                path.display()
            )
        })?;
    options.insert("BinaryName", value(wrapper));
    Ok(t)
}

/// A copy of a table without its comments and positions, so it prints as a new section
/// after the others rather than interleaved with the one it was copied from. Inline tables
/// become sections.
fn fresh_table(src: &dyn TableLike) -> Table {
    let mut t = Table::new();
    for (k, item) in src.iter() {
        let copy = match item {
            Item::Table(sub) => Item::Table(fresh_table(sub)),
            Item::Value(Value::InlineTable(sub)) => Item::Table(fresh_table(sub)),
            Item::Value(v) => {
                let mut v = v.clone();
                v.decor_mut().clear();
                Item::Value(v)
            }
            other => other.clone(),
        };
        t.insert(k, copy);
    }
    t
}

/// Version 3: the handler in a drop-in, the drop-in in `imports` unless a glob there
/// already takes it.
fn drop_in(
    req: &Request,
    file: &Path,
    doc: &mut DocumentMut,
    original: Option<&str>,
) -> Result<Vec<Change>> {
    let conf_dir = req.path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let file_name = format!("99-{}.toml", req.name);
    let imports = import_entries(doc, req.path)?;
    let covered = imports
        .iter()
        .find_map(|i| glob_dir(&conf_dir, i, &file_name));
    let target = covered
        .clone()
        .unwrap_or_else(|| conf_dir.join("conf.d"))
        .join(&file_name);
    let target_s = target.to_string_lossy().into_owned();
    let mut changes = Vec::new();
    let dropin_file = under(req.root, &target)?;
    let dropin_old = read_optional(&dropin_file)?;
    if req.remove {
        if dropin_old.is_some() {
            std::fs::remove_file(&dropin_file)
                .map_err(|e| anyhow!("removing {}: {e}", dropin_file.display()))?;
            changes.push(Change::Removed { path: target });
        }
        set_import(doc, &target_s, false);
    } else {
        // The template comes from the main file's runc handler, when it has one.
        let runtimes = runtimes_mut(doc.as_table_mut(), PLUGIN_V3, req.path)?.clone();
        let mut d = DocumentMut::new();
        d.insert("version", value(3));
        let rt = runtimes_mut(d.as_table_mut(), PLUGIN_V3, &target)?;
        rt.insert(
            req.name,
            Item::Table(handler(
                &runtimes,
                req.name,
                req.wrapper,
                (req.root, req.path),
            )?),
        );
        let text = d.to_string();
        if dropin_old.as_deref() != Some(text.as_str()) {
            let backup = replace_file(
                &dropin_file,
                &text,
                dropin_old.as_deref().map(str::as_bytes),
            )?;
            changes.push(Change::Written {
                path: target,
                backup,
            });
        }
        if covered.is_none() {
            set_import(doc, &target_s, true);
        }
    }
    let text = doc.to_string();
    if let Some(old) = original {
        if old != text {
            let backup = replace_file(file, &text, Some(old.as_bytes()))?;
            changes.insert(
                0,
                Change::Written {
                    path: req.path.to_path_buf(),
                    backup,
                },
            );
        }
    } else if !req.remove {
        replace_file(file, &text, None)?;
        changes.insert(
            0,
            Change::Written {
                path: req.path.to_path_buf(),
                backup: None,
            },
        );
    }
    Ok(changes)
}

/// containerd 1.6/1.7 let an imported file's plugin section replace the main file's: a
/// handler added here would be lost if an import carries the CRI section.
fn check_imports(req: &Request, doc: &DocumentMut) -> Result<()> {
    let conf_dir = req.path.parent().unwrap_or(Path::new("/"));
    for entry in import_entries(doc, req.path)? {
        for file in expand_import(req.root, conf_dir, &entry)? {
            let Ok(Some(text)) = read_optional(&under(req.root, &file)?) else {
                continue;
            };
            let has_cri = text
                .parse::<DocumentMut>()
                .ok()
                .is_some_and(|d| d.get("plugins").and_then(|p| p.get(PLUGIN_V2)).is_some());
            if has_cri {
                bail!(
                    "{}: the imported {} has its own [plugins.\"{PLUGIN_V2}\"] section, which replaces this file's; register there (--path {}); left unchanged",
                    req.path.display(),
                    file.display(),
                    file.display()
                );
            }
        }
    }
    Ok(())
}

/// The files an `imports` entry names (a `*` in the file name only, as `conf.d/*.toml`).
fn expand_import(root: &Path, conf_dir: &Path, entry: &str) -> Result<Vec<PathBuf>> {
    let p = conf_dir.join(entry);
    let Some(name) = p
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.contains('*'))
    else {
        return Ok(vec![p]);
    };
    let dir = p.parent().unwrap_or(Path::new("/")).to_path_buf();
    let Ok(list) = std::fs::read_dir(under(root, &dir)?) else {
        return Ok(vec![]);
    };
    let mut out: Vec<PathBuf> = list
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| glob_dir(&dir, name, f).is_some())
        .map(|f| dir.join(f))
        .collect();
    out.sort();
    Ok(out)
}

fn import_entries(doc: &DocumentMut, path: &Path) -> Result<Vec<String>> {
    match doc.get("imports") {
        None => Ok(vec![]),
        Some(item) => item
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .ok_or_else(|| {
                anyhow!(
                    "{}: `imports` is not an array; left unchanged",
                    path.display()
                )
            }),
    }
}

/// The directory of an `imports` glob such as `/etc/containerd/conf.d/*.toml` when it takes
/// `file_name` (containerd resolves relative entries against the main file's directory).
fn glob_dir(conf_dir: &Path, entry: &str, file_name: &str) -> Option<PathBuf> {
    let p = Path::new(entry);
    let pattern = p.file_name()?.to_str()?;
    let dir = p.parent()?;
    if !pattern.contains('*') || dir.to_string_lossy().contains('*') {
        return None;
    }
    let (head, tail) = pattern.split_once('*')?;
    let matches = !tail.contains('*')
        && file_name.len() >= head.len() + tail.len()
        && file_name.starts_with(head)
        && file_name.ends_with(tail);
    matches.then(|| conf_dir.join(dir))
}

/// Adds or removes `entry` in the top-level `imports` (removing `imports` when emptied).
fn set_import(doc: &mut DocumentMut, entry: &str, present: bool) {
    let mut list = doc
        .get("imports")
        .and_then(Item::as_array)
        .cloned()
        .unwrap_or_default();
    let at = list.iter().position(|v| v.as_str() == Some(entry));
    match (present, at) {
        (true, None) => list.push(entry),
        (false, Some(i)) => {
            list.remove(i);
        }
        _ => return,
    }
    if list.is_empty() {
        doc.remove("imports");
    } else if let Some(a) = doc.get_mut("imports").and_then(Item::as_array_mut) {
        *a = list;
    } else {
        // Top-level keys print before every table, wherever they were inserted.
        doc.insert("imports", value(list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtimes(text: &str) -> DocumentMut {
        text.parse().unwrap()
    }

    fn take_back_in(doc: &mut DocumentMut) -> Vec<String> {
        let rt = runtimes_mut(doc.as_table_mut(), PLUGIN_V2, Path::new("f")).unwrap();
        take_back(rt, "oci-volume", Path::new("/usr/bin/oci-volume-runtime"));
        rt.iter().map(|(k, _)| k.to_string()).collect()
    }

    /// Only what the tool wrote goes: not a handler of that name the operator wrote, not a
    /// written-out runc the operator has since added to.
    #[test]
    fn remove_takes_back_only_what_it_added() {
        let h = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes";
        let mut doc = runtimes(&format!(
            "{h}.oci-volume]\nruntime_type = \"io.containerd.runc.v2\"\n{h}.oci-volume.options]\nBinaryName = \"/opt/other\"\n"
        ));
        assert_eq!(take_back_in(&mut doc), ["oci-volume"], "the operator's own");
        let mut doc = runtimes(&format!(
            "{h}.oci-volume.options]\nBinaryName = \"/usr/bin/oci-volume-runtime\"\n\n{}\n{h}.runc]\nruntime_type = \"io.containerd.runc.v2\"\nSystemdCgroup = true\n",
            BUILTIN_MARK
        ));
        assert_eq!(
            take_back_in(&mut doc),
            ["runc"],
            "ours by its binary; runc added to"
        );
        let mut doc = runtimes(&format!(
            "{MARK}\n{h}.oci-volume]\nruntime_type = \"x\"\n\n{BUILTIN_MARK}\n{h}.runc]\nruntime_type = \"io.containerd.runc.v2\"\n"
        ));
        assert!(take_back_in(&mut doc).is_empty(), "both ours, nothing else");
    }
}
