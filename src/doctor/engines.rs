//! Whether each engine installed on the node will call the tool: dockerd (daemon.json, and
//! the live daemon when it answers), podman (its effective `hooks_dir`), containerd (a runtime
//! handler in the effective configuration, imports included), CRI-O (a runtime table).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use toml::Table;

use super::{Options, Report, Verdict, http};

mod containerd;
mod crio;

pub use containerd::containerd;
pub use crio::crio;

const DOCKER_FIX: &str = "oci-volume-hook configure docker && systemctl restart docker";
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

/// Merges `from` over `into` (containerd's imports, CRI-O's drop-ins): tables deeply, or
/// (`deep` false, containerd 1.x) each plugin's section under `plugins` replaced whole.
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
