//! The binaries' manuals, generated from their command-line definitions (`examples/man.rs`
//! writes them for the packages), so that a page's options are the binary's options. The
//! prose that is not about options lives here, next to the definitions.

use clap::{Arg, ArgAction, Command};

const RUNTIME_ABOUT: &str =
    "runc-compatible wrapper that prepares volume sources in tenant chroots";

const RUNTIME_LONG_ABOUT: &str = "\
Engines call oci-volume-runtime exactly as they call runc. For `create`, `run` and `restore` it finds the
bundle (--bundle, -b, or the working directory) by runc's own argv rules: flags after the id
count (`run ID --bundle B` prepares B), -h/--help anywhere prints runc's help and prepares
nothing, and a create, run or restore whose bundle or id runc might read otherwise is refused. It
prepares the bind-mount sources that lie in tenant chroots as oci-volume-hook(1)
does, and pins every one: in a mount namespace of its own, the descriptor it checked is
bind-mounted onto a root-only staging path, an edited config.json naming that path is
bind-mounted over the bundle's (which is never written), and runc is exec'd there. Every other command (start, state, kill, delete,
exec, --version...) execs the runtime at once: stdio, descriptors, exit status and signals
are the runtime's, even when the configuration is broken. `--version` prints the runtime's
lines unchanged, then the wrapper's own version line.

When preparation fails the runtime is not called; the exit status is 1, one line starting
with `oci-volume-runtime:` goes to standard error and, when runc's --log FILE is given, to
FILE in runc's format (JSON with --log-format json), where containerd and Docker read it:
`docker run` shows the reason. The wrapper never writes anything else to its stdout or
stderr: under Docker, containerd and Kubernetes they are the container's.";

const RUNTIME_AFTER_HELP: &str = "\
Configuration: oci-volume-hook.toml(5); `runtime` names the real runtime (default runc, found
on PATH; never the wrapper itself).

Environment: OCI_VOLUME_HOOK_CONFIG names the configuration file. Set it on containerd: its
environment reaches the runtimes it starts.

Examples: Docker: `oci-volume-hook configure docker`, then `docker run --runtime oci-volume`.
containerd/Kubernetes: `oci-volume-hook configure containerd` (a handler with BinaryName =
/usr/bin/oci-volume-runtime) and a RuntimeClass. CRI-O: `oci-volume-hook configure crio`.
podman: `podman --runtime /usr/bin/oci-volume-runtime run ...`.

See also: oci-volume-hook(1), oci-volume-hook.toml(5), runc(8).";

/// The wrapper's command line, for its manual only: every argument goes to runc as it is.
pub fn runtime_command() -> Command {
    Command::new(crate::names::RUNTIME)
        .version(env!("CARGO_PKG_VERSION"))
        .about(RUNTIME_ABOUT)
        .long_about(RUNTIME_LONG_ABOUT)
        .after_long_help(RUNTIME_AFTER_HELP)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("runc")
                .value_name("RUNC ARGUMENTS")
                .help("runc's global options, a command, its options and arguments")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .action(ArgAction::Append),
        )
}

/// Every manual page to write: (file stem, command), the command and each visible
/// subcommand, git-style (`oci-volume-hook-configure-docker`); `hook` is the hook binary's
/// command line (`hook::command()`).
pub fn pages(mut hook: Command) -> Vec<(String, Command)> {
    let mut out = Vec::new();
    hook.build();
    collect(&mut out, crate::names::HOOK, crate::names::HOOK, hook);
    out.push((crate::names::RUNTIME.to_string(), runtime_command()));
    out
}

fn collect(out: &mut Vec<(String, Command)>, stem: &str, invoked: &str, cmd: Command) {
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = sub.get_name();
        let page = sub
            .clone()
            .name(format!("{stem}-{name}"))
            .bin_name(format!("{invoked} {name}"));
        collect(
            out,
            &format!("{stem}-{name}"),
            &format!("{invoked} {name}"),
            page.clone(),
        );
        out.push((format!("{stem}-{name}"), page));
    }
    out.push((stem.to_string(), cmd));
}
