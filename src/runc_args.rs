//! runc's argv, read the way runc 1.1.5 and runc 1.2–1.4 read it, so the wrapper prepares the
//! bundle runc will use, for the id runc will use — or refuses when that is not certain.
//!
//! runc parses with urfave/cli v1 (Debian's 1.1.5 is built against v1.22.9; runc 1.2–1.4
//! vendor v1.22.14–17, whose reordering is the same) over Go's `flag` package:
//! - global flags are read up to the first positional argument (or `--`); the first
//!   positional argument names the subcommand;
//! - for a subcommand, urfave/cli first *reorders* the arguments: every argument that names
//!   one of the subcommand's flags moves in front, with the argument after it when the flag
//!   has no `=value` and that argument is not itself a flag (bool flags included), so
//!   `run ID --bundle B` reads as `run --bundle B ID`; an unknown flag stays in place; `--`
//!   ends reordering and is put in front of the positional arguments;
//! - then Go reads flags up to the first positional argument or `--`: `-f` and `--f` alike,
//!   `--f=v`, a value flag takes the next argument whatever it looks like, a bool flag never
//!   does (`--f=false` sets it false); an unknown flag or bad syntax is an error;
//! - a flag with two names (`bundle, b`) is an error when both are given;
//! - `-h`/`--help` (every subcommand has it) prints help and runs nothing.
//!
//! runc 1.2 added one flag to create and run, `--pidfd-socket PATH`, which 1.1.5 rejects and
//! which moves other arguments when reordered. The wrapper does not know which runc it runs,
//! so it reads create and run both ways: it prepares when a runc that accepts the argv would
//! use that bundle and id, and refuses when the two runcs would mount different bundles.
//! restore (which mounts the bundle's sources too, through CRIU) has the same flags in both.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The subcommands the wrapper tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subcommand {
    /// No subcommand: runc prints help, its version, or a usage error.
    None,
    Create,
    Run,
    Restore,
    Delete,
    Other(String),
}

/// What the wrapper does with an argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Exec the runtime at once: it reads no bundle (another subcommand, help, the version,
    /// or a usage error that runc reports itself).
    PassThrough,
    /// `create`/`run`/`restore`: prepare this bundle (`None`: the working directory) for container `id`.
    Prepare { bundle: Option<PathBuf>, id: String },
    /// `delete` of container `id`.
    Delete { id: String },
    /// runc's reading is not certain: refuse, saying why.
    Refuse(String),
}

/// What the wrapper needs from runc's argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub log: Option<PathBuf>,
    pub log_format: Option<String>,
    pub root: Option<PathBuf>,
    pub command: Subcommand,
    pub action: Action,
}

impl Invocation {
    pub fn prepares(&self) -> bool {
        matches!(self.action, Action::Prepare { .. })
    }
    /// The bundle to prepare; `None` for the working directory (or when not preparing).
    pub fn bundle(&self) -> Option<&std::path::Path> {
        match &self.action {
            Action::Prepare { bundle, .. } => bundle.as_deref(),
            _ => None,
        }
    }
    /// The container id of `create`, `run`, `restore` or `delete`.
    pub fn id(&self) -> Option<&str> {
        match &self.action {
            Action::Prepare { id, .. } | Action::Delete { id } => Some(id),
            _ => None,
        }
    }
    pub fn refusal(&self) -> Option<&str> {
        match &self.action {
            Action::Refuse(why) => Some(why),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Bool,
    Value,
}

/// One urfave/cli flag: its names (`bundle, b`) and whether it takes a value.
struct Flag {
    names: &'static [&'static str],
    kind: Kind,
}

const fn flag(names: &'static [&'static str], kind: Kind) -> Flag {
    Flag { names, kind }
}

use Kind::{Bool, Value};

/// urfave/cli adds it to the app and to every subcommand.
const HELP: Flag = flag(&["help", "h"], Bool);

/// runc 1.1.5 main.go, plus urfave/cli's help and version flags.
const GLOBAL: &[Flag] = &[
    flag(&["debug"], Bool),
    flag(&["log"], Value),
    flag(&["log-format"], Value),
    flag(&["root"], Value),
    flag(&["criu"], Value),
    flag(&["systemd-cgroup"], Bool),
    flag(&["rootless"], Value),
    HELP,
    flag(&["version", "v"], Bool),
];

