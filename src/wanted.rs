//! What a container needs at a mount's destination: the type, and what decided it. Below
//! both the planner and its refusals, which name it.

use std::fmt;
use std::path::PathBuf;

/// What the container needs at a mount's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Want {
    File,
    Dir,
    /// The image has nothing there: an existing source of either type will do, a missing
    /// one becomes a directory, as the engines do.
    Any,
}

/// The wanted type and where it comes from: the image, or the host's `seed_from_host` file
/// when the image has nothing at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub want: Want,
    pub destination: PathBuf,
    /// The host file that decided the type (`seed_from_host`).
    pub seed: Option<PathBuf>,
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dest = self.destination.display();
        match (self.want, &self.seed) {
            (Want::Any, _) => write!(f, "the image has nothing at {dest}, so a directory"),
            (Want::File, None) => write!(f, "the image has a file at {dest}"),
            (Want::Dir, None) => write!(f, "the image has a directory at {dest}"),
            (want, Some(h)) => write!(
                f,
                "the image has nothing at {dest} and the host's {} (seed_from_host) is a {}",
                h.display(),
                if want == Want::File {
                    "file"
                } else {
                    "directory"
                }
            ),
        }
    }
}
