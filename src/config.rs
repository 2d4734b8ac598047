//! The operator's configuration: `/etc/oci-volume-hook/config.toml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::chroot::Pattern;
use crate::host_sources::HostPattern;

/// Where the configuration is read from when neither `--config` nor the environment says.
pub const DEFAULT_PATH: &str = "/etc/oci-volume-hook/config.toml";
/// Environment variable that overrides [`DEFAULT_PATH`]; it reaches a runtime wrapper through
/// containerd's environment and a podman hook through the hook's `env`.
pub const ENV_PATH: &str = "OCI_VOLUME_HOOK_CONFIG";

/// Whose host ids a prepared source is given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// The host ids that container uid 0 / gid 0 map to.
    #[default]
    ContainerRoot,
    /// The host ids that the container's `process.user` uid/gid map to.
    ProcessUser,
}

/// How far ownership is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Ownership {
    /// Never change an owner (created sources stay host root's).
    None,
    /// The source itself and the directories the tool created.
    #[default]
    Top,
    /// Like `top`, and when the source's own owner is wrong, everything below it too.
    RecursiveOnMismatch,
    /// Nothing below the source is chowned: the wrapper makes the bind mount idmapped with
    /// the container's mappings, so on-disk ids show as the container's own (on-disk 0 is
    /// container root). Falls back to `recursive-on-mismatch`, saying why in the log, where
    /// the runtime or the source's filesystem cannot idmap.
    Idmap,
}

impl Ownership {
    /// The setting's name, as the configuration and `plan` write it.
    pub fn word(self) -> &'static str {
        match self {
            Ownership::None => "none",
            Ownership::Top => "top",
            Ownership::RecursiveOnMismatch => "recursive-on-mismatch",
            Ownership::Idmap => "idmap",
        }
    }
}

/// journald's native socket, unless `log.journald_socket` says otherwise.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
/// The syslog socket, unless `log.syslog_socket` says otherwise.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// Where staging mounts live unless `staging_dir` says otherwise.
pub const DEFAULT_STAGING_DIR: &str = "/run/oci-volume-hook";

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogTarget {
    /// journald if its socket exists, else syslog if `/dev/log` exists, else stderr.
    #[default]
    Auto,
    Journald,
    Syslog,
    Stderr,
    /// Append to `log.file`.
    File,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// error, warn, info, debug or trace.
    pub level: String,
    pub target: LogTarget,
    /// The file for `target = "file"`, and where `auto` writes when neither journald nor
    /// syslog answers (default /var/log/oci-volume-hook.log).
    pub file: Option<PathBuf>,
    /// journald's native socket.
    pub journald_socket: PathBuf,
    /// The syslog socket.
    pub syslog_socket: PathBuf,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            target: LogTarget::Auto,
            file: None,
            journald_socket: JOURNALD_SOCKET.into(),
            syslog_socket: SYSLOG_SOCKET.into(),
        }
    }
}

