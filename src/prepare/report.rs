//! Wording a container's refusal: one line for the engine (the first refused mount), every
//! other refusal in the log, a cause shared by several mounts (their chroot) once, with how
//! many it concerns.

use super::MountPlan;
use crate::refusal::{Refusal, Refused};

/// The error refusing the container, if any mount is refused.
pub(super) fn refusal(plans: &[MountPlan]) -> Option<Refused> {
    let refused: Vec<(&MountPlan, &Refusal)> = plans
        .iter()
        .filter_map(|p| Some((p, p.action.refusal()?)))
        .collect();
    let (first, first_refusal) = *refused.first()?;
    let chroot_of = |p: &MountPlan| p.in_chroot().map(|m| m.chroot.clone());
    // Mounts refused for their chroot's sake, with the same words.
    let same_cause = |p: &MountPlan, r: &Refusal| {
        if !r.is_the_chroots() {
            return 0;
        }
        refused
            .iter()
            .filter(|(q, _)| chroot_of(q).is_some() && chroot_of(q) == chroot_of(p))
            .filter(|(q, _)| q.reason == p.reason)
            .count()
    };
    let mut seen = Vec::new();
    let mut lines = Vec::new();
    for &(p, r) in &refused {
        let n = same_cause(p, r);
        if n > 0 {
            let key = (chroot_of(p), p.reason.as_str());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
        }
        lines.push(match n {
            n if n > 1 => format!(
                "{}: {} (and {} other mounts in it)",
                p.name(),
                p.reason,
                n - 1
            ),
            _ => format!("{}: {}", p.name(), p.reason),
        });
    }
    // The first is the container's refusal line, which the caller reports and logs.
    for l in &lines[1..] {
        tracing::error!("{l}");
    }
    Some(Refused {
        line: lines.swap_remove(0),
        index: first.index,
        refusal: first_refusal.clone(),
    })
}
