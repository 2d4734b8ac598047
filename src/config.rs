//! The operator's configuration: `/etc/oci-volume-hook/config.toml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::chroot::Pattern;

/// Where the configuration is read from when neither `--config` nor the environment says.
pub const DEFAULT_PATH: &str = "/etc/oci-volume-hook/config.toml";
/// Environment variable that overrides [`DEFAULT_PATH`]; it reaches a runtime wrapper through
/// containerd's environment and a podman hook through the hook's `env`.
pub const ENV_PATH: &str = "OCI_VOLUME_HOOK_CONFIG";

/// Whose host ids a prepared source is given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// The host ids that container uid 0 / gid 0 map to.
    #[default]
    ContainerRoot,
    /// The host ids that the container's `process.user` uid/gid map to.
    ProcessUser,
}

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
    pub file: Option<PathBuf>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            target: LogTarget::Auto,
            file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Patterns of tenant chroots; `*` matches exactly one path component.
    pub chroots: Vec<Pattern>,
    pub owner: Owner,
    /// The real OCI runtime the wrapper execs: a name looked up on PATH, or an absolute path.
    pub runtime: String,
    pub log: Log,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chroots: vec![Pattern::parse("/containerdata/*").expect("valid default pattern")],
            owner: Owner::default(),
            runtime: "runc".into(),
            log: Log::default(),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", one_line(&e.to_string())))?;
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
        if config.runtime.is_empty() {
            bail!("runtime must not be empty");
        }
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
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("chroots = [\"/a/*\"]\nownr = \"process-user\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("ownr"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let err = Config::parse("[log]\nlevl = \"info\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("levl"));
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

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::parse("owner = \"nobody\"").is_err());
        assert!(Config::parse("chroots = [\"relative/*\"]").is_err());
        assert!(Config::parse("[log]\ntarget = \"file\"").is_err());
        assert!(Config::parse("[log]\nlevel = \"loud\"").is_err());
    }
}
