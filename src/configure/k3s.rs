//! `configure containerd --k3s`: k3s and RKE2 write containerd's config.toml afresh at every
//! start, from a Go template when one is there (`config.toml.tmpl`, or `config-v3.toml.tmpl`
//! for containerd 2.x). An edit of config.toml would be lost: the handler goes into the
//! template, after k3s's own `{{ template "base" . }}`, between marks that `--remove` finds.
//! A template that does not extend the base one is the operator's whole file: it is left
//! alone and the block to add is printed instead.

use std::path::Path;

use anyhow::{Result, anyhow};
use toml_edit::{DocumentMut, Item};

use super::containerd::{self, Request, Version};
use super::{Change, read_optional, replace_file, toml_error, under, wrapper_runtime};

/// Where k3s writes containerd's configuration (RKE2: /var/lib/rancher/rke2/...).
pub const DEFAULT_PATH: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml";
/// k3s's base configuration, which a template extends (k3s v1.24.17, v1.27.5, v1.28.1 on).
const BASE: &str = "{{ template \"base\" . }}";
const BEGIN: &str =
    "# BEGIN oci-volume-hook (`oci-volume-hook configure containerd --k3s --remove` takes it away)";
const END: &str = "# END oci-volume-hook";
const TEMPLATES: [&str; 2] = ["config.toml.tmpl", "config-v3.toml.tmpl"];

pub fn configure(req: &Request) -> Result<Vec<Change>> {
    containerd::check_name(req.name)?;
    let dir = req.path.parent().unwrap_or(Path::new("/"));
    if req.remove {
        let mut changes = Vec::new();
        for name in TEMPLATES {
            changes.extend(take_back(req.root, &dir.join(name))?);
        }
        return Ok(changes);
    }
    let generated = read_optional(&under(req.root, req.path)?)?.ok_or_else(|| {
        anyhow!(
            "{} does not exist: start k3s (or RKE2) once so that it writes containerd's configuration; nothing changed",
            req.path.display()
        )
    })?;
    let doc: DocumentMut = generated.parse().map_err(|e| toml_error(req.path, &e))?;
    let version = containerd::version_of(&doc, req.path)?;
    let template = dir.join(match version {
        Version::V2 => TEMPLATES[0],
        Version::V3 => TEMPLATES[1],
    });
    let carried = containerd::operator_runtime(&doc, version.plugin(), req);
    let plan = wrapper_runtime::plan(req.root, req.config, carried.as_deref())?;
    let block = block(&doc, version, req)?;
    let file = under(req.root, &template)?;
    let original = read_optional(&file)?;
    let text = match original.as_deref() {
        None => format!("{BASE}\n\n{block}"),
        Some(old) => match without_block(old) {
            Some(rest) => format!("{}\n\n{block}", rest.trim_end()),
            None if old.contains(BASE) => format!("{}\n\n{block}", old.trim_end()),
            None => return Ok(print_instead(&template, &block)),
        },
    };
    let mut changes = Vec::new();
    if original.as_deref() != Some(text.as_str()) {
        let backup = replace_file(&file, &text, original.as_deref().map(str::as_bytes))?;
        changes.push(Change::Written {
            path: template,
            backup,
        });
    }
    changes.extend(plan.apply()?);
    Ok(changes)
}

/// The handler's tables as k3s's template takes them, between the marks, copied from the
/// runc handler k3s generated (SystemdCgroup and the rest as this node has them).
fn block(generated: &DocumentMut, version: Version, req: &Request) -> Result<String> {
    let mut runtimes = generated.clone();
    let runtimes = containerd::runtimes_mut(runtimes.as_table_mut(), version.plugin(), req.path)?;
    let handler = containerd::handler(runtimes, req.name, req.wrapper, (req.root, req.path))?;
    let mut d = DocumentMut::new();
    containerd::runtimes_mut(d.as_table_mut(), version.plugin(), req.path)?
        .insert(req.name, Item::Table(handler));
    Ok(format!(
        "{BEGIN}{}{END}\n",
        d.to_string().trim_end_matches(' ')
    ))
}

/// The template without our block, or None when it holds none.
fn without_block(text: &str) -> Option<String> {
    let start = text.find(BEGIN)?;
    let end = text[start..].find(END)? + start + END.len();
    let tail = text[end..].strip_prefix('\n').unwrap_or(&text[end..]);
    Some(format!("{}\n{tail}", text[..start].trim_end()))
}

fn take_back(root: &Path, template: &Path) -> Result<Vec<Change>> {
    let file = under(root, template)?;
    let Some(old) = read_optional(&file)? else {
        return Ok(vec![]);
    };
    let Some(rest) = without_block(&old) else {
        return Ok(vec![]);
    };
    // A template that held only the base and our block was ours: it goes.
    if rest.trim() == BASE {
        std::fs::remove_file(&file).map_err(|e| anyhow!("removing {}: {e}", file.display()))?;
        return Ok(vec![Change::Removed {
            path: template.to_path_buf(),
        }]);
    }
    let backup = replace_file(&file, rest.trim_start_matches('\n'), Some(old.as_bytes()))?;
    Ok(vec![Change::Written {
        path: template.to_path_buf(),
        backup,
    }])
}

fn print_instead(template: &Path, block: &str) -> Vec<Change> {
    let mut out = vec![Change::Note(format!(
        "{} does not extend k3s's base template ({BASE}): left unchanged; add these lines to it, then restart k3s:",
        template.display()
    ))];
    out.extend(block.lines().map(|l| Change::Note(l.to_string())));
    out
}
