//! `oci-volume-runtime`: a runc-compatible wrapper. For `create`, `run` and `restore` it
//! prepares the bundle's bind-mount sources, then execs the real runtime with the argv
//! unchanged (in the wrapper's own mount namespace when sources are staged); every other subcommand execs the runtime at once (`--version` runs it as a
//! child, to add the wrapper's own line after the runtime's).

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result};

use crate::config::{Config, ENV_PATH, Pin};
use crate::logging::{self, RuntimeLog, Sink};
use crate::runc_args::{self, Invocation};
use crate::runtime::{self, find_runtime};
use crate::sources;
use crate::spec;
use crate::staging;

pub use crate::names::RUNTIME as BIN;

/// The wrapper's main: never returns on success (the runtime replaces it, or it exits as the
/// runtime did); returns the exit status otherwise.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let inv = runc_args::parse(&args);
    let runtime_log = inv.log.as_ref().map(|path| RuntimeLog {
        path: path.clone(),
        json: inv.log_format.as_deref() == Some("json"),
    });
    if inv.prepares() || inv.refusal().is_some() {
        create(&inv, &args, runtime_log.as_ref())
    } else {
        pass_through(&args, runtime_log.as_ref())
    }
}

/// Every subcommand but create, run and restore: the runtime must be reached whatever state the
/// configuration is in, or containers could not be stopped and deleted. A broken
/// configuration costs one warning in the log, never the call.
fn pass_through(args: &[OsString], runtime_log: Option<&RuntimeLog>) -> i32 {
    let (config, problem) = Config::load_lenient();
    if let Some(problem) = problem {
        logging::init(&config.log, BIN, None);
        tracing::warn!(
            "{}; runtime {:?} used for this call",
            logging::one_line(&format!("{problem:#}")),
            config.runtime
        );
    }
    let runtime = match find_runtime(&config.runtime, std::env::var_os("PATH").as_deref()) {
        Ok(runtime) => runtime,
        Err(e) => return fail(runtime_log, Sink::None, &e.context(config_path_hint())),
    };
    if matches!(args, [a] if a == "--version" || a == "-v") {
        return version(&runtime, args, runtime_log);
    }
    exec(&runtime, args, runtime_log, Sink::None)
}

/// The runtime's version lines first and untouched (CRI-O, runc's tests and others parse
/// them), then the wrapper's own line; the runtime's exit status.
fn version(runtime: &Path, args: &[OsString], runtime_log: Option<&RuntimeLog>) -> i32 {
    let status = match std::process::Command::new(runtime).args(args).status() {
        Ok(status) => status,
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("running {}", runtime.display()));
            return fail(runtime_log, Sink::None, &e);
        }
    };
    if status.success() {
        println!("{BIN} version {}", env!("CARGO_PKG_VERSION"));
    }
    status.code().unwrap_or(1)
}

/// create, run and restore: the configuration must be valid (fail closed), then the sources are
/// prepared before the runtime sees the bundle.
fn create(inv: &Invocation, args: &[OsString], runtime_log: Option<&RuntimeLog>) -> i32 {
    let config = match Config::load(None) {
        Ok(c) => c,
        Err(e) => {
            let sink = logging::init(&crate::config::Log::default(), BIN, runtime_log);
            return fail(runtime_log, sink, &e);
        }
    };
    let sink = logging::init(&config.log, BIN, runtime_log);
    let runtime = match find_runtime(&config.runtime, std::env::var_os("PATH").as_deref()) {
        Ok(r) => r,
        Err(e) => return fail(runtime_log, sink, &e.context(config_path_hint())),
    };
    if let Some(why) = inv.refusal() {
        let err = anyhow::anyhow!("{why}; refused: runc's bundle is not certain");
        return fail(runtime_log, sink, &err);
    }
    let id = inv.id().unwrap_or("-").to_string();
    let _span = tracing::info_span!("container", id = %id).entered();
    match prepare_bundle(&config, inv, &runtime) {
        Err(e) => fail(runtime_log, sink, &e),
        // The staging mounts and the edited config.json live in this process's own mount
        // namespace, which the runtime keeps: they go when it (and what it started there)
        // is gone. Its pid, signals, descriptors and exit status are the wrapper's.
        Ok(()) => exec(&runtime, args, runtime_log, sink),
    }
}

fn exec(runtime: &Path, args: &[OsString], runtime_log: Option<&RuntimeLog>, sink: Sink) -> i32 {
    fail(runtime_log, sink, &runtime::exec(runtime, args))
}

fn config_path_hint() -> String {
    format!(
        "config {}",
        std::env::var(ENV_PATH).unwrap_or_else(|_| crate::config::DEFAULT_PATH.into())
    )
}

/// Prepares the bundle's sources. When config.json must change (pinned sources, sources
/// rewritten to their path inside the chroot), moves this process into a mount namespace of
/// its own holding the staging mounts and the edited document shown over the bundle's
/// config.json. The bundle's file is never written.
fn prepare_bundle(config: &Config, inv: &Invocation, runtime: &Path) -> Result<()> {
    let bundle = match inv.bundle() {
        Some(b) => b.to_path_buf(),
        None => std::env::current_dir().context("working directory")?,
    };
    let (bytes, read) = spec::read_bundle_config_file(&bundle)?;
    let mut doc = spec::parse_config(&bytes, &bundle.join("config.json"))?;
    let base = &config.staging_dir;
    // Descriptors can only be bind-mounted in the namespace they were opened in: move first.
    let view = spec::View::of(&doc, &bundle)?;
    let moved = config.pin_sources != Pin::Never && sources::any_in_chroots(config, &view);
    if moved {
        staging::private_namespace(base)?;
    }
    let prepared = sources::prepare(config, &view, &mut doc, Some(runtime))?;
    if prepared.pins.is_empty() && !prepared.edited {
        return Ok(());
    }
    if !moved {
        staging::private_namespace(base)?;
    }
    let pins = prepared.staging_pins();
    let name = |index| prepared.name_of(index);
    let staged = staging::stage_private(base, &pins, &name, bytes.len())?;
    sources::point_at(&mut doc, &staged, base)?;
    let edited = serde_json::to_vec(&doc)?;
    staging::show_config(base, &bundle, &edited, read)
}

/// Reports a failure: one line on stderr (the one line an engine shows), the log, and
/// runc's `--log` file where containerd reads the reason.
fn fail(runtime_log: Option<&RuntimeLog>, sink: Sink, err: &anyhow::Error) -> i32 {
    logging::report_failure(sink, BIN, err);
    if let Some(log) = runtime_log.filter(|_| sink != Sink::RuntimeLog) {
        let msg = format!("{BIN}: {}", logging::one_line(&format!("{err:#}")));
        logging::append_runtime_error(log, &msg);
    }
    1
}
