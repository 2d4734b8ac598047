//! `oci-volume-hook doctor`: asks the node, read-only, whether it is set up right — the
//! configuration, the chroot patterns, the runtime, each engine's registration, where log
//! lines go, the kernel, idmapped mounts, the staging directory, `host_sources` on a CRI node —
//! one line per check, with the command that fixes each problem. Nothing is ever changed.
//!
//! Every well-known node path (engine configurations and sockets, log sockets) is read under
//! `--host-root` (default `/`), so that tests can give each engine a fixture tree; paths the
//! operator's own configuration names (chroots, staging directory, runtime, log file) and the
//! wrapper are read as they are.

mod engines;
mod http;
mod idmap;
mod log;
mod node;
mod staging;

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where the package installs the wrapper that engines must be pointed at.
pub const WRAPPER: &str = "/usr/bin/oci-volume-runtime";

/// Where engines and binaries are looked for.
const BIN_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The `--json` document's version: the fields below stay as they are within it.
pub const JSON_VERSION: u32 = 1;

/// What the doctor is asked to look at.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--config`, else the environment or the default path.
    pub config: Option<PathBuf>,
    /// Prefix for every well-known node path.
    pub host_root: PathBuf,
    /// The wrapper engines should run.
    pub wrapper: PathBuf,
}

impl Options {
    /// A node path under the host root.
    fn host(&self, path: impl AsRef<Path>) -> PathBuf {
        let p = path.as_ref();
        self.host_root.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Whether an engine's configured runtime is the wrapper: the same path, or the same file
    /// (a bare name as the engine would find it in the usual directories).
    fn is_wrapper(&self, configured: &str) -> bool {
        let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let same = |p: PathBuf| id(&p).is_some_and(|a| Some(a) == id(&self.wrapper));
        if Path::new(configured) == self.wrapper {
            return true;
        }
        if configured.starts_with('/') {
            return same(self.host(configured));
        }
        !configured.contains('/') && BIN_DIRS.iter().any(|d| same(self.host(d).join(configured)))
    }

    /// Whether a binary is installed in one of the usual directories.
    fn has_binary(&self, name: &str) -> bool {
        BIN_DIRS.iter().any(|d| self.host(d).join(name).is_file())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Worth a look, but nothing that makes a container fail or the tool unsafe.
    Warn,
    Fail,
    /// Does not apply here (e.g. the engine is not installed).
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name, e.g. `engine.docker`, `chroot:/containerdata/*`.
    pub id: String,
    pub verdict: Verdict,
    pub summary: String,
    /// The command (or edit) that fixes a problem.
    pub fix: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, id: impl Into<String>, verdict: Verdict, summary: impl Into<String>) {
        self.checks.push(Check {
            id: id.into(),
            verdict,
            summary: summary.into(),
            fix: None,
        });
    }

    fn problem(
        &mut self,
        id: impl Into<String>,
        verdict: Verdict,
        summary: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.checks.push(Check {
            id: id.into(),
            verdict,
            summary: summary.into(),
            fix: Some(fix.into()),
        });
    }

    /// True when no check that applies failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.verdict != Verdict::Fail)
    }

    pub fn to_json(&self, opts: &Options) -> serde_json::Value {
        serde_json::json!({
            "version": JSON_VERSION,
            "ok": self.ok(),
            "host_root": opts.host_root,
            "wrapper": opts.wrapper,
            "checks": self.checks,
        })
    }

    /// One line per check: verdict, check, what was found, and the fix for a problem.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        for c in &self.checks {
            let verdict = match c.verdict {
                Verdict::Ok => "ok",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            let summary = crate::logging::one_line(&c.summary);
            match &c.fix {
                Some(fix) => writeln!(out, "{verdict:<4} {:<18} {summary}; fix: {fix}", c.id)?,
                None => writeln!(out, "{verdict:<4} {:<18} {summary}", c.id)?,
            }
        }
        Ok(())
    }
}

/// Runs every check.
pub fn run(opts: &Options) -> Report {
    let mut r = Report::default();
    let config = node::config(opts, &mut r);
    node::chroots(&config, &mut r);
    node::runtime(&config, opts, &mut r);
    node::wrapper(opts, &mut r);
    engines::docker(opts, &mut r);
    engines::podman(opts, &mut r);
    if engines::containerd(opts, &mut r) {
        node::host_sources(&config, opts, &mut r);
    }
    engines::crio(opts, &mut r);
    log::log(&config, opts, &mut r);
    node::kernel(&mut r);
    idmap::idmap(&config, &mut r);
    staging::staging(&config, opts, &mut r);
    r
}

/// The command: prints the report (text or `--json`) on stdout; true when it passed.
pub fn main(opts: &Options, json: bool, out: &mut impl Write) -> io::Result<bool> {
    let report = run(opts);
    if json {
        serde_json::to_writer_pretty(&mut *out, &report.to_json(opts))?;
        writeln!(out)?;
    } else {
        report.write_text(out)?;
    }
    Ok(report.ok())
}