/// runc 1.1.5 create.go (`preserve-fds` is an int: runc checks the number, the wrapper
/// does not need to).
const CREATE_1_1: &[Flag] = &[
    flag(&["bundle", "b"], Value),
    flag(&["console-socket"], Value),
    flag(&["pid-file"], Value),
    flag(&["no-pivot"], Bool),
    flag(&["no-new-keyring"], Bool),
    flag(&["preserve-fds"], Value),
    HELP,
];

/// runc 1.2–1.4 create.go: 1.1.5's flags and `pidfd-socket`.
const CREATE: &[Flag] = &[
    flag(&["bundle", "b"], Value),
    flag(&["console-socket"], Value),
    flag(&["pidfd-socket"], Value),
    flag(&["pid-file"], Value),
    flag(&["no-pivot"], Bool),
    flag(&["no-new-keyring"], Bool),
    flag(&["preserve-fds"], Value),
    HELP,
];

/// runc 1.1.5 run.go.
const RUN_1_1: &[Flag] = &[
    flag(&["bundle", "b"], Value),
    flag(&["console-socket"], Value),
    flag(&["detach", "d"], Bool),
    flag(&["keep"], Bool),
    flag(&["pid-file"], Value),
    flag(&["no-subreaper"], Bool),
    flag(&["no-pivot"], Bool),
    flag(&["no-new-keyring"], Bool),
    flag(&["preserve-fds"], Value),
    HELP,
];

/// runc 1.2–1.4 run.go: 1.1.5's flags and `pidfd-socket`.
const RUN: &[Flag] = &[
    flag(&["bundle", "b"], Value),
    flag(&["console-socket"], Value),
    flag(&["pidfd-socket"], Value),
    flag(&["detach", "d"], Bool),
    flag(&["keep"], Bool),
    flag(&["pid-file"], Value),
    flag(&["no-subreaper"], Bool),
    flag(&["no-pivot"], Bool),
    flag(&["no-new-keyring"], Bool),
    flag(&["preserve-fds"], Value),
    HELP,
];

/// restore.go, the same in runc 1.1.5 and 1.2–1.4 (`empty-ns` is a string slice: each use
/// takes a value).
const RESTORE: &[Flag] = &[
    flag(&["console-socket"], Value),
    flag(&["image-path"], Value),
    flag(&["work-path"], Value),
    flag(&["tcp-established"], Bool),
    flag(&["ext-unix-sk"], Bool),
    flag(&["shell-job"], Bool),
    flag(&["file-locks"], Bool),
    flag(&["manage-cgroups-mode"], Value),
    flag(&["bundle", "b"], Value),
    flag(&["detach", "d"], Bool),
    flag(&["pid-file"], Value),
    flag(&["no-subreaper"], Bool),
    flag(&["no-pivot"], Bool),
    flag(&["empty-ns"], Value),
    flag(&["auto-dedup"], Bool),
    flag(&["lazy-pages"], Bool),
    flag(&["lsm-profile"], Value),
    flag(&["lsm-mount-context"], Value),
    HELP,
];

/// runc 1.1.5 delete.go.
const DELETE: &[Flag] = &[flag(&["force", "f"], Bool), HELP];

/// Subcommands that read a bundle: a global argv runc may read as one of them is refused
/// when it cannot be parsed.
const PREPARING: &[&str] = &["create", "run", "restore"];

fn lookup(flags: &[Flag], name: &[u8]) -> Option<usize> {
    flags
        .iter()
        .position(|f| f.names.iter().any(|n| n.as_bytes() == name))
}

/// A flag Go's parser set: which one, under which name, to what.
struct Seen {
    flag: usize,
    name: Vec<u8>,
    value: OsString,
}

