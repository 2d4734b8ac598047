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
use crate::logging::{self, Sink};
use crate::prepare::{Action, Mode, MountPlan, Preparer};
use crate::spec::{self, View};
use crate::staging;

pub const BIN: &str = "oci-volume-hook";

/// Prepares bind-mount sources inside tenant chroots: creates them with the type the image
/// needs and gives them to the host ids the container user maps to, never acting outside
/// the chroot.
#[derive(Parser, Debug)]
#[command(name = BIN, version, about, long_about = None)]
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
    /// Registers the runtime wrapper with an engine.
    Configure {
        #[command(subcommand)]
        engine: Engine,
    },
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

#[derive(Subcommand, Debug)]
enum Engine {
    /// Adds the `oci-volume` runtime to dockerd's daemon.json, keeping every other key and
    /// saving a backup; restart dockerd afterwards.
    Docker {
        /// Also make it dockerd's default runtime
        #[arg(long)]
        default: bool,
        /// Take the runtime (and the default, if it is ours) away instead
        #[arg(long)]
        remove: bool,
        /// daemon.json to edit
        #[arg(long, value_name = "FILE", default_value = configure::DEFAULT_DAEMON_JSON)]
        path: PathBuf,
        /// The wrapper to register
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/usr/bin/oci-volume-runtime"
        )]
        wrapper: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Configure {
        engine:
            Engine::Docker {
                default,
                remove,
                path,
                wrapper,
            },
    }) = &cli.command
    {
        // Needs no configuration file: it edits dockerd's.
        return match configure::docker(path, wrapper, *default, *remove) {
            Ok(configure::Outcome::Unchanged) => {
                println!("{}: already as asked; nothing changed", path.display());
                ExitCode::SUCCESS
            }
            Ok(configure::Outcome::Written { backup }) => {
                match backup {
                    Some(b) => println!(
                        "{} updated (previous version in {})",
                        path.display(),
                        b.display()
                    ),
                    None => println!("{} written", path.display()),
                }
                println!("restart dockerd for it to take effect: systemctl restart docker");
                ExitCode::SUCCESS
            }
            Err(e) => {
                logging::report_failure(Sink::Stderr, BIN, &e);
                ExitCode::FAILURE
            }
        };
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
    let sink = logging::init(&config.log, BIN);
    let result = match cli.command.unwrap_or(Command::Hook) {
        Command::Hook => run_hook(&config, io::stdin().lock()),
        Command::Cleanup => run_cleanup(&config, io::stdin().lock()),
        Command::Precreate => run_precreate(&config, io::stdin().lock(), &mut io::stdout().lock()),
        Command::Configure { .. } | Command::Doctor { .. } => unreachable!("handled above"),
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
    let state = spec::read_json(stdin, "OCI state on stdin")?;
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
    let plans = Preparer::new(config, &view, Mode::Hook).prepare()?;
    log_done(&plans);
    Ok(true)
}

/// podman's precreate stage: the config on stdin, the prepared config on stdout. Nothing is
/// written to stdout unless preparation succeeded.
pub fn run_precreate(
    config: &Config,
    stdin: impl io::Read,
    stdout: &mut impl Write,
) -> Result<bool> {
    let mut doc = spec::read_json(stdin, "config.json on stdin")?;
    let id = container_id(&doc);
    let _span = tracing::info_span!("container", id = %id).entered();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let key = format!(
        "{}{}",
        precreate_prefix(&precreate_id(&doc).unwrap_or_else(|| "unknown".into())),
        std::process::id()
    );
    rewrite(config, &mut doc, &cwd, &key)?;
    serde_json::to_writer(&mut *stdout, &doc).context("writing config.json to stdout")?;
    stdout.flush().context("writing config.json to stdout")?;
    Ok(true)
}

/// Prepares the sources of `doc` and points each mount at what was prepared: its staging
/// path under `stage_key` when sources are pinned, else its path resolved in the chroot.
pub fn rewrite(
    config: &Config,
    doc: &mut Value,
    bundle: &Path,
    stage_key: &str,
) -> Result<Vec<MountPlan>> {
    let view = View::of(doc, bundle)?;
    let mut preparer = Preparer::new(config, &view, Mode::Rewrite);
    let plans = preparer.prepare()?;
    let checked = preparer.take_checked();
    // Pinned: what a tenant could swap before the runtime mounts it.
    let mut pins = Vec::new();
    for (index, node) in &checked {
        let plan = plans
            .iter()
            .find(|p| p.index == *index)
            .expect("a plan per checked source");
        if config.pin_sources && preparer.could_be_swapped(plan) {
            pins.push((*index, &node.fd, node.kind));
        }
    }
    let pinned: Vec<usize> = pins.iter().map(|(i, _, _)| *i).collect();
    if !pins.is_empty() {
        let staged = staging::stage(&config.staging_dir, stage_key, &pins)
            .with_context(|| format!("staging {}", config.staging_dir.join(stage_key).display()))?;
        for (index, path) in staged {
            spec::set_source(doc, index, &path)?;
        }
        tracing::info!(
            "{} source(s) pinned under {}",
            pins.len(),
            config.staging_dir.join(stage_key).display()
        );
    }
    // The others go through no directory a tenant can change: their in-chroot path holds.
    for p in plans.iter().filter(|p| !pinned.contains(&p.index)) {
        if let Some(resolved) = &p.resolved_source {
            spec::set_source(doc, p.index, resolved).with_context(|| p.name())?;
            tracing::info!("{}: source rewritten to {}", p.name(), resolved.display());
        }
    }
    log_done(&plans);
    Ok(plans)
}

/// precreate is not told the container id, yet the poststop stage, which takes staging away,
/// only knows the id. podman's own mounts (`/etc/hostname`, `/etc/hosts`...) come from
/// `.../<id>/userdata/...`; failing that, the hostname, which podman makes the short id.
pub fn precreate_id(doc: &Value) -> Option<String> {
    let sources = doc
        .get("mounts")?
        .as_array()?
        .iter()
        .filter_map(|m| m.get("source")?.as_str());
    for src in sources {
        let parts: Vec<&str> = src.split('/').collect();
        for w in parts.windows(2) {
            if w[1] == "userdata" && w[0].len() == 64 && w[0].bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Some(w[0].to_string());
            }
        }
    }
    doc.get("hostname")
        .and_then(Value::as_str)
        .filter(|h| staging::check_key(h).is_ok())
        .map(String::from)
}

