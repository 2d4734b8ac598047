//! What both rewriting entry points (the runtime wrapper and podman's precreate) share:
//! prepare every source of a container, decide which are pinned, and point config.json at
//! what was prepared.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::config::{Config, Pin};
use crate::prepare::{Action, Mode, MountPlan, Preparer};
use crate::resolve::Node;
use crate::spec::{self, View};

/// One checked source the runtime must be handed as a mount of this very inode.
pub struct Pinned {
    pub index: usize,
    pub node: Node,
}

/// The outcome of [`prepare`]: the plans, and the sources still to be pinned.
pub struct Prepared {
    pub plans: Vec<MountPlan>,
    pub pins: Vec<Pinned>,
}

/// Prepares the sources of `doc`. Sources that are not pinned and were reached through a
/// symlink are rewritten in `doc` to their path resolved inside the chroot; pinned ones are
/// returned, for the caller to stage and then [`point_at`].
pub fn prepare(config: &Config, view: &View, doc: &mut Value) -> Result<Prepared> {
    let mut preparer = Preparer::new(config, view, Mode::Rewrite);
    let plans = preparer.prepare()?;
    let mut pins = Vec::new();
    for (index, node) in preparer.take_checked() {
        let plan = plans.iter().find(|p| p.index == index);
        let pin = match config.pin_sources {
            Pin::Always => true,
            Pin::WhenChangeable => plan.is_none_or(|p| preparer.could_be_swapped(p)),
            Pin::Never => false,
        };
        if pin {
            pins.push(Pinned { index, node });
        }
    }
    for p in plans
        .iter()
        .filter(|p| !pins.iter().any(|x| x.index == p.index))
    {
        if let Some(resolved) = &p.resolved_source {
            spec::set_source(doc, p.index, resolved).with_context(|| p.name())?;
            tracing::info!("{}: source rewritten to {}", p.name(), resolved.display());
        }
    }
    log_done(&plans);
    Ok(Prepared { plans, pins })
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
    let changed = plans.iter().filter(|p| p.action != Action::Nothing).count();
    let in_chroots = plans.iter().filter(|p| p.chroot.is_some()).count();
    tracing::info!("{in_chroots} mount(s) in chroots, {changed} changed");
}
