//! The `oci-volume-hook` command: OCI hook, podman precreate hook and dry-run planner.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::config::Config;
use crate::configure;
use crate::doctor;
use crate::install_node;
use crate::logging::{self, Sink};
use crate::precreate;
use crate::prepare::{Caller, Preparer};
use crate::sources;
use crate::spec::{self, View};
use crate::staging;

pub use crate::names::HOOK as BIN;

/// Prepares bind-mount sources inside tenant chroots: creates them with the type the image
/// needs and gives them to the host ids the container user maps to, never acting outside
/// the chroot.
/// What `oci-volume-hook --help` adds below the options, and its manual's extra sections.
const AFTER_HELP: &str = "\
Every mount is planned first: if one cannot be fixed, nothing is changed and the container is
refused with one line on stderr starting with `oci-volume-hook:`, naming the mount and the
reason; the same line is logged (journald, syslog, else /var/log/oci-volume-hook.log).

Annotations can only narrow: io.oci-volume-hook.enabled=false turns creation, repair and
chown off for one container (its sources are still resolved in their chroot and pinned, or
refused); io.oci-volume-hook.ownership=none leaves owners alone. io.oci-volume-hook.owner and
other ownership values are read only where allowed_annotations lists them. A key or value
not allowed, unknown keys and invalid values refuse the container.

Files: /etc/oci-volume-hook/config.toml (see oci-volume-hook.toml(5)),
/usr/share/oci-volume-hook/hooks.d/, /etc/containers/containers.conf.d/50-oci-volume-hook.conf,
/run/oci-volume-hook/ (staging), /var/log/oci-volume-hook.log.

See also: oci-volume-runtime(1), oci-volume-hook.toml(5), podman(1), runc(8).";

#[derive(Parser, Debug)]
#[command(name = BIN, version, about, long_about = None, disable_help_subcommand = true, after_long_help = AFTER_HELP)]
struct Cli {
    /// Configuration file [default: $OCI_VOLUME_HOOK_CONFIG, else /etc/oci-volume-hook/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// OCI hook (the default): the OCI state on stdin, then <bundle>/config.json.
    /// Fixes ownership at prestart/createRuntime; refuses sources the host would resolve
    /// differently from the chroot, as a hook cannot rewrite the config.
    Hook,
    /// podman's precreate stage: config.json on stdin, the prepared config.json on stdout.
    Precreate,
    /// poststop stage: takes away the container's staging mounts (OCI state on stdin).
    Cleanup,
    /// Started by precreate, detached: takes its staging away once runc is done with it.
    #[command(hide = true)]
    ReapPrecreate {
        #[arg(long)]
        staging_dir: PathBuf,
        #[arg(long)]
        key: String,
        /// PID:STARTTIME of the podman process that ran the hook
        #[arg(long)]
        parent: String,
        #[arg(long)]
        pidfile: Option<PathBuf>,
    },
    /// Registers the runtime wrapper with an engine.
    Configure {
        #[command(subcommand)]
        engine: configure::Engine,
    },
    /// Kubernetes node installer (a DaemonSet's entry point): installs the binaries and the
    /// configuration on the host, registers the runtime handler, waits, and on SIGTERM
    /// takes the registration away.
    InstallNode(install_node::Args),
    /// Dry run: what would be done for each mount of a bundle, and why. Touches nothing.
    /// Exits 1 when a mount would be refused.
    Plan {
        /// The bundle directory (holding config.json)
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
        /// Machine-readable output (documented in README)
        #[arg(long)]
        json: bool,
    },
    /// Checks, read-only, whether this node is set up right: configuration, chroot patterns,
    /// runtime, each engine's registration, log destination, kernel, staging directory. One
    /// line per check with the command that fixes a problem; exits 1 when a check fails.
    Doctor {
        /// Machine-readable output (documented in README)
        #[arg(long)]
        json: bool,
        /// Read the node's well-known files (engine configurations, sockets) under DIR
        #[arg(long, value_name = "DIR", default_value = "/")]
        host_root: PathBuf,
        /// The wrapper engines should run
        #[arg(long, value_name = "PATH", default_value = crate::doctor::WRAPPER)]
        wrapper: PathBuf,
    },
}

