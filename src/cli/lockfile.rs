//! `bramble.lock` in the building commands: the lock's pins are applied to every evaluation
//! (so a pin is part of its fetch derivation and of every build key depending on it),
//! `--locked` (or `CI=true`) refuses fetches pinned nowhere, and after a build every fetch
//! that was not pinned is recorded, with a line on stderr for each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::build::fetch::FetchRecord;
use crate::project::lock::{self, LOCK_FILE, Lock, Pinned};
use crate::store::local::LocalStore;
use crate::store::{Derivation, Hash};

use super::CliError;
use super::session::Request;

/// The pins of one evaluation and where its lock file is.
#[derive(Debug, Clone)]
pub struct Pins {
    pub lock_path: PathBuf,
    pub pinned: Pinned,
}

/// Whether unpinned fetches are refused: `--locked`, or `CI=true` in the environment.
pub fn locked(flag: bool) -> bool {
    flag || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn lock_error(e: &lock::LockError) -> CliError {
    CliError::user(crate::store::local::error_chain(e)).with_hint(format!(
        "fix or delete `{LOCK_FILE}`; a build records it again"
    ))
}

/// Apply `<project_dir>/bramble.lock` to `request`: fetch derivations get their pins, and
/// every derivation and root is renamed accordingly.
pub fn pin(request: Request, project_dir: &Path) -> Result<(Request, Pins), CliError> {
    let lock_path = project_dir.join(LOCK_FILE);
    let lock = Lock::read(&lock_path).map_err(|e| lock_error(&e))?;
    let graph: BTreeMap<Hash, Derivation> = request
        .derivations
        .iter()
        .map(|(h, d)| (*h, (**d).clone()))
        .collect();
    let pinned = lock::apply(&graph, &lock).map_err(|e| super::fetch::fetch_error(&e))?;
    let renamed = Request {
        derivations: pinned
            .derivations
            .iter()
            .map(|(h, d)| (*h, Arc::new(d.clone())))
            .collect(),
        roots: request.roots.iter().map(|r| pinned.rename(*r)).collect(),
    };
    Ok((renamed, Pins { lock_path, pinned }))
}

/// Refuse unpinned fetches.
pub fn require_pinned(pins: &Pins) -> Result<(), CliError> {
    lock::require_pinned(&pins.pinned)
        .map_err(|e| CliError::user(e.to_string()).with_hint(e.hint()))
}

/// Record every unpinned fetch that ran or is realised, saying so on stderr.
pub fn record(pins: &Pins, records: &[FetchRecord], store: &LocalStore) -> Result<(), CliError> {
    if pins.pinned.unpinned.is_empty() {
        return Ok(());
    }
    let recorded =
        lock::record(&pins.lock_path, &pins.pinned, records, store).map_err(|e| lock_error(&e))?;
    for spec in recorded {
        eprintln!("recorded hash of {spec} in {LOCK_FILE}");
    }
    Ok(())
}
