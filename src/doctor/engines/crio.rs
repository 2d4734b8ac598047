//! CRI-O: a runtime table whose runtime_path is the wrapper, and no precreate hook where
//! CRI-O reads hooks.

use std::path::PathBuf;

use toml::Table;

use super::{
    PACKAGE_HOOKS, SHARED_HOOKS, drop_ins, merge, parse_toml, precreate_hook, read_optional,
};
use crate::doctor::{Options, Report, Verdict};

const CRIO_FIX: &str = "oci-volume-hook configure crio && systemctl restart crio";

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