/// The command line's definition (for the manuals).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ReapPrecreate {
        staging_dir,
        key,
        parent,
        pidfile,
    }) = &cli.command
    {
        let (pid, start) = parent.split_once(':').unwrap_or((parent, "0"));
        let parent = (pid.parse().unwrap_or(0), start.parse().unwrap_or(0));
        return match precreate::reap(staging_dir, key, pidfile.as_deref(), parent) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    // These need no configuration file: they edit the engines' (and install-node writes ours).
    match &cli.command {
        Some(Command::Configure { engine }) => return configure::run(engine),
        Some(Command::InstallNode(args)) => return install_node::main(args),
        _ => {}
    }
    if let Some(Command::Doctor {
        json,
        host_root,
        wrapper,
    }) = &cli.command
    {
        // Reports a broken configuration as one of its checks: loads it itself.
        let opts = doctor::Options {
            config: cli.config.clone(),
            host_root: host_root.clone(),
            wrapper: wrapper.clone(),
        };
        return match doctor::main(&opts, *json, &mut io::stdout().lock()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                logging::report_failure(Sink::Stderr, BIN, &e.into());
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            // No configuration, no log settings: stderr is all there is.
            logging::report_failure(Sink::Stderr, BIN, &e);
            return ExitCode::FAILURE;
        }
    };
    let sink = logging::init(&config.log, BIN, None);
    let result = match cli.command.unwrap_or(Command::Hook) {
        Command::Hook => run_hook(&config, io::stdin().lock()),
        Command::Cleanup => run_cleanup(&config, io::stdin().lock()),
        Command::Precreate => precreate::run(&config, io::stdin().lock(), &mut io::stdout().lock()),
        Command::Configure { .. }
        | Command::InstallNode(_)
        | Command::ReapPrecreate { .. }
        | Command::Doctor { .. } => unreachable!("handled above"),
        Command::Plan { bundle, json } => {
            run_plan(&config, &bundle, json, &mut io::stdout().lock())
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            logging::report_failure(sink, BIN, &e);
            ExitCode::FAILURE
        }
    }
}

/// The OCI hook: state on stdin names the bundle.
pub fn run_hook(config: &Config, stdin: impl io::Read) -> Result<bool> {
    let state = spec::read_state(stdin, "OCI state on stdin")?;
    let id = state
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string();
    let _span = tracing::info_span!("container", id = %id).entered();
    let bundle = state
        .get("bundle")
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| anyhow!("OCI state on stdin has no bundle"))?;
    let bundle = Path::new(bundle);
    let doc = spec::read_bundle_config(bundle)?;
    let view = View::of(&doc, bundle)?;
    let prepared = Preparer::new(config, &view, Caller::Hook).prepare()?;
    let plans: Vec<_> = prepared.into_iter().map(|p| p.plan).collect();
    sources::log_idmap(&plans);
    sources::log_done(&plans);
    Ok(true)
}

/// The poststop stage: takes away the container's staging mounts (by id for the wrapper, by
/// annotations for precreate).
pub fn run_cleanup(config: &Config, stdin: impl io::Read) -> Result<bool> {
    let state = spec::read_state(stdin, "OCI state on stdin")?;
    let id = state.get("id").and_then(Value::as_str).unwrap_or_default();
    let _span = tracing::info_span!("container", id = %id).entered();
    precreate::sweep_stale(config);
    if let Ok(key) = staging::Key::new(id) {
        staging::cleanup(&config.staging_dir, &key).with_context(|| format!("staging {id}"))?;
        staging::cleanup_prefix(&config.staging_dir, &precreate::prefix(id))?;
        if let Some(short) = id.get(..12) {
            staging::cleanup_prefix(&config.staging_dir, &precreate::prefix(short))?;
        }
    }
    Ok(true)
}

/// The dry run. Returns false when some mount would be refused.
pub fn run_plan(config: &Config, bundle: &Path, json: bool, out: &mut impl Write) -> Result<bool> {
    let doc = spec::read_bundle_config(bundle)?;
    let view = View::of(&doc, bundle)?;
    // As the wrapper would run it: `ownership = "idmap"` asks the configured runtime.
    let runtime =
        crate::runtime::find_runtime(&config.runtime, std::env::var_os("PATH").as_deref());
    let plans = Preparer::new(config, &view, Caller::Rewrite)
        .with_runtime(runtime.ok())
        .plan()?;
    let ok = plans.iter().all(|p| p.action.refusal().is_none());
    if json {
        let settings = config.settings(&view.annotations)?;
        let out_doc = serde_json::json!({
            "version": 1, "bundle": bundle, "ok": ok, "settings": settings, "mounts": plans
        });
        serde_json::to_writer_pretty(&mut *out, &out_doc)?;
        writeln!(out)?;
    } else {
        // Tenant-chosen names are in these lines: no escape sequence or line break of theirs
        // reaches the operator's terminal raw.
        for p in &plans {
            writeln!(out, "{}", logging::one_line(&p.describe()))?;
        }
    }
    Ok(ok)
}
