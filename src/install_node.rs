//! `oci-volume-hook install-node`: the Kubernetes node installer a DaemonSet runs, as
//! NVIDIA's toolkit, kata-deploy and sysbox do: the host's `/` is mounted at `--host-root`;
//! the binaries are copied there, the configuration written when the host has none, the
//! runtime handler registered with containerd or CRI-O and that runtime restarted through
//! the host's systemd. On SIGTERM (pod deleted) the registration is taken away again. The
//! binaries and the configuration stay: containers started with the handler still need the
//! wrapper for `kill` and `delete`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;
use nix::sys::signal::{SigSet, Signal};

use crate::config::{self, Config};
use crate::configure::{self, Change, RUNTIME_NAME, containerd, crio, k3s, under};
use crate::logging::{self, Sink};
use crate::names::HOOK as BIN;

/// First line of a configuration this installer wrote: it may replace it, never another.
pub const CONFIG_MARK: &str =
    "# Written by oci-volume-hook install-node from its ConfigMap; replaced when that changes.";
const BINARIES: [&str; 2] = ["oci-volume-hook", "oci-volume-runtime"];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the host's `/` is mounted in this container
    #[arg(long, value_name = "DIR", default_value = "/host")]
    pub host_root: PathBuf,
    /// The node's CRI runtime; `auto`: containerd when its socket or config is on the host,
    /// else CRI-O
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: Runtime,
    /// Host directory the binaries are copied to
    #[arg(long, value_name = "DIR", default_value = "/opt/oci-volume-hook/bin")]
    pub install_dir: PathBuf,
    /// The configuration (the ConfigMap's file) installed as the host's
    /// /etc/oci-volume-hook/config.toml unless the host has one of its own; default: the
    /// packaged configuration
    #[arg(long, value_name = "FILE")]
    pub config_source: Option<PathBuf>,
    /// containerd's configuration on the host [default: /etc/containerd/config.toml; with
    /// --k3s, the one k3s writes: /var/lib/rancher/k3s/agent/etc/containerd/config.toml]
    #[arg(long, value_name = "FILE")]
    pub containerd_config: Option<PathBuf>,
    /// k3s or RKE2 node, which rewrite containerd's config.toml at every start: the handler
    /// goes into its template (`configure containerd --k3s`), and k3s (or k3s-agent,
    /// rke2-server, rke2-agent: the one the host has) is what gets restarted
    #[arg(long, conflicts_with = "runtime")]
    pub k3s: bool,
    /// The CRI-O drop-in on the host
    #[arg(long, value_name = "FILE", default_value = crio::DEFAULT_PATH)]
    pub crio_dropin: PathBuf,
    /// The runtime handler's name (the RuntimeClass `handler`)
    #[arg(long, value_name = "NAME", default_value = RUNTIME_NAME)]
    pub name: String,
    /// How the runtime is restarted: `systemd` (the host's systemctl, run chrooted into the
    /// host root), `none`, or `auto` (systemd when the host runs it)
    #[arg(long, value_enum, default_value = "auto")]
    pub restart: Restart,
    /// Exit after installing instead of waiting for SIGTERM
    #[arg(long, conflicts_with = "uninstall")]
    pub once: bool,
    /// Only take the registration away
    #[arg(long)]
    pub uninstall: bool,
    /// Internal: chroot into the host root and exec this command there (how the host's
    /// systemctl is run, in a process of its own).
    #[arg(long, hide = true, num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
    pub exec_in_host: Vec<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Auto,
    Containerd,
    Crio,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    Auto,
    Systemd,
    None,
}