/// Which prepared sources are pinned (handed to the runtime as a mount of the checked inode
/// instead of a path it would resolve again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Pin {
    /// Every source in a chroot (`true`): safe whatever tenants can do.
    #[default]
    Always,
    /// Only sources below a directory that is not root's or that others may write. Safe only
    /// if no tenant process ever runs as host root (every container of every tenant in a
    /// user namespace): a root tenant can rename entries of root-owned directories.
    WhenChangeable,
    /// Never (`false`): the runtime resolves the in-chroot path again, racing the tenant.
    Never,
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pin, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Pin::Always),
            Raw::Bool(false) => Ok(Pin::Never),
            Raw::Name(n) => match n.as_str() {
                "always" => Ok(Pin::Always),
                "when-changeable" => Ok(Pin::WhenChangeable),
                "never" => Ok(Pin::Never),
                _ => Err(serde::de::Error::custom(format!(
                    "pin_sources {n:?} is not true, false, \"always\", \"when-changeable\" or \"never\""
                ))),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Patterns of tenant chroots; `*` matches exactly one path component.
    pub chroots: Vec<Pattern>,
    /// Create a missing chroot (root:root, 0755) when the directory it would live in passes
    /// the chroot checks, as engines create a missing volume path; `false` refuses instead.
    pub create_chroots: bool,
    /// Refuse a bind source that is a chroot base, an ancestor of chroots, or a path under a
    /// base in no chroot: such a mount would hand out every tenant's chroot.
    pub refuse_chroot_bases: bool,
    /// The bind sources outside the chroots containers may mount (`*` one component, a
    /// final `**` anything below). `None` (unset): any; a list: those only, checked as given
    /// and where they lead on the host ([`crate::host_sources`]).
    pub host_sources: Option<Vec<HostPattern>>,
    pub owner: Owner,
    pub ownership: Ownership,
    /// Host files copied into a chroot when the tool creates the same path there, e.g.
    /// `/etc/localtime` into `<chroot>/etc/localtime`. The host's own symlinks are followed.
    pub seed_from_host: Vec<PathBuf>,
    /// The `io.oci-volume-hook.*` annotations a container may use: `KEY` (any value) or
    /// `KEY=VALUE` (that value only). Default [`DEFAULT_ALLOWED`]: only what narrows.
    #[serde(rename = "allowed_annotations")]
    allowed_raw: Option<Vec<String>>,
    /// Deprecated: `false` is `allowed_annotations = []`, `true` the default list.
    allow_annotations: Option<bool>,
    /// What `allowed_annotations` (or `allow_annotations`) comes to, checked.
    #[serde(skip)]
    pub allowed_annotations: Vec<Allowed>,
    /// Pin each prepared source (wrapper and precreate): bind-mount the checked inode onto a
    /// root-only staging path and point config.json there, so the runtime cannot be made to
    /// mount anything else by a symlink swapped in after the check.
    pub pin_sources: Pin,
    /// Where staging mounts live.
    pub staging_dir: PathBuf,
    /// The real OCI runtime the wrapper execs: a name looked up on PATH, or an absolute path.
    pub runtime: String,
    pub log: Log,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chroots: vec![Pattern::parse("/containerdata/*").expect("valid default pattern")],
            create_chroots: true,
            refuse_chroot_bases: true,
            host_sources: None,
            owner: Owner::default(),
            ownership: Ownership::default(),
            seed_from_host: Vec::new(),
            allowed_raw: None,
            allow_annotations: None,
            allowed_annotations: default_allowed(),
            pin_sources: Pin::Always,
            staging_dir: PathBuf::from(DEFAULT_STAGING_DIR),
            runtime: "runc".into(),
            log: Log::default(),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let table = e.span().and_then(|span| table_at(text, span.start));
            match table {
                Some(t) => anyhow::anyhow!("{} (read inside table {t})", one_line(&e.to_string())),
                None => anyhow::anyhow!("{}", one_line(&e.to_string())),
            }
        })?;
        if config.log.target == LogTarget::File && config.log.file.is_none() {
            bail!("log.target = \"file\" needs log.file");
        }
        if !["off", "error", "warn", "info", "debug", "trace"].contains(&config.log.level.as_str())
        {
            bail!(
                "log.level {:?} is not one of off, error, warn, info, debug, trace",
                config.log.level
            );
        }
        if !config.staging_dir.is_absolute() {
            bail!(
                "staging_dir {} is not an absolute path",
                config.staging_dir.display()
            );
        }
        for p in &config.seed_from_host {
            if crate::chroot::normalize(p).ok().as_deref() != Some(p.as_path()) {
                bail!(
                    "seed_from_host: {} is not a normalized absolute path",
                    p.display()
                );
            }
        }
        if config.runtime.is_empty() {
            bail!("runtime must not be empty");
        }
        config.allowed_annotations = match (&config.allowed_raw, config.allow_annotations) {
            (Some(_), Some(_)) => bail!(
                "allowed_annotations and the deprecated allow_annotations are both set: keep allowed_annotations"
            ),
            (Some(list), None) => list
                .iter()
                .map(|e| Allowed::parse(e))
                .collect::<Result<_>>()?,
            (None, Some(false)) => Vec::new(),
            (None, Some(true) | None) => default_allowed(),
        };
        Ok(config)
    }

    /// Loads the configuration at `path`, or at the path from the environment or the default.
    /// A missing file means the defaults, unless the path was given explicitly.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let env = std::env::var_os(ENV_PATH)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let (path, must_exist) = match (explicit, env) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (p, true),
            (None, None) => (PathBuf::from(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text).with_context(|| format!("config {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                Ok(Config::default())
            }
            Err(e) => Err(e).with_context(|| format!("config {}", path.display())),
        }
    }
}

