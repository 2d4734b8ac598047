//! The operator's configuration: `/etc/oci-volume-hook/config.toml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::chroot::Pattern;

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
    /// Create a missing chroot (root:root, 0755) when the directory it would live in passes
    /// the chroot checks, as engines create a missing volume path; `false` refuses instead.
    pub create_chroots: bool,
    /// Refuse a bind source that is a chroot base, an ancestor of chroots, or a path under a
    /// base in no chroot: such a mount would hand out every tenant's chroot.
    pub refuse_chroot_bases: bool,
    pub owner: Owner,
    pub ownership: Ownership,
    /// Host files copied into a chroot when the tool creates the same path there, e.g.
    /// `/etc/localtime` into `<chroot>/etc/localtime`. The host's own symlinks are followed.
    pub seed_from_host: Vec<PathBuf>,
    /// Whether containers may change `owner`/`ownership` or disable the tool through
    /// `io.oci-volume-hook.*` annotations.
    pub allow_annotations: bool,
    /// Pin each prepared source (wrapper and precreate): bind-mount the checked inode onto a
    /// root-only staging path and point config.json there, so the runtime cannot be made to
    /// mount anything else by a symlink swapped in after the check.
    pub pin_sources: bool,
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
            owner: Owner::default(),
            ownership: Ownership::default(),
            seed_from_host: Vec::new(),
            allow_annotations: true,
            pin_sources: true,
            staging_dir: PathBuf::from(crate::staging::DEFAULT_BASE),
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

/// The annotation prefix for per-container control.
pub const ANNOTATION_PREFIX: &str = "io.oci-volume-hook.";

/// What one container gets: the configuration, adjusted by its annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub enabled: bool,
    pub owner: Owner,
    pub ownership: Ownership,
}

impl Config {
    /// Applies `io.oci-volume-hook.{enabled,owner,ownership}` annotations. An unknown key
    /// under the prefix or an unknown value is an error that names the annotation; so are
    /// such annotations when `allow_annotations` is off.
    pub fn settings(
        &self,
        annotations: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Settings> {
        let mut s = Settings {
            enabled: true,
            owner: self.owner,
            ownership: self.ownership,
        };
        for (key, value) in annotations {
            let Some(name) = key.strip_prefix(ANNOTATION_PREFIX) else {
                continue;
            };
            if !self.allow_annotations {
                bail!("annotation {key}: per-container control is off (allow_annotations = false)");
            }
            let text = value.as_str().unwrap_or_default();
            let parsed = || toml::Value::String(text.to_string());
            match name {
                "enabled" => {
                    s.enabled = match text {
                        "true" => true,
                        "false" => false,
                        _ => bail!("annotation {key}: {value} is not \"true\" or \"false\""),
                    }
                }
                "owner" => {
                    s.owner = Owner::deserialize(parsed())
                        .map_err(|_| anyhow::anyhow!("annotation {key}: {value} is not \"container-root\" or \"process-user\""))?
                }
                "ownership" => {
                    s.ownership = Ownership::deserialize(parsed()).map_err(|_| {
                        anyhow::anyhow!("annotation {key}: {value} is not \"none\", \"top\" or \"recursive-on-mismatch\"")
                    })?
                }
                _ => bail!("annotation {key} is unknown (known: {ANNOTATION_PREFIX}enabled, owner, ownership)"),
            }
        }
        Ok(s)
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
    fn annotations_adjust_settings() {
        let c = Config::parse("ownership = \"top\"").unwrap();
        let a = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                .collect()
        };
        let s = c
            .settings(&a(&[
                ("io.oci-volume-hook.owner", "process-user"),
                ("other", "x"),
            ]))
            .unwrap();
        assert_eq!(
            (s.enabled, s.owner, s.ownership),
            (true, Owner::ProcessUser, Ownership::Top)
        );
        let s = c
            .settings(&a(&[
                ("io.oci-volume-hook.ownership", "recursive-on-mismatch"),
                ("io.oci-volume-hook.enabled", "false"),
            ]))
            .unwrap();
        assert_eq!(
            (s.enabled, s.ownership),
            (false, Ownership::RecursiveOnMismatch)
        );
        for bad in [
            ("io.oci-volume-hook.owner", "root"),
            ("io.oci-volume-hook.enabled", "yes"),
            ("io.oci-volume-hook.ownr", "top"),
        ] {
            let e = format!("{:#}", c.settings(&a(&[bad])).unwrap_err());
            assert!(e.contains(bad.0), "{e}");
        }
        let off = Config::parse("allow_annotations = false").unwrap();
        assert!(
            off.settings(&a(&[("io.oci-volume-hook.enabled", "false")]))
                .is_err()
        );
        assert!(off.settings(&a(&[("unrelated", "x")])).is_ok());
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::parse("seed_from_host = [\"etc/localtime\"]").is_err());
        assert!(Config::parse("seed_from_host = [\"/etc/../x\"]").is_err());
        assert!(Config::parse("ownership = \"all\"").is_err());
        assert!(Config::parse("owner = \"nobody\"").is_err());
        assert!(Config::parse("chroots = [\"relative/*\"]").is_err());
        assert!(Config::parse("[log]\ntarget = \"file\"").is_err());
        assert!(Config::parse("[log]\nlevel = \"loud\"").is_err());
    }
}