pub fn main(args: &Args) -> ExitCode {
    if !args.exec_in_host.is_empty() {
        return fail(exec_in_host(&args.host_root, &args.exec_in_host));
    }
    // Blocked from the start, so a SIGTERM that comes while installing is still seen, after.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        return fail(anyhow!("blocking SIGTERM: {e}"));
    }
    let runtime = match detect(args) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if !args.uninstall {
        if let Err(e) = install(args, runtime) {
            return fail(e);
        }
        if args.once {
            return ExitCode::SUCCESS;
        }
        println!("installed; waiting for SIGTERM to take the registration away");
        match signals.wait() {
            Ok(sig) => println!("{sig}: taking the registration away"),
            Err(e) => return fail(anyhow!("waiting for SIGTERM: {e}")),
        }
    }
    match register(args, runtime, true) {
        Ok(()) => {
            // Kept, never refused: a shim stops and deletes its containers through the binary
            // it was given, long after the handler is gone.
            println!(
                "binaries kept in {}: containers created through the wrapper are stopped and deleted through it",
                args.install_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    logging::report_failure(Sink::Stderr, BIN, &e);
    ExitCode::FAILURE
}

/// Binaries, configuration, registration, restart. The configuration is checked first: a
/// bad ConfigMap changes nothing on the host.
pub fn install(args: &Args, runtime: Runtime) -> Result<()> {
    let (config_text, source_name) = config_source(args)?;
    let dir = under(&args.host_root, &args.install_dir)?;
    let from = std::env::current_exe()
        .context("finding this binary")?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for name in BINARIES {
        if copy_binary(&from.join(name), &dir.join(name))? {
            println!("{} installed", args.install_dir.join(name).display());
        }
    }
    install_config(args, &config_text, &source_name)?;
    register(args, runtime, false)
}

/// Copies through a temporary file and a rename: the old binary may be running.
/// Returns whether anything changed.
fn copy_binary(src: &Path, dst: &Path) -> Result<bool> {
    let new = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    if std::fs::read(dst).is_ok_and(|old| old == new) {
        return Ok(false);
    }
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let tmp = dst.with_extension("oci-volume-hook.tmp");
    std::fs::write(&tmp, &new).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, dst).with_context(|| format!("replacing {}", dst.display()))?;
    Ok(true)
}

/// The configuration to install (the ConfigMap's file, else the packaged one), checked.
fn config_source(args: &Args) -> Result<(String, String)> {
    let (text, name) = match &args.config_source {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            include_str!("../packaging/config.toml").to_string(),
            "the packaged configuration".into(),
        ),
    };
    Config::parse(&text).with_context(|| format!("{name}; nothing installed"))?;
    Ok((text, name))
}