impl Config {
    /// For the runtime calls that must work whatever the configuration's state (everything
    /// but create and run): the configuration, or — when it cannot be read or is invalid —
    /// the defaults with whatever `runtime`, `staging_dir` and `[log]` can still be read from
    /// it, and the problem.
    pub fn load_lenient() -> (Config, Option<anyhow::Error>) {
        let problem = match Config::load(None) {
            Ok(c) => return (c, None),
            Err(e) => e,
        };
        let mut config = Config::default();
        let path = std::env::var_os(ENV_PATH)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let table = text.parse::<toml::Table>().ok();
        // A file TOML cannot read still names the operator's runtime: kill and delete must
        // reach that one, not whatever `runc` is on PATH.
        let string = |key: &str| match &table {
            Some(t) => t.get(key).and_then(|v| v.as_str()).map(String::from),
            None => salvage_string(&text, key),
        };
        if let Some(r) = string("runtime").filter(|r| !r.is_empty()) {
            config.runtime = r;
        }
        if let Some(s) = string("staging_dir") {
            config.staging_dir = PathBuf::from(s);
        }
        let table = table.unwrap_or_default();
        if let Some(log) = table
            .get("log")
            .and_then(|l| Log::deserialize(l.clone()).ok())
        {
            config.log = log;
        }
        (config, Some(problem))
    }
}

/// `key = "value"` at the top level of a text TOML cannot parse: the last such line before
/// the first table header, its value a string without escapes. None when there is none.
fn salvage_string(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            break;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim().trim_matches('"') != key {
            continue;
        }
        let v = v.trim();
        let quote = v.chars().next().filter(|q| *q == '"' || *q == '\'')?;
        let rest = &v[1..];
        let end = rest.find(quote)?;
        let value = &rest[..end];
        let after = rest[end + 1..].trim_start();
        if (quote == '"' && value.contains('\\')) || !(after.is_empty() || after.starts_with('#')) {
            continue;
        }
        found = Some(value.to_string());
    }
    found
}

/// The annotation prefix for per-container control.
pub const ANNOTATION_PREFIX: &str = "io.oci-volume-hook.";

/// The annotations under [`ANNOTATION_PREFIX`] the tool reads.
pub const ANNOTATION_NAMES: [&str; 3] = ["enabled", "owner", "ownership"];

/// The default `allowed_annotations`: only what narrows. `enabled` can only turn creation,
/// repair and ownership off (never the resolution and pinning); `ownership=none` only leaves
/// owners alone. `owner`, and `ownership` values that chown more, change the host's files
/// and are the operator's to allow.
pub const DEFAULT_ALLOWED: [&str; 2] = [
    "io.oci-volume-hook.enabled",
    "io.oci-volume-hook.ownership=none",
];

fn default_allowed() -> Vec<Allowed> {
    DEFAULT_ALLOWED
        .iter()
        .map(|e| Allowed::parse(e).expect("valid default list"))
        .collect()
}

/// One entry of `allowed_annotations`: an annotation a container may set, with any value or
/// with one value only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The name under the prefix (`enabled`, `owner`, `ownership`).
    pub name: &'static str,
    pub value: Option<String>,
}

impl Allowed {
    /// `io.oci-volume-hook.NAME` or `io.oci-volume-hook.NAME=VALUE`, the value checked.
    pub fn parse(entry: &str) -> Result<Allowed> {
        let (key, value) = match entry.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (entry, None),
        };
        let name = key
            .strip_prefix(ANNOTATION_PREFIX)
            .and_then(|n| ANNOTATION_NAMES.iter().find(|k| **k == n))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "allowed_annotations: {entry:?} is not {ANNOTATION_PREFIX}enabled, owner or ownership (optionally =VALUE)"
                )
            })?;
        if let Some(v) = &value {
            parse_value(name, v)
                .map_err(|e| anyhow::anyhow!("allowed_annotations: {entry:?}: {e}"))?;
        }
        Ok(Allowed { name, value })
    }

    /// The full annotation key, as engines are told to pass it.
    pub fn key(&self) -> String {
        format!("{ANNOTATION_PREFIX}{}", self.name)
    }

    fn permits(&self, name: &str, value: &str) -> bool {
        self.name == name && self.value.as_deref().is_none_or(|v| v == value)
    }
}

