//! The `configure` subcommands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::{
    Change, DEFAULT_WRAPPER, Outcome, RUNTIME_NAME, changed, containerd, crio, describe, k3s,
};
use crate::config;
use crate::logging::{self, Sink};
use crate::names::HOOK as BIN;

#[derive(Subcommand, Debug)]
pub enum Engine {
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
        #[arg(long, value_name = "FILE", default_value = super::DEFAULT_DAEMON_JSON)]
        path: PathBuf,
        /// The wrapper to register
        #[arg(long, value_name = "PATH", default_value = DEFAULT_WRAPPER)]
        wrapper: PathBuf,
    },
    /// Adds a CRI runtime handler (the RuntimeClass `handler`) running the wrapper to
    /// containerd: config version 2 edited in place, version 3 through a drop-in in
    /// `imports`; every other key and comment kept, a backup saved. Restart containerd.
    Containerd {
        #[command(flatten)]
        common: CriArgs,
        /// containerd's main configuration file [default: /etc/containerd/config.toml; with
        /// --k3s, the one k3s writes: /var/lib/rancher/k3s/agent/etc/containerd/config.toml]
        #[arg(long, value_name = "FILE")]
        path: Option<PathBuf>,
        /// k3s or RKE2, which rewrite config.toml at every start: the handler goes into the
        /// template next to it (config.toml.tmpl, or config-v3.toml.tmpl for containerd 2.x),
        /// extending k3s's base template; restart k3s (or rke2) afterwards
        #[arg(long)]
        k3s: bool,
    },
    /// Adds a CRI-O runtime handler running the wrapper, in a drop-in. Restart CRI-O.
    Crio {
        #[command(flatten)]
        common: CriArgs,
        /// The drop-in to write
        #[arg(long, value_name = "FILE", default_value = crio::DEFAULT_PATH)]
        path: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct CriArgs {
    /// The wrapper to register (a path on the host)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_WRAPPER)]
    pub wrapper: PathBuf,
    /// The handler's name
    #[arg(long, value_name = "NAME", default_value = RUNTIME_NAME)]
    pub name: String,
    /// Take the handler away instead
    #[arg(long)]
    pub remove: bool,
    /// This tool's configuration: where the runc the engine's runc handler named is recorded
    /// as `runtime`, for the wrapper to run [default: $OCI_VOLUME_HOOK_CONFIG, else
    /// /etc/oci-volume-hook/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl CriArgs {
    fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| {
            std::env::var_os(config::ENV_PATH)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(config::DEFAULT_PATH), PathBuf::from)
        })
    }
}

pub fn run(engine: &Engine) -> ExitCode {
    let result = match engine {
        Engine::Docker {
            default,
            remove,
            path,
            wrapper,
        } => super::docker(path, wrapper, *default, *remove).map(|o| match o {
            Outcome::Unchanged => vec![],
            Outcome::Written { backup } => vec![Change::Written {
                path: path.clone(),
                backup,
            }],
        }),
        Engine::Containerd { common, k3s, .. } => {
            let config = common.config_path();
            let req = request(common, main_path(engine), &config);
            if *k3s {
                k3s::configure(&req)
            } else {
                containerd::configure(&req)
            }
        }
        Engine::Crio { common, path } => {
            crio::configure(&request(common, path, &common.config_path()))
        }
    };
    let (daemon, unit) = match engine {
        Engine::Docker { .. } => ("dockerd", "docker"),
        Engine::Containerd { k3s: true, .. } => {
            ("k3s", "k3s (or k3s-agent, rke2-server, rke2-agent)")
        }
        Engine::Containerd { .. } => ("containerd", "containerd"),
        Engine::Crio { .. } => ("CRI-O", "crio"),
    };
    match result {
        Ok(changes) if !changed(&changes) => {
            for line in describe(&changes) {
                println!("{line}");
            }
            println!(
                "{}: already as asked; nothing changed",
                main_path(engine).display()
            );
            ExitCode::SUCCESS
        }
        Ok(changes) => {
            for line in describe(&changes) {
                println!("{line}");
            }
            println!("restart {daemon} for it to take effect: systemctl restart {unit}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            logging::report_failure(Sink::Stderr, BIN, &e);
            ExitCode::FAILURE
        }
    }
}

fn request<'a>(common: &'a CriArgs, path: &'a Path, config: &'a Path) -> containerd::Request<'a> {
    containerd::Request {
        root: Path::new("/"),
        path,
        wrapper: &common.wrapper,
        name: &common.name,
        remove: common.remove,
        config,
    }
}

fn main_path(engine: &Engine) -> &Path {
    match engine {
        Engine::Docker { path, .. } | Engine::Crio { path, .. } => path,
        Engine::Containerd { path: Some(p), .. } => p,
        Engine::Containerd { k3s: true, .. } => Path::new(k3s::DEFAULT_PATH),
        Engine::Containerd { .. } => Path::new(containerd::DEFAULT_PATH),
    }
}
