//! `oci-volume-hook configure docker`: registers the runtime wrapper in dockerd's
//! daemon.json, keeping every other key, with a backup, idempotently.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use super::{Outcome, RUNTIME_NAME};

pub const DEFAULT_DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// Adds (or with `remove`, takes away) the `oci-volume` runtime running `wrapper`; with
/// `default`, also makes it dockerd's `default-runtime`.
pub fn docker(path: &Path, wrapper: &Path, default: bool, remove: bool) -> Result<Outcome> {
    let original = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut doc: Value = match &original {
        Some(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => json!({}),
        Some(bytes) => serde_json::from_slice(bytes)
            .with_context(|| format!("{} is not valid JSON; left unchanged", path.display()))?,
        None => json!({}),
    };
    let Some(obj) = doc.as_object_mut() else {
        bail!("{} is not a JSON object; left unchanged", path.display())
    };
    let before = obj.clone();
    if remove {
        if let Some(Value::Object(runtimes)) = obj.get_mut("runtimes") {
            runtimes.remove(RUNTIME_NAME);
            if runtimes.is_empty() {
                obj.remove("runtimes");
            }
        }
        if obj.get("default-runtime").and_then(Value::as_str) == Some(RUNTIME_NAME) {
            obj.remove("default-runtime");
        }
    } else {
        let runtimes = obj
            .entry("runtimes")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(runtimes) = runtimes.as_object_mut() else {
            bail!(
                "{}: \"runtimes\" is not an object; left unchanged",
                path.display()
            )
        };
        runtimes.insert(RUNTIME_NAME.into(), json!({ "path": wrapper }));
        if default {
            obj.insert("default-runtime".into(), json!(RUNTIME_NAME));
        }
    }
    // Removing from a file that does not exist changes nothing: never create one for that.
    if *obj == before && (original.is_some() || remove) {
        return Ok(Outcome::Unchanged);
    }
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    let backup = super::replace_file(path, &text, original.as_deref())?;
    Ok(Outcome::Written { backup })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_keeps_and_removes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("daemon.json");
        std::fs::write(&p, r#"{"userns-remap": "default", "runtimes": {"other": {"path": "/x"}}, "log-level": "warn"}"#).unwrap();
        let w = Path::new("/usr/bin/oci-volume-runtime");
        assert!(matches!(
            docker(&p, w, true, false).unwrap(),
            Outcome::Written { backup: Some(_) }
        ));
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["userns-remap"], "default");
        assert_eq!(v["log-level"], "warn");
        assert_eq!(v["runtimes"]["other"]["path"], "/x");
        assert_eq!(
            v["runtimes"]["oci-volume"]["path"],
            "/usr/bin/oci-volume-runtime"
        );
        assert_eq!(v["default-runtime"], "oci-volume");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["userns-remap", "runtimes", "log-level", "default-runtime"],
            "order kept"
        );
        assert_eq!(docker(&p, w, true, false).unwrap(), Outcome::Unchanged);
        docker(&p, w, false, true).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert!(v.get("default-runtime").is_none());
        assert!(v["runtimes"].get("oci-volume").is_none());
        assert_eq!(v["runtimes"]["other"]["path"], "/x");
    }

    #[test]
    fn invalid_json_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("daemon.json");
        std::fs::write(&p, "{\"a\": ").unwrap();
        let e = format!(
            "{:#}",
            docker(&p, Path::new("/w"), false, false).unwrap_err()
        );
        assert!(e.contains("not valid JSON"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\": ");
        std::fs::write(&p, "[1]").unwrap();
        assert!(docker(&p, Path::new("/w"), false, false).is_err());
        std::fs::write(&p, "{\"runtimes\": 3}").unwrap();
        assert!(docker(&p, Path::new("/w"), false, false).is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"runtimes\": 3}");
    }

    #[test]
    fn a_missing_file_is_created() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("docker/daemon.json");
        assert_eq!(
            docker(&p, Path::new("/w"), false, false).unwrap(),
            Outcome::Written { backup: None }
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v, json!({"runtimes": {"oci-volume": {"path": "/w"}}}));
    }
}