/// Go's `flag.FlagSet.Parse`: the flags set, in order, then the positional arguments, or
/// the error (with what was set before it).
struct Parsed {
    seen: Vec<Seen>,
    rest: Vec<OsString>,
    error: Option<String>,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Reads one flag at `args[*i]` (known to start with `-` and be longer than `--`).
fn parse_one(flags: &[Flag], args: &[OsString], i: &mut usize) -> Result<Seen, String> {
    let s = args[*i].as_bytes();
    let body = if s[1] == b'-' { &s[2..] } else { &s[1..] };
    if body.is_empty() || body[0] == b'-' || body[0] == b'=' {
        return Err(format!("bad flag syntax: {}", lossy(s)));
    }
    *i += 1;
    // `=` cannot be the first character of a name.
    let (name, inline) = match body[1..].iter().position(|&c| c == b'=') {
        Some(p) => (&body[..=p], Some(&body[p + 2..])),
        None => (body, None),
    };
    let Some(flag) = lookup(flags, name) else {
        return Err(format!("flag provided but not defined: -{}", lossy(name)));
    };
    let value = match (flags[flag].kind, inline) {
        (Bool, v) => {
            let v = v.unwrap_or(&b"true"[..]);
            match parse_bool(v) {
                Some(b) => OsString::from(if b { "true" } else { "false" }),
                None => {
                    return Err(format!(
                        "invalid boolean value {:?} for -{}",
                        lossy(v),
                        lossy(name)
                    ));
                }
            }
        }
        (Value, Some(v)) => std::ffi::OsStr::from_bytes(v).to_os_string(),
        (Value, None) => match args.get(*i) {
            Some(v) => {
                *i += 1;
                v.clone()
            }
            None => return Err(format!("flag needs an argument: -{}", lossy(name))),
        },
    };
    Ok(Seen {
        flag,
        name: name.to_vec(),
        value,
    })
}

/// Go's `flag.FlagSet.Parse` followed by urfave/cli's `normalizeFlags`.
fn go_parse(flags: &[Flag], args: &[OsString]) -> Parsed {
    let mut seen = Vec::new();
    let mut i = 0;
    let mut error = None;
    while let Some(s) = args.get(i).map(|a| a.as_bytes()) {
        if s.len() < 2 || s[0] != b'-' {
            break;
        }
        if s == b"--" {
            i += 1;
            break;
        }
        match parse_one(flags, args, &mut i) {
            Ok(f) => seen.push(f),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if error.is_none() {
        error = two_forms(flags, &seen);
    }
    Parsed {
        seen,
        rest: args[i.min(args.len())..].to_vec(),
        error,
    }
}

/// urfave/cli refuses a flag given under two of its names (`-b X --bundle Y`).
fn two_forms(flags: &[Flag], seen: &[Seen]) -> Option<String> {
    for (k, f) in flags.iter().enumerate() {
        let used: Vec<&str> = f
            .names
            .iter()
            .copied()
            .filter(|n| seen.iter().any(|s| s.flag == k && s.name == n.as_bytes()))
            .collect();
        if used.len() > 1 {
            return Some(format!(
                "Cannot use two forms of the same flag: {} {}",
                used[1], used[0]
            ));
        }
    }
    None
}

impl Parsed {
    /// The flag's value, the last one given (Go's flag variables keep the last).
    fn value(&self, flags: &[Flag], name: &str) -> Option<&OsString> {
        let k = lookup(flags, name.as_bytes())?;
        self.seen
            .iter()
            .rev()
            .find(|s| s.flag == k)
            .map(|s| &s.value)
    }
    fn bool(&self, flags: &[Flag], name: &str) -> bool {
        self.value(flags, name).is_some_and(|v| v == "true")
    }
}

/// urfave/cli v1.22.9 `argIsFlag`: whether `arg` names one of `flags` (`-f`, `--f`, `---f`,
/// with or without `=value`).
fn arg_is_flag(flags: &[Flag], arg: &[u8]) -> bool {
    if arg == b"-" || arg == b"--" || !arg.starts_with(b"-") {
        return false;
    }
    let mut a = arg.strip_prefix(b"--").unwrap_or(arg);
    a = a.strip_prefix(b"-").unwrap_or(a);
    let name = a.split(|&c| c == b'=').next().unwrap_or_default();
    lookup(flags, name).is_some()
}

/// urfave/cli v1.22.9 `reorderArgs`: the subcommand's flags (and what may be their values)
/// in front, the rest after, `--` and everything after it last with `--` leading the rest.
fn reorder(flags: &[Flag], args: &[OsString]) -> Vec<OsString> {
    let (mut moved, mut rest) = (Vec::new(), Vec::new());
    let mut may_be_value = false;
    for (i, arg) in args.iter().enumerate() {
        let b = arg.as_bytes();
        if may_be_value && !arg_is_flag(flags, b) {
            may_be_value = false;
            moved.push(arg.clone());
        } else if b == b"--" {
            rest.insert(0, arg.clone());
            rest.extend_from_slice(&args[i + 1..]);
            break;
        } else if arg_is_flag(flags, b) {
            moved.push(arg.clone());
            may_be_value = !b.contains(&b'=');
        } else {
            rest.push(arg.clone());
        }
    }
    moved.extend(rest);
    moved
}

/// Reads runc's argv (without `argv[0]`).
pub fn parse(args: &[OsString]) -> Invocation {
    let global = go_parse(GLOBAL, args);
    let text = |name| {
        global
            .value(GLOBAL, name)
            .map(|v| v.to_string_lossy().into_owned())
    };
    let mut inv = Invocation {
        log: global.value(GLOBAL, "log").map(PathBuf::from),
        log_format: text("log-format"),
        root: global.value(GLOBAL, "root").map(PathBuf::from),
        command: Subcommand::None,
        action: Action::PassThrough,
    };
    if let Some(e) = &global.error {
        // runc stops with a usage error; refuse only if another reading could prepare.
        if args.iter().any(|a| PREPARING.iter().any(|p| a == p)) {
            inv.action = Action::Refuse(format!("runc's global flags: {e}"));
        }
        return inv;
    }
    if global.bool(GLOBAL, "help") || global.bool(GLOBAL, "version") {
        return inv;
    }
    let Some((name, tail)) = global.rest.split_first() else {
        return inv;
    };
    // Each runc's flags for the subcommand, oldest first.
    let (command, readings): (_, &[&[Flag]]) = match name.as_bytes() {
        b"create" => (Subcommand::Create, &[CREATE_1_1, CREATE]),
        b"run" => (Subcommand::Run, &[RUN_1_1, RUN]),
        b"restore" => (Subcommand::Restore, &[RESTORE]),
        b"delete" => (Subcommand::Delete, &[DELETE]),
        _ => {
            inv.command = Subcommand::Other(name.to_string_lossy().into_owned());
            return inv;
        }
    };
    let actions: Vec<Action> = readings
        .iter()
        .map(|flags| subcommand_action(&command, flags, &go_parse(flags, &reorder(flags, tail))))
        .collect();
    inv.action = agreed(&command, actions);
    inv.command = command;
    inv
}

/// One action from the readings of several runcs. Only a runc that prepares mounts anything:
/// those must agree on bundle and id. A runc that prints help or rejects the argv mounts
/// nothing, whatever the others do; when none prepares, the newest runc's reading stands.
fn agreed(command: &Subcommand, mut actions: Vec<Action>) -> Action {
    let mut prepares = actions
        .iter()
        .filter(|a| matches!(a, Action::Prepare { .. }));
    match (prepares.next(), prepares.next()) {
        (Some(a), Some(b)) if a != b => Action::Refuse(format!(
            "runc {} 1.1 and 1.2+ read different bundles or ids",
            name_of(command)
        )),
        (Some(a), _) => a.clone(),
        (None, _) => actions.pop().unwrap_or(Action::PassThrough),
    }
}

fn name_of(command: &Subcommand) -> &str {
    match command {
        Subcommand::None => "",
        Subcommand::Create => "create",
        Subcommand::Run => "run",
        Subcommand::Restore => "restore",
        Subcommand::Delete => "delete",
        Subcommand::Other(name) => name,
    }
}

/// What to do with a parsed `create`, `run`, `restore` or `delete`.
fn subcommand_action(command: &Subcommand, flags: &[Flag], parsed: &Parsed) -> Action {
    let name = name_of(command);
    let id = parsed
        .rest
        .first()
        .map(|s| s.to_string_lossy().into_owned());
    if *command == Subcommand::Delete {
        return match (&parsed.error, parsed.rest.len(), id) {
            (None, 1, Some(id)) if !parsed.bool(flags, "help") => Action::Delete { id },
            _ => Action::PassThrough,
        };
    }
    if let Some(e) = &parsed.error {
        return Action::Refuse(format!("runc {name}: {e}"));
    }
    if parsed.bool(flags, "help") {
        return Action::PassThrough;
    }
    match (parsed.rest.len(), id) {
        // runc reports the missing id (or an empty one) and creates nothing.
        (0, _) => Action::PassThrough,
        (1, Some(id)) if id.is_empty() => Action::PassThrough,
        (1, Some(id)) => Action::Prepare {
            bundle: parsed
                .value(flags, "bundle")
                .filter(|b| !b.is_empty())
                .map(PathBuf::from),
            id,
        },
        (n, _) => Action::Refuse(format!(
            "runc {name}: takes one container id, got {n} arguments ({})",
            parsed
                .rest
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

#[cfg(test)]
mod tests;