/// The host's configuration: written when missing, or replaced when this installer wrote it;
/// an operator's own file is kept.
fn install_config(args: &Args, text: &str, source_name: &str) -> Result<()> {
    let host_path = Path::new(config::DEFAULT_PATH);
    let file = under(&args.host_root, host_path)?;
    let mut wanted = format!("{CONFIG_MARK}\n{text}");
    let ours = match std::fs::read(&file) {
        Ok(old) => {
            let old = String::from_utf8_lossy(&old);
            wanted = configure::wrapper_runtime::keep_recorded(wanted, &old);
            if old == wanted {
                return Ok(());
            }
            old.starts_with(CONFIG_MARK)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    if ours {
        configure::replace_file(&file, &wanted, None)?;
        println!("{} written from {source_name}", host_path.display());
    } else {
        println!("{} kept: the host's own", host_path.display());
    }
    Ok(())
}

fn detect(args: &Args) -> Result<Runtime> {
    if args.k3s {
        return Ok(Runtime::Containerd);
    }
    if args.runtime != Runtime::Auto {
        return Ok(args.runtime);
    }
    let has = |p: &str| under(&args.host_root, Path::new(p)).is_ok_and(|p| p.exists());
    let found = [
        ("/run/containerd/containerd.sock", Runtime::Containerd),
        ("/run/crio/crio.sock", Runtime::Crio),
        ("/var/run/crio/crio.sock", Runtime::Crio),
        ("/etc/containerd", Runtime::Containerd),
        ("/etc/crio", Runtime::Crio),
    ]
    .into_iter()
    .find(|(p, _)| has(p));
    match found {
        Some((_, r)) => Ok(r),
        None if has(K3S_SOCKET) => bail!(
            "k3s or RKE2 runs containerd under {}: pass --k3s (and --containerd-config for RKE2)",
            args.host_root.display()
        ),
        None => bail!(
            "neither containerd nor CRI-O found under {}; pass --runtime",
            args.host_root.display()
        ),
    }
}

/// The units that run containerd on k3s and RKE2 nodes, and the socket it serves there.
const K3S_UNITS: [&str; 4] = ["k3s", "k3s-agent", "rke2-server", "rke2-agent"];
const K3S_SOCKET: &str = "/run/k3s/containerd/containerd.sock";

/// containerd's configuration as asked, else where k3s or plain containerd keep it.
fn containerd_config(args: &Args) -> &Path {
    match (&args.containerd_config, args.k3s) {
        (Some(p), _) => p,
        (None, true) => Path::new(k3s::DEFAULT_PATH),
        (None, false) => Path::new(containerd::DEFAULT_PATH),
    }
}

/// The k3s or RKE2 unit the host has (its unit file), RKE2's first when the configuration
/// is RKE2's.
fn k3s_unit(args: &Args) -> Option<&'static str> {
    let rke2 = containerd_config(args).starts_with("/var/lib/rancher/rke2");
    let dirs = [
        "/etc/systemd/system",
        "/usr/local/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ];
    let has = |unit: &str| {
        dirs.iter().any(|d| {
            under(
                &args.host_root,
                &Path::new(d).join(format!("{unit}.service")),
            )
            .is_ok_and(|p| p.exists())
        })
    };
    let mut units = K3S_UNITS;
    units.sort_by_key(|u| u.starts_with("rke2") != rke2);
    units.into_iter().find(|u| has(u))
}

/// Registers (or takes away) the handler, then restarts the runtime if a file changed.
fn register(args: &Args, runtime: Runtime, remove: bool) -> Result<()> {
    let wrapper = args.install_dir.join("oci-volume-runtime");
    let (path, unit) = match runtime {
        Runtime::Crio => (args.crio_dropin.as_path(), "crio"),
        _ if args.k3s => (containerd_config(args), "k3s"),
        _ => (containerd_config(args), "containerd"),
    };
    let req = containerd::Request {
        root: &args.host_root,
        path,
        wrapper: &wrapper,
        name: &args.name,
        remove,
        config: Path::new(config::DEFAULT_PATH),
    };
    let changes: Vec<Change> = match runtime {
        Runtime::Crio => crio::configure(&req)?,
        _ if args.k3s => k3s::configure(&req)?,
        _ => containerd::configure(&req)?,
    };
    for line in configure::describe(&changes) {
        println!("{line}");
    }
    if !configure::changed(&changes) {
        println!("{unit}: registration already as asked");
        return Ok(());
    }
    if !args.k3s {
        return restart(args, unit);
    }
    match k3s_unit(args) {
        Some(unit) => restart(args, unit),
        None => {
            println!(
                "no k3s, k3s-agent, rke2-server or rke2-agent unit on the host: restart the one running containerd for the change to take effect"
            );
            Ok(())
        }
    }
}

/// `systemctl restart UNIT` as the host runs it: chrooted into the host root, talking to the
/// host's systemd through its /run. No nsenter, no host PID namespace needed.
fn restart(args: &Args, unit: &str) -> Result<()> {
    let root = &args.host_root;
    let systemd = match args.restart {
        Restart::None => false,
        Restart::Systemd => true,
        Restart::Auto => under(root, Path::new("/run/systemd/system"))?.is_dir(),
    };
    if !systemd {
        println!(
            "{unit} not restarted (no systemd on the host): restart it for the change to take effect"
        );
        return Ok(());
    }
    let systemctl = ["/usr/bin/systemctl", "/bin/systemctl"]
        .into_iter()
        .find(|p| under(root, Path::new(p)).is_ok_and(|p| p.exists()))
        .ok_or_else(|| anyhow!("no systemctl under {}", root.display()))?;
    // A process of our own chroots and execs it: the installer itself stays where it is.
    let me = std::env::current_exe().context("finding this binary")?;
    let mut cmd = Command::new(me);
    cmd.args(["install-node", "--host-root"])
        .arg(root)
        .args(["--exec-in-host", systemctl, "restart", unit])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        // The host's /proc is mounted under the host root, so systemctl sees it is not in a
        // chroot of its host; this makes sure it does not refuse as if it were.
        .env("SYSTEMD_IGNORE_CHROOT", "1");
    let status = cmd
        .status()
        .with_context(|| format!("running {systemctl} in {}", root.display()))?;
    if !status.success() {
        bail!("systemctl restart {unit} on the host: {status}");
    }
    println!("{unit} restarted");
    Ok(())
}

/// chroot(2) into `root`, then exec `cmd` with the signals this installer blocks unblocked.
/// Returns only on failure.
fn exec_in_host(root: &Path, cmd: &[String]) -> anyhow::Error {
    let run = || -> Result<std::io::Error> {
        nix::unistd::chroot(root).with_context(|| format!("chroot {}", root.display()))?;
        nix::unistd::chdir("/").context("chdir /")?;
        SigSet::all()
            .thread_unblock()
            .context("unblocking signals")?;
        Ok(Command::new(&cmd[0]).args(&cmd[1..]).exec())
    };
    match run() {
        Ok(e) => anyhow!("exec {} in {}: {e}", cmd[0], root.display()),
        Err(e) => e,
    }
}