/// The prefix of the staging keys of a precreate for container `id`; a pid follows, so
/// containers that share a hostname stay apart.
pub fn precreate_prefix(id: &str) -> String {
    format!("precreate-{id}-")
}

/// The poststop stage: takes away the container's staging mounts (by id for the wrapper, by
/// annotations for precreate).
pub fn run_cleanup(config: &Config, stdin: impl io::Read) -> Result<bool> {
    let state = spec::read_json(stdin, "OCI state on stdin")?;
    let id = state.get("id").and_then(Value::as_str).unwrap_or_default();
    let _span = tracing::info_span!("container", id = %id).entered();
    if staging::check_key(id).is_ok() {
        staging::cleanup(&config.staging_dir, id).with_context(|| format!("staging {id}"))?;
        staging::cleanup_prefix(&config.staging_dir, &precreate_prefix(id))?;
        if let Some(short) = id.get(..12) {
            staging::cleanup_prefix(&config.staging_dir, &precreate_prefix(short))?;
        }
    }
    Ok(true)
}

fn log_done(plans: &[MountPlan]) {
    let changed = plans.iter().filter(|p| p.action != Action::Nothing).count();
    let in_chroots = plans.iter().filter(|p| p.chroot.is_some()).count();
    tracing::info!("{in_chroots} mount(s) in chroots, {changed} changed");
}

/// A name for log lines when only config.json is at hand.
pub fn container_id(doc: &Value) -> String {
    const KEYS: [&str; 3] = [
        "io.kubernetes.cri-o.ContainerID",
        "io.container.id",
        "io.podman.annotations.name",
    ];
    KEYS.iter()
        .find_map(|k| {
            doc.pointer(&format!("/annotations/{}", k.replace('/', "~1")))
                .and_then(Value::as_str)
        })
        .or_else(|| doc.get("hostname").and_then(Value::as_str))
        .unwrap_or("-")
        .to_string()
}

/// The dry run. Returns false when some mount would be refused.
pub fn run_plan(config: &Config, bundle: &Path, json: bool, out: &mut impl Write) -> Result<bool> {
    let doc = spec::read_bundle_config(bundle)?;
    let view = View::of(&doc, bundle)?;
    let plans = Preparer::new(config, &view, Mode::Rewrite).plan()?;
    let ok = plans.iter().all(|p| p.action != Action::Refuse);
    if json {
        let settings = config.settings(&view.annotations)?;
        let out_doc = serde_json::json!({
            "version": 1, "bundle": bundle, "ok": ok, "settings": settings, "mounts": plans
        });
        serde_json::to_writer_pretty(&mut *out, &out_doc)?;
        writeln!(out)?;
    } else {
        for p in &plans {
            writeln!(out, "{}", describe(p))?;
        }
    }
    Ok(ok)
}

fn describe(p: &MountPlan) -> String {
    let mut line = format!("{:<12} {}", name_of(&p.action), p.destination.display());
    if let Some(s) = &p.source {
        line += &format!(" <- {}", s.display());
    }
    if let Some(r) = &p.resolved_source {
        line += &format!(" (resolved: {})", r.display());
    }
    let mut facts = Vec::new();
    if let Some(c) = &p.chroot {
        facts.push(format!("chroot {}", c.display()));
    }
    if let Some(w) = &p.wanted {
        facts.push(format!("image wants {}", name_of(w)));
    }
    if let Some(o) = p.owner {
        facts.push(format!("owner {}:{}", o.uid, o.gid));
    }
    if let Some(o) = &p.ownership {
        facts.push(format!("ownership {}", name_of(o)));
    }
    if !facts.is_empty() {
        line += &format!(" [{}]", facts.join(", "));
    }
    line + ": " + &p.reason
}

/// The name a value has in the JSON output (`create-file`, `recursive-on-mismatch`...).
fn name_of(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
