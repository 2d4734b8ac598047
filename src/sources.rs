//! What both rewriting entry points (the runtime wrapper and podman's precreate) share:
//! prepare every source of a container, decide which are pinned, and point config.json at
//! what was prepared.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::config::{Config, Pin};
use crate::prepare::{Caller, IdmapBy, MountPlan, Prepared, Preparer};
use crate::resolve::{Kind, Node};
use crate::spec::{self, View};

/// One checked source the runtime must be handed as a mount of this very inode.
pub struct Pinned {
    pub index: usize,
    pub node: Node,
}

/// The outcome of [`prepare`]: the plans, and the sources still to be pinned.
pub struct Outcome {
    pub plans: Vec<MountPlan>,
    pub pins: Vec<Pinned>,
    /// `doc` was changed (a source rewritten, an idmap added).
    pub edited: bool,
}

impl Outcome {
    /// What the staging functions take: each pin's mount index, descriptor and kind.
    pub fn staging_pins(&self) -> Vec<(usize, &OwnedFd, Kind)> {
        self.pins
            .iter()
            .map(|p| (p.index, &p.node.fd, p.node.kind))
            .collect()
    }

    /// The name of the mount at `index` (`mount DEST (source SRC)`), for an error line.
    pub fn name_of(&self, index: usize) -> String {
        self.plans
            .iter()
            .find(|p| p.index == index)
            .map_or_else(|| format!("mounts[{index}]"), MountPlan::name)
    }
}

/// Prepares the sources of `doc`. Sources that are not pinned and were reached through a
/// symlink are rewritten in `doc` to their path resolved inside the chroot; pinned ones are
/// returned, for the caller to stage and then [`point_at`]. `runtime` is the runtime that
/// will mount them, when known: `ownership = "idmap"` asks it whether it can idmap.
pub fn prepare(
    config: &Config,
    view: &View,
    doc: &mut Value,
    runtime: Option<&Path>,
) -> Result<Outcome> {
    let mut preparer =
        Preparer::new(config, view, Caller::Rewrite).with_runtime(runtime.map(Path::to_path_buf));
    let mut outcome = Outcome {
        plans: Vec::new(),
        pins: Vec::new(),
        edited: false,
    };
    for Prepared { plan, node } in preparer.prepare()? {
        let pin = match (&node, plan.in_chroot(), config.pin_sources) {
            (None, _, _) | (_, _, Pin::Never) => false,
            (Some(_), Some(m), Pin::WhenChangeable) => preparer.could_be_swapped(m),
            (Some(_), _, _) => true,
        };
        if plan
            .in_chroot()
            .is_some_and(|m| m.idmap.as_ref().is_some_and(|i| i.by == IdmapBy::Ownership))
        {
            spec::add_idmap(doc, plan.index).with_context(|| plan.name())?;
            outcome.edited = true;
        }
        let resolved = plan.in_chroot().and_then(|m| m.resolved_source.as_ref());
        match (node, resolved) {
            (Some(node), _) if pin => outcome.pins.push(Pinned {
                index: plan.index,
                node,
            }),
            (_, Some(resolved)) => {
                spec::set_source(doc, plan.index, resolved).with_context(|| plan.name())?;
                outcome.edited = true;
                tracing::info!(
                    "{}: source rewritten to {}",
                    plan.name(),
                    resolved.display()
                );
            }
            _ => {}
        }
        outcome.plans.push(plan);
    }
    log_idmap(&outcome.plans);
    log_done(&outcome.plans);
    Ok(outcome)
}

/// One line per reason why `ownership = "idmap"` fell back to chowning, and one for the
/// mounts it made idmapped.
pub fn log_idmap(plans: &[MountPlan]) {
    let mut reasons: Vec<&str> = Vec::new();
    for m in plans.iter().filter_map(MountPlan::in_chroot) {
        if let Some(why) = m.idmap_fallback.as_deref().filter(|w| !reasons.contains(w)) {
            reasons.push(why);
        }
    }
    for why in reasons {
        tracing::warn!("ownership = idmap falls back to chown (recursive-on-mismatch): {why}");
    }
    let added = plans
        .iter()
        .filter_map(MountPlan::in_chroot)
        .filter(|m| m.idmap.as_ref().is_some_and(|i| i.by == IdmapBy::Ownership))
        .count();
    if added > 0 {
        tracing::info!(
            "{added} mount(s) made idmapped with the container's mappings: nothing below them chowned"
        );
    }
}

/// Whether any bind source lies in a chroot (so that preparing it may pin).
pub fn any_in_chroots(config: &Config, view: &View) -> bool {
    view.binds.iter().any(|b| {
        b.source.is_absolute()
            && crate::chroot::locate(&config.chroots, &b.source)
                .map_or(true, |inside| inside.is_some())
    })
}

/// Points each staged mount of `doc` at its staging path.
pub fn point_at(doc: &mut Value, staged: &[(usize, PathBuf)], under: &Path) -> Result<()> {
    for (index, path) in staged {
        spec::set_source(doc, *index, path)?;
    }
    if !staged.is_empty() {
        tracing::info!(
            "{} source(s) pinned under {}",
            staged.len(),
            under.display()
        );
    }
    Ok(())
}

pub fn log_done(plans: &[MountPlan]) {
    let changed = plans.iter().filter(|p| !p.action.is_nothing()).count();
    let in_chroots = plans.iter().filter(|p| p.in_chroot().is_some()).count();
    tracing::info!("{in_chroots} mount(s) in chroots, {changed} changed");
}
