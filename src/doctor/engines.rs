//! Whether each engine installed on the node will call the tool: dockerd (daemon.json, and
//! the live daemon when it answers), podman (its effective `hooks_dir`), containerd (a runtime
//! handler in the effective configuration, imports included), CRI-O (a runtime table).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use toml::Table;

use super::{Options, Report, Verdict, http};

const DOCKER_FIX: &str = "oci-volume-hook configure docker && systemctl restart docker";
const CONTAINERD_FIX: &str = "oci-volume-hook configure containerd && systemctl restart containerd";
const CRIO_FIX: &str = "oci-volume-hook configure crio && systemctl restart crio";
/// The package's own hooks directory (README: CRI-O must not read the precreate hook).
const PACKAGE_HOOKS: &str = "/usr/share/oci-volume-hook/hooks.d";
/// Where CRI-O (and podman by default) read OCI hooks.
const SHARED_HOOKS: [&str; 2] = [
    "/usr/share/containers/oci/hooks.d",
    "/etc/containers/oci/hooks.d",
];

/// A file that may be absent: `Ok(None)`.
fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn parse_toml(path: &Path, text: &str) -> Result<Table, String> {
    toml::from_str::<Table>(text).map_err(|e| {
        let msg = e.message().to_string();
        format!(
            "{}: invalid TOML: {}",
            path.display(),
            crate::logging::one_line(&msg)
        )
    })
}

