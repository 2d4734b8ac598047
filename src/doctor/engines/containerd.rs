//! containerd: a CRI runtime handler whose runc binary is the wrapper, in the effective
//! configuration (the main file and its imports).

use std::path::{Path, PathBuf};

use toml::Table;

use super::{merge, parse_toml, read_optional};
use crate::doctor::{Options, Report, Verdict};

const CONTAINERD_FIX: &str = "oci-volume-hook configure containerd && systemctl restart containerd";

/// Checks containerd's registration; returns whether its CRI plugin is on (a node running
/// pods), as far as its configuration tells.
pub fn containerd(opts: &Options, r: &mut Report) -> bool {
    let main = opts.host("/etc/containerd/config.toml");
    if !opts.has_binary("containerd") && !main.exists() {
        r.push(
            "engine.containerd",
            Verdict::Skip,
            "containerd is not installed",
        );
        return false;
    }
    let mut files = Vec::new();
    let config = match load_containerd(opts, &main, &mut files) {
        Ok(Some(c)) => c,
        Ok(None) => {
            let summary = format!(
                "{} absent: containerd's defaults have no handler running {}",
                main.display(),
                opts.wrapper.display()
            );
            r.problem("engine.containerd", Verdict::Fail, summary, CONTAINERD_FIX);
            // containerd's defaults run the CRI plugin.
            return true;
        }
        Err(e) => {
            r.problem(
                "engine.containerd",
                Verdict::Fail,
                format!("{e} (containerd refuses to start)"),
                format!("repair it, then {CONTAINERD_FIX}"),
            );
            return false;
        }
    };
    let plugin = match config.get("version").and_then(toml::Value::as_integer) {
        Some(3) => "io.containerd.cri.v1.runtime",
        Some(2) => "io.containerd.grpc.v1.cri",
        _ => "cri",
    };
    let read = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let disabled = config
        .get("disabled_plugins")
        .and_then(toml::Value::as_array)
        .is_some_and(|d| d.iter().any(|p| p.as_str() == Some(plugin)));
    if disabled {
        let summary = format!("the CRI plugin {plugin} is disabled (disabled_plugins, in {read})");
        r.problem(
            "engine.containerd",
            Verdict::Fail,
            summary,
            format!("remove {plugin} from disabled_plugins, then {CONTAINERD_FIX}"),
        );
        return false;
    }
    let handlers = handlers(&config, plugin, opts).join(", ");
    if handlers.is_empty() {
        let summary = format!(
            "no runtime handler with BinaryName = {} under plugins.\"{plugin}\" (read: {read})",
            opts.wrapper.display()
        );
        r.problem("engine.containerd", Verdict::Fail, summary, CONTAINERD_FIX);
    } else {
        let summary = format!(
            "handler {handlers} runs {} (read: {read}); RuntimeClass handler: {handlers}",
            opts.wrapper.display()
        );
        r.push("engine.containerd", Verdict::Ok, summary);
    }
    true
}

/// The CRI runtime handlers whose runc binary is the wrapper.
fn handlers(config: &Table, plugin: &str, opts: &Options) -> Vec<String> {
    let runtimes = config
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(toml::Value::as_table);
    runtimes
        .into_iter()
        .flatten()
        .filter(|(_, rt)| {
            rt.get("options")
                .and_then(|o| o.get("BinaryName"))
                .and_then(toml::Value::as_str)
                .is_some_and(|b| opts.is_wrapper(b))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The effective containerd configuration: the main file, then its `imports` (globs,
/// relative to the importing file), each merged over what came before. containerd 1.x
/// (version 2) replaces each plugin's whole section; 2.x (version 3) merges tables deeply.
fn load_containerd(
    opts: &Options,
    main: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<Option<Table>, String> {
    let Some(text) = read_optional(main)? else {
        return Ok(None);
    };
    let mut config = parse_toml(main, &text)?;
    files.push(main.to_path_buf());
    let deep = config.get("version").and_then(toml::Value::as_integer) == Some(3);
    let mut queue: Vec<(PathBuf, Table)> = vec![(main.to_path_buf(), config.clone())];
    while let Some((from, table)) = queue.pop() {
        let imports = table
            .get("imports")
            .and_then(toml::Value::as_array)
            .cloned()
            .unwrap_or_default();
        for pattern in imports.iter().filter_map(toml::Value::as_str) {
            let full = if pattern.starts_with('/') {
                opts.host(pattern)
            } else {
                from.parent().unwrap_or(Path::new("/")).join(pattern)
            };
            for f in glob(&full) {
                if files.contains(&f) {
                    continue;
                }
                let text = read_optional(&f)?.unwrap_or_default();
                let imported = parse_toml(&f, &text)?;
                merge(&mut config, &imported, deep);
                files.push(f.clone());
                queue.push((f, imported));
            }
        }
    }
    Ok(Some(config))
}

/// Files matching a path whose last component may hold `*` (what containerd's imports use).
fn glob(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') {
        return vec![path.to_path_buf()];
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    name.is_char_boundary(head.len() + i) && wildcard(rest, &name[head.len() + i..])
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.toml", "a.toml"));
        assert!(wildcard("*", "x"));
        assert!(wildcard("a*b*c", "aXXbYc"));
        assert!(!wildcard("*.toml", "a.toml.bak"));
        assert!(!wildcard("a*", "b"));
    }

    #[test]
    fn containerd_1_replaces_a_plugin_section_2_merges() {
        let base: Table =
            toml::from_str("[plugins.cri.containerd.runtimes.a]\nx = 1\n[plugins.other]\ny = 1\n")
                .unwrap();
        let drop: Table = toml::from_str("[plugins.cri.containerd.runtimes.b]\nx = 2\n").unwrap();
        let mut v2 = base.clone();
        merge(&mut v2, &drop, false);
        let rts = |t: &Table| {
            t["plugins"]["cri"]["containerd"]["runtimes"]
                .as_table()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(rts(&v2), ["b"]);
        assert!(v2["plugins"].get("other").is_some());
        let mut v3 = base.clone();
        merge(&mut v3, &drop, true);
        assert_eq!(rts(&v3), ["a", "b"]);
    }
}
