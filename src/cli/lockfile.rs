//! `bramble.lock` in the building commands: the lock's pins are applied to every evaluation
//! (so a pin is part of its fetch derivation and of every build key depending on it),
//! `--locked` (or `CI=true`) refuses fetches pinned nowhere, and after a build every fetch
//! that was not pinned is recorded, with a line on stderr for each.

use std::path::{Path, PathBuf};

use crate::build::fetch::FetchRecord;
use crate::project::Evaluation;
use crate::project::lock::{self, LOCK_FILE, Lock, Pinned};
use crate::store::local::LocalStore;

use super::CliError;

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

/// Apply `<project_dir>/bramble.lock` to an evaluation: fetch derivations get their pins,
/// and every derivation, root, `run()` value and test is renamed accordingly.
pub fn pin(mut evaluation: Evaluation, project_dir: &Path) -> Result<(Evaluation, Pins), CliError> {
    let lock_path = project_dir.join(LOCK_FILE);
    let lock = Lock::read(&lock_path).map_err(|e| lock_error(&e))?;
    let pinned =
        lock::apply(&evaluation.derivations, &lock).map_err(|e| super::fetch::fetch_error(&e))?;
    if !pinned.renamed.is_empty() {
        evaluation.derivations = pinned.derivations.clone();
        for root in &mut evaluation.roots {
            for d in &mut root.derivations {
                *d = pinned.rename(*d);
            }
            if let Some(run) = &mut root.run {
                run.derivation = pinned.rename(run.derivation);
            }
        }
        for test in &mut evaluation.tests {
            test.derivation = pinned.rename(test.derivation);
        }
    }
    Ok((evaluation, Pins { lock_path, pinned }))
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