/// One annotation's value, parsed.
enum Value {
    Enabled(bool),
    Owner(Owner),
    Ownership(Ownership),
}

fn parse_value(name: &str, text: &str) -> std::result::Result<Value, String> {
    let parsed = || toml::Value::String(text.to_string());
    match name {
        "enabled" => match text {
            "true" => Ok(Value::Enabled(true)),
            "false" => Ok(Value::Enabled(false)),
            _ => Err(format!("{text:?} is not \"true\" or \"false\"")),
        },
        "owner" => Owner::deserialize(parsed())
            .map(Value::Owner)
            .map_err(|_| format!("{text:?} is not \"container-root\" or \"process-user\"")),
        _ => Ownership::deserialize(parsed())
            .map(Value::Ownership)
            .map_err(|_| {
                format!("{text:?} is not \"none\", \"top\", \"recursive-on-mismatch\" or \"idmap\"")
            }),
    }
}

/// What one container gets: the configuration, adjusted by its annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// `false`: sources are still resolved in their chroot and pinned (or refused), but
    /// nothing is created, repaired or given an owner.
    pub enabled: bool,
    pub owner: Owner,
    pub ownership: Ownership,
    /// Whether `owner` came from the container's annotation (a tenant's choice).
    #[serde(skip)]
    pub owner_by_annotation: bool,
}

impl Config {
    /// Applies `io.oci-volume-hook.{enabled,owner,ownership}` annotations. A key under the
    /// prefix that is unknown, not in `allowed_annotations`, or with a value that is invalid
    /// or not allowed is an error that names the annotation.
    pub fn settings(
        &self,
        annotations: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Settings> {
        let mut s = Settings {
            enabled: true,
            owner: self.owner,
            ownership: self.ownership,
            owner_by_annotation: false,
        };
        for (key, value) in annotations {
            let Some(name) = key.strip_prefix(ANNOTATION_PREFIX) else {
                continue;
            };
            if !ANNOTATION_NAMES.contains(&name) {
                bail!(
                    "annotation {key} is unknown (known: {ANNOTATION_PREFIX}enabled, owner, ownership)"
                );
            }
            let text = value.as_str().unwrap_or_default();
            let parsed =
                parse_value(name, text).map_err(|e| anyhow::anyhow!("annotation {key}: {e}"))?;
            if !self
                .allowed_annotations
                .iter()
                .any(|a| a.permits(name, text))
            {
                bail!(
                    "annotation {key}={text:?} is not allowed on this host (allowed_annotations: {})",
                    self.allowed_list()
                );
            }
            match parsed {
                Value::Enabled(e) => s.enabled = e,
                Value::Owner(o) => (s.owner, s.owner_by_annotation) = (o, true),
                Value::Ownership(o) => {
                    // Through an idmapped mount the container's files land as on-disk root
                    // (a setuid file too): the operator's choice, never a tenant's.
                    if o == Ownership::Idmap && self.ownership != Ownership::Idmap {
                        bail!(
                            "annotation {key}: \"idmap\" is for the configuration to choose (ownership = \"idmap\"), not a container"
                        );
                    }
                    s.ownership = o
                }
            }
        }
        Ok(s)
    }

    /// `allowed_annotations` as one line of a message.
    fn allowed_list(&self) -> String {
        if self.allowed_annotations.is_empty() {
            return "none".into();
        }
        let entries: Vec<String> = self
            .allowed_annotations
            .iter()
            .map(|a| match &a.value {
                Some(v) => format!("{}={v}", a.key()),
                None => a.key(),
            })
            .collect();
        entries.join(", ")
    }

    /// The annotation keys engines must pass to the wrapper: those of `allowed_annotations`,
    /// each once, in order.
    pub fn allowed_annotation_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for a in &self.allowed_annotations {
            if !keys.contains(&a.key()) {
                keys.push(a.key());
            }
        }
        keys
    }
}