/// The regular files of a drop-in directory whose names end with `suffix`, in name order.
fn drop_ins(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

pub fn docker(opts: &Options, r: &mut Report) {
    let path = opts.host("/etc/docker/daemon.json");
    if !opts.has_binary("dockerd") && !path.exists() {
        return r.push("engine.docker", Verdict::Skip, "dockerd is not installed");
    }
    let doc = match read_optional(&path) {
        Err(e) => return r.problem("engine.docker", Verdict::Fail, e, DOCKER_FIX),
        Ok(None) => None,
        Ok(Some(t)) if t.trim().is_empty() => None,
        Ok(Some(t)) => match serde_json::from_str::<Value>(&t) {
            Ok(v) => Some(v),
            Err(e) => {
                let fix = format!(
                    "repair {} (dockerd will not start with it), then {DOCKER_FIX}",
                    path.display()
                );
                return r.problem(
                    "engine.docker",
                    Verdict::Fail,
                    format!("{}: invalid JSON: {e}", path.display()),
                    fix,
                );
            }
        },
    };
    let registered = doc
        .as_ref()
        .map(|d| wrapper_runtimes(opts, d))
        .unwrap_or_default();
    if registered.is_empty() {
        let summary = format!(
            "{} registers no runtime running {}",
            path.display(),
            opts.wrapper.display()
        );
        r.problem("engine.docker", Verdict::Fail, summary, DOCKER_FIX);
    } else {
        let default = doc
            .as_ref()
            .and_then(|d| d["default-runtime"].as_str())
            .unwrap_or("runc");
        let summary = format!(
            "{}: runtime {} runs {} (default runtime: {default})",
            path.display(),
            registered.join(", "),
            opts.wrapper.display()
        );
        r.push("engine.docker", Verdict::Ok, summary);
    }
    docker_live(opts, doc.as_ref(), !registered.is_empty(), r);
}

/// Names of the `runtimes` entries (daemon.json or /info) whose path is the wrapper.
fn wrapper_runtimes(opts: &Options, doc: &Value) -> Vec<String> {
    doc.get("runtimes")
        .or_else(|| doc.get("Runtimes"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, v)| v["path"].as_str().is_some_and(|p| opts.is_wrapper(p)))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The running dockerd, when it answers on its socket: does it list the runtime?
fn docker_live(opts: &Options, daemon_json: Option<&Value>, in_file: bool, r: &mut Report) {
    let socket = daemon_json
        .and_then(|d| d["hosts"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str()?.strip_prefix("unix://"))
        .next()
        .unwrap_or("/run/docker.sock");
    let socket = opts.host(socket);
    let info = match http::get(&socket, "/info", Duration::from_secs(5)) {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body).ok(),
        _ => None,
    };
    let Some(info) = info else {
        return r.push(
            "engine.docker.live",
            Verdict::Skip,
            format!("dockerd does not answer on {}", socket.display()),
        );
    };
    let version = info["ServerVersion"].as_str().unwrap_or("?");
    let listed = wrapper_runtimes(opts, &info);
    if !listed.is_empty() {
        let summary = format!(
            "dockerd {version} on {} lists runtime {}",
            socket.display(),
            listed.join(", ")
        );
        return r.push("engine.docker.live", Verdict::Ok, summary);
    }
    let fix = if in_file {
        "systemctl restart docker (daemon.json has the runtime; dockerd has not read it)"
    } else {
        DOCKER_FIX
    };
    let summary = format!(
        "dockerd {version} on {} lists no runtime running {} (runtimes: {})",
        socket.display(),
        opts.wrapper.display(),
        info["Runtimes"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    r.problem("engine.docker.live", Verdict::Fail, summary, fix);
}

/// podman reads containers.conf, then its drop-ins; the last `hooks_dir` set wins.
pub fn podman(opts: &Options, r: &mut Report) {
    let mut files = Vec::new();
    for base in [
        "/usr/share/containers/containers.conf",
        "/etc/containers/containers.conf",
    ] {
        files.push(opts.host(base));
        files.extend(drop_ins(&opts.host(format!("{base}.d")), ".conf"));
    }
    if !opts.has_binary("podman") && !files.iter().any(|f| f.exists()) {
        return r.push("engine.podman", Verdict::Skip, "podman is not installed");
    }
    let fix = format!(
        "add {PACKAGE_HOOKS} to [engine] hooks_dir in {}",
        opts.host("/etc/containers/containers.conf.d/50-oci-volume-hook.conf")
            .display()
    );
    let mut hooks_dir: Vec<String> = SHARED_HOOKS.iter().map(|s| s.to_string()).collect();
    let mut set_by = "podman's defaults".to_string();
    for f in &files {
        let table = match read_optional(f).and_then(|t| t.map(|t| parse_toml(f, &t)).transpose()) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                return r.problem(
                    "engine.podman",
                    Verdict::Fail,
                    format!("{e} (podman refuses to start)"),
                    format!("repair {}", f.display()),
                );
            }
        };
        if let Some(dirs) = table
            .get("engine")
            .and_then(|e| e.get("hooks_dir"))
            .and_then(|d| d.as_array())
        {
            let append = dirs
                .iter()
                .any(|d| d.get("append").and_then(toml::Value::as_bool) == Some(true));
            if !append {
                hooks_dir.clear();
            }
            hooks_dir.extend(dirs.iter().filter_map(|d| d.as_str().map(String::from)));
            set_by = f.display().to_string();
        }
    }
    match hooks_dir
        .iter()
        .find_map(|d| precreate_hook(&opts.host(d)).map(|f| (d, f)))
    {
        Some((dir, file)) => r.push(
            "engine.podman",
            Verdict::Ok,
            format!(
                "hooks_dir (from {set_by}) includes {dir}: precreate hook {}",
                file.display()
            ),
        ),
        None => r.problem(
            "engine.podman",
            Verdict::Fail,
            format!(
                "no precreate hook of oci-volume-hook in hooks_dir [{}] (set by {set_by})",
                hooks_dir.join(", ")
            ),
            fix,
        ),
    }
}

/// A hook file in `dir` that runs oci-volume-hook at the precreate stage.
fn precreate_hook(dir: &Path) -> Option<PathBuf> {
    drop_ins(dir, ".json").into_iter().find(|f| {
        let v: Value = std::fs::read(f)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let runs_us = v["hook"]["path"]
            .as_str()
            .is_some_and(|p| Path::new(p).file_name() == Some("oci-volume-hook".as_ref()));
        let precreate = v["stages"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "precreate"));
        runs_us && precreate
    })
}

pub fn containerd(opts: &Options, r: &mut Report) {
    let main = opts.host("/etc/containerd/config.toml");
    if !opts.has_binary("containerd") && !main.exists() {
        return r.push(
            "engine.containerd",
            Verdict::Skip,
            "containerd is not installed",
        );
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
            return r.problem("engine.containerd", Verdict::Fail, summary, CONTAINERD_FIX);
        }
        Err(e) => {
            return r.problem(
                "engine.containerd",
                Verdict::Fail,
                format!("{e} (containerd refuses to start)"),
                format!("repair it, then {CONTAINERD_FIX}"),
            );
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
        return r.problem(
            "engine.containerd",
            Verdict::Fail,
            summary,
            format!("remove {plugin} from disabled_plugins, then {CONTAINERD_FIX}"),
        );
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

fn merge(into: &mut Table, from: &Table, deep: bool) {
    for (k, v) in from {
        if k == "imports" || k == "version" {
            continue;
        }
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) if deep => merge(a, b, true),
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) if k == "plugins" => {
                for (pk, pv) in b {
                    a.insert(pk.clone(), pv.clone());
                }
            }
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
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

/// CRI-O: crio.conf, then crio.conf.d in name order; a `[crio.runtime.runtimes.NAME]` whose
/// runtime_path is the wrapper. Also: no precreate hook where CRI-O reads hooks.
pub fn crio(opts: &Options, r: &mut Report) {
    let dir = opts.host("/etc/crio/crio.conf.d");
    let mut files = vec![opts.host("/etc/crio/crio.conf")];
    files.extend(drop_ins(&dir, ""));
    if !opts.has_binary("crio") && !files.iter().any(|f| f.exists()) {
        return r.push("engine.crio", Verdict::Skip, "CRI-O is not installed");
    }
    let config = match merged(&files) {
        Ok(c) => c,
        Err((f, e)) => {
            let fix = format!("repair {}", f.display());
            let summary = format!("{e} (CRI-O refuses to start)");
            return r.problem("engine.crio", Verdict::Fail, summary, fix);
        }
    };
    let crio_runtime = config.get("crio").and_then(|c| c.get("runtime"));
    let hooks: Vec<String> = crio_runtime
        .and_then(|rt| rt.get("hooks_dir"))
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_else(|| SHARED_HOOKS.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = hooks.iter().find_map(|d| precreate_hook(&opts.host(d))) {
        let summary = format!(
            "{} registers the precreate stage where CRI-O reads hooks: CRI-O rejects it",
            bad.display()
        );
        return r.problem(
            "engine.crio",
            Verdict::Fail,
            summary,
            format!("rm {} (podman gets it from {PACKAGE_HOOKS})", bad.display()),
        );
    }
    let names = crio_runtimes(crio_runtime, opts).join(", ");
    if names.is_empty() {
        let summary = format!(
            "no [crio.runtime.runtimes.*] with runtime_path = {} in {} or {}",
            opts.wrapper.display(),
            files[0].display(),
            dir.display()
        );
        r.problem("engine.crio", Verdict::Fail, summary, CRIO_FIX);
    } else {
        let summary = format!(
            "runtime {names} runs {} (RuntimeClass handler: {names})",
            opts.wrapper.display()
        );
        r.push("engine.crio", Verdict::Ok, summary);
    }
}

/// CRI-O's configuration: each file's tables merged over the previous ones.
fn merged(files: &[PathBuf]) -> Result<Table, (&PathBuf, String)> {
    let mut config = Table::new();
    for f in files {
        let parsed = read_optional(f).and_then(|t| t.map(|t| parse_toml(f, &t)).transpose());
        if let Some(t) = parsed.map_err(|e| (f, e))? {
            merge(&mut config, &t, true);
        }
    }
    Ok(config)
}

/// The `[crio.runtime.runtimes.*]` whose runtime_path is the wrapper.
fn crio_runtimes(crio_runtime: Option<&toml::Value>, opts: &Options) -> Vec<String> {
    let runtimes = crio_runtime
        .and_then(|rt| rt.get("runtimes"))
        .and_then(toml::Value::as_table);
    runtimes
        .into_iter()
        .flatten()
        .filter(|(_, t)| {
            t.get("runtime_path")
                .and_then(toml::Value::as_str)
                .is_some_and(|p| opts.is_wrapper(p))
        })
        .map(|(n, _)| n.clone())
        .collect()
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