/// The `[table]` header in force at byte `at` of `text`, if any: a key appended after a
/// table lands in it, and the error should say so.
fn table_at(text: &str, at: usize) -> Option<String> {
    text.get(..at)?
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with('['))
        .map(|l| l.split('#').next().unwrap_or(l).trim().to_string())
}

/// toml's messages span several lines with a source excerpt; errors here are one line.
fn one_line(msg: &str) -> String {
    let mut parts = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "));
    let first = parts.next().unwrap_or("invalid TOML").to_string();
    match parts.next_back() {
        Some(last) if last != first => format!("{first}: {last}"),
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_empty() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.owner, Owner::ContainerRoot);
        assert_eq!(c.runtime, "runc");
        assert_eq!(c.chroots.len(), 1);
        assert!(c.create_chroots && c.refuse_chroot_bases);
        let c = Config::parse("create_chroots = false\nrefuse_chroot_bases = false").unwrap();
        assert!(!c.create_chroots && !c.refuse_chroot_bases);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("chroots = [\"/a/*\"]\nownr = \"process-user\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("ownr"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let err = Config::parse("[log]\nlevl = \"info\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("levl"));
        // A key appended after a table is read inside it: the error says which.
        let err = Config::parse("[log]\nlevel = \"info\"\nchroots = [\"/a/*\"]\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("chroots") && msg.contains("inside table [log]"),
            "{msg}"
        );
    }

    #[test]
    fn full_document() {
        let c = Config::parse(
            "chroots = [\"/srv/*/root\", \"/containerdata/*\"]\nowner = \"process-user\"\nruntime = \"/usr/sbin/runc\"\n[log]\nlevel = \"debug\"\ntarget = \"file\"\nfile = \"/var/log/x.log\"\n",
        )
        .unwrap();
        assert_eq!(c.owner, Owner::ProcessUser);
        assert_eq!(c.chroots.len(), 2);
        assert_eq!(c.log.target, LogTarget::File);
    }

    fn annotations(pairs: &[(&str, &str)]) -> serde_json::Map<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect()
    }

    #[test]
    fn annotations_adjust_settings_as_listed() {
        let a = annotations;
        let all = "allowed_annotations = [\"io.oci-volume-hook.enabled\", \"io.oci-volume-hook.owner\", \"io.oci-volume-hook.ownership\"]";
        let c = Config::parse(&format!("ownership = \"top\"\n{all}")).unwrap();
        let s = c
            .settings(&a(&[
                ("io.oci-volume-hook.owner", "process-user"),
                ("other", "x"),
            ]))
            .unwrap();
        assert_eq!(
            (s.enabled, s.owner, s.ownership, s.owner_by_annotation),
            (true, Owner::ProcessUser, Ownership::Top, true)
        );
        let s = c
            .settings(&a(&[
                ("io.oci-volume-hook.ownership", "recursive-on-mismatch"),
                ("io.oci-volume-hook.enabled", "false"),
            ]))
            .unwrap();
        assert_eq!(
            (s.enabled, s.ownership, s.owner_by_annotation),
            (false, Ownership::RecursiveOnMismatch, false)
        );
        for bad in [
            ("io.oci-volume-hook.owner", "root"),
            ("io.oci-volume-hook.enabled", "yes"),
            ("io.oci-volume-hook.ownr", "top"),
            // A tenant cannot choose files owned by on-disk root for itself.
            ("io.oci-volume-hook.ownership", "idmap"),
        ] {
            let e = format!("{:#}", c.settings(&a(&[bad])).unwrap_err());
            assert!(e.contains(bad.0) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn by_default_annotations_only_narrow() {
        let a = annotations;
        let c = Config::parse("ownership = \"recursive-on-mismatch\"").unwrap();
        assert_eq!(
            c.allowed_annotation_keys(),
            ["io.oci-volume-hook.enabled", "io.oci-volume-hook.ownership"]
        );
        let s = c
            .settings(&a(&[
                ("io.oci-volume-hook.enabled", "false"),
                ("io.oci-volume-hook.ownership", "none"),
            ]))
            .unwrap();
        assert_eq!((s.enabled, s.ownership), (false, Ownership::None));
        // Whatever changes whose ids or how far is the operator's to allow.
        for widening in [
            ("io.oci-volume-hook.owner", "process-user"),
            ("io.oci-volume-hook.owner", "container-root"),
            ("io.oci-volume-hook.ownership", "top"),
            ("io.oci-volume-hook.ownership", "recursive-on-mismatch"),
        ] {
            let e = format!("{:#}", c.settings(&a(&[widening])).unwrap_err());
            assert!(
                e.contains(widening.0) && e.contains("not allowed") && !e.contains('\n'),
                "{e}"
            );
        }
        // A value pinned by the operator: that value only.
        let c = Config::parse("allowed_annotations = [\"io.oci-volume-hook.owner=process-user\"]")
            .unwrap();
        assert!(
            c.settings(&a(&[("io.oci-volume-hook.owner", "process-user")]))
                .is_ok()
        );
        assert!(
            c.settings(&a(&[("io.oci-volume-hook.owner", "container-root")]))
                .is_err()
        );
        assert!(
            c.settings(&a(&[("io.oci-volume-hook.enabled", "false")]))
                .is_err()
        );
        assert_eq!(c.allowed_annotation_keys(), ["io.oci-volume-hook.owner"]);
    }

    #[test]
    fn idmap_by_annotation_only_where_the_configuration_chose_it() {
        let a = annotations;
        let allow = "allowed_annotations = [\"io.oci-volume-hook.ownership\"]";
        let idmap = Config::parse(&format!("ownership = \"idmap\"\n{allow}")).unwrap();
        let own = |v| idmap.settings(&a(&[("io.oci-volume-hook.ownership", v)]));
        assert_eq!(own("idmap").unwrap().ownership, Ownership::Idmap);
        assert_eq!(own("top").unwrap().ownership, Ownership::Top);
        let top = Config::parse(allow).unwrap();
        let e = format!(
            "{:#}",
            top.settings(&a(&[("io.oci-volume-hook.ownership", "idmap")]))
                .unwrap_err()
        );
        assert!(e.contains("for the configuration to choose"), "{e}");
    }

    #[test]
    fn allow_annotations_still_reads_as_before() {
        let a = annotations;
        let off = Config::parse("allow_annotations = false").unwrap();
        let e = format!(
            "{:#}",
            off.settings(&a(&[("io.oci-volume-hook.enabled", "false")]))
                .unwrap_err()
        );
        assert!(e.contains("io.oci-volume-hook.enabled"), "{e}");
        assert!(off.settings(&a(&[("unrelated", "x")])).is_ok());
        assert!(off.allowed_annotation_keys().is_empty());
        let on = Config::parse("allow_annotations = true").unwrap();
        assert_eq!(
            on.allowed_annotations,
            Config::default().allowed_annotations
        );
        assert!(
            on.settings(&a(&[("io.oci-volume-hook.owner", "process-user")]))
                .is_err(),
            "true is the default list, not everything"
        );
        let both = "allow_annotations = true\nallowed_annotations = []";
        assert!(format!("{:#}", Config::parse(both).unwrap_err()).contains("allow_annotations"));
        for bad in [
            "allowed_annotations = [\"io.oci-volume-hook.enable\"]",
            "allowed_annotations = [\"io.oci-volume-hook.*\"]",
            "allowed_annotations = [\"io.oci-volume-hook.ownership=all\"]",
            "allowed_annotations = [\"enabled\"]",
        ] {
            let e = format!("{:#}", Config::parse(bad).unwrap_err());
            assert!(
                e.contains("allowed_annotations") && !e.contains('\n'),
                "{e}"
            );
        }
    }

    #[test]
    fn the_shipped_file_parses_uncommented_and_takes_appended_keys() {
        let shipped = include_str!("../packaging/config.toml");
        let uncommented: String = shipped
            .lines()
            .map(|l| {
                l.strip_prefix('#')
                    .filter(|l| l.contains(" = "))
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(&uncommented).unwrap();
        assert_eq!(
            c.log.file.as_deref(),
            Some(Path::new("/var/log/oci-volume-hook.log"))
        );
        assert_eq!(c.pin_sources, Pin::Always);
        // An operator appends a top-level key at the end: it must stay top-level.
        let c = Config::parse(&format!("{shipped}\nruntime = \"/usr/local/sbin/runc\"\n")).unwrap();
        assert_eq!(c.runtime, "/usr/local/sbin/runc");
    }

    #[test]
    fn a_runtime_is_salvaged_from_a_file_toml_cannot_read() {
        let broken = "# ops\nruntime = \"/opt/runc/bin/runc\"  # patched\nchroots = [\"/a/*\"\n[log]\nruntime = \"/no\"\n";
        assert!(broken.parse::<toml::Table>().is_err());
        assert_eq!(
            salvage_string(broken, "runtime").as_deref(),
            Some("/opt/runc/bin/runc")
        );
        assert_eq!(
            salvage_string("runtime = '/x'\nruntime=\"/y\"", "runtime").as_deref(),
            Some("/y"),
            "the last one, as TOML would refuse but an operator means"
        );
        for none in [
            "[t]\nruntime = \"/x\"",
            "runtime = \"/x\" trailing",
            "runtime = \"a\\\\b\"",
            "runtimes = \"/x\"",
            "runtime = /x",
        ] {
            assert_eq!(salvage_string(none, "runtime"), None, "{none}");
        }
    }

    #[test]
    fn pin_sources_values() {
        for (text, want) in [
            ("true", Pin::Always),
            ("false", Pin::Never),
            ("\"always\"", Pin::Always),
            ("\"when-changeable\"", Pin::WhenChangeable),
            ("\"never\"", Pin::Never),
        ] {
            assert_eq!(
                Config::parse(&format!("pin_sources = {text}"))
                    .unwrap()
                    .pin_sources,
                want
            );
        }
        assert!(Config::parse("pin_sources = \"sometimes\"").is_err());
    }

    #[test]
    fn host_sources_unset_or_listed() {
        assert_eq!(Config::parse("").unwrap().host_sources, None);
        let c = Config::parse("host_sources = []").unwrap();
        assert_eq!(c.host_sources.as_deref(), Some(&[][..]));
        let c = Config::parse("host_sources = [\"/var/lib/kubelet/pods/*/volumes/**\"]").unwrap();
        let list = c.host_sources.unwrap();
        assert_eq!(list[0].as_str(), "/var/lib/kubelet/pods/*/volumes/**");
        for bad in ["[\"/**\"]", "[\"/a/**/b\"]", "[\"a/b\"]"] {
            let e = format!(
                "{:#}",
                Config::parse(&format!("host_sources = {bad}")).unwrap_err()
            );
            assert!(
                e.contains("host_sources") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_configmaps_host_sources_example_parses_uncommented() {
        let yaml = include_str!("../deploy/kubernetes/configmap.yaml");
        let block: String = yaml
            .lines()
            .map(str::trim_start)
            .skip_while(|l| !l.starts_with("#host_sources = ["))
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", &l[1..]))
            .collect();
        let list = Config::parse(&block).unwrap().host_sources.unwrap();
        assert_eq!(list.len(), 6, "{block}");
        let shipped = include_str!("../packaging/config.toml");
        let line = shipped
            .lines()
            .find(|l| l.starts_with("#host_sources = "))
            .unwrap();
        let packaged = Config::parse(&line[1..]).unwrap().host_sources.unwrap();
        assert_eq!(packaged, list, "the same list in both places");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::parse("seed_from_host = [\"etc/localtime\"]").is_err());
        assert!(Config::parse("seed_from_host = [\"/etc/../x\"]").is_err());
        assert!(Config::parse("ownership = \"all\"").is_err());
        assert_eq!(
            Config::parse("ownership = \"idmap\"").unwrap().ownership,
            Ownership::Idmap
        );
        assert!(Config::parse("owner = \"nobody\"").is_err());
        assert!(Config::parse("chroots = [\"relative/*\"]").is_err());
        assert!(Config::parse("[log]\ntarget = \"file\"").is_err());
        assert!(Config::parse("[log]\nlevel = \"loud\"").is_err());
    }
}
