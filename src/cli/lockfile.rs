//! `bramble.lock` in the building commands: the lock's pins are applied to every evaluation
//! (so a pin is part of its fetch derivation and of every build key depending on it),
//! `--locked` (or `CI=true`) refuses fetches pinned nowhere, and after a build every fetch
//! that was not pinned is recorded, with a line on stderr for each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::Splice;
use crate::store::Hash;

use crate::engine::fetch::FetchRecord;
use crate::project::Evaluation;
use crate::project::lock::{self, LOCK_FILE, Lock, Pinned};
use crate::store::local::LocalStore;

use super::CliError;

/// The pins of one evaluation and where its lock file is.
#[derive(Debug, Clone)]
pub struct Pins {
    pub lock_path: PathBuf,
    pub pinned: Pinned,
    /// The graph recorded for each DAO, by derivation hash.
    pub dao_graphs: Arc<HashMap<Hash, Hash>>,
}

/// Whether unpinned fetches are refused: `--locked`, or `CI=true` in the environment.
pub fn locked(flag: bool) -> bool {
    flag || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn lock_error(e: &lock::LockError) -> CliError {
    CliError::diagnosed(e)
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
    let dao_graphs = Arc::new(lock.dao_graphs());
    Ok((
        evaluation,
        Pins {
            lock_path,
            pinned,
            dao_graphs,
        },
    ))
}

/// Refuse unpinned fetches.
pub fn require_pinned(pins: &Pins) -> Result<(), CliError> {
    Ok(lock::require_pinned(&pins.pinned)?)
}

/// Record every unpinned fetch that ran or is realised, and the graph of every DAO spliced
/// that has none recorded, saying so on stderr.
pub fn record(
    pins: &Pins,
    records: &[FetchRecord],
    splices: &[Splice],
    store: &LocalStore,
) -> Result<(), CliError> {
    let mut fetches_recorded = false;
    if !pins.pinned.unpinned.is_empty() {
        let recorded = lock::record(&pins.lock_path, &pins.pinned, records, store)
            .map_err(|e| lock_error(&e))?;
        for spec in &recorded {
            eprintln!("recorded hash of {spec} in {LOCK_FILE}");
        }
        fetches_recorded = !recorded.is_empty();
    }
    let mut daos: Vec<(Hash, String, Hash)> = splices
        .iter()
        .filter(|s| !pins.dao_graphs.contains_key(&s.dao))
        .map(|s| (s.dao, s.name.clone(), s.graph))
        .collect();
    if daos.is_empty() {
        return Ok(());
    }
    if fetches_recorded {
        // The fetches just pinned rename every derivation depending on them, DAOs included:
        // record each DAO under the hash the next evaluation will give it.
        let lock = Lock::read(&pins.lock_path).map_err(|e| lock_error(&e))?;
        let renamed = lock::apply(&pins.pinned.derivations, &lock)
            .map_err(|e| super::fetch::fetch_error(&e))?;
        for (drv, _, _) in &mut daos {
            *drv = renamed.rename(*drv);
        }
    }
    let recorded = lock::record_daos(&pins.lock_path, &daos).map_err(|e| lock_error(&e))?;
    for name in recorded {
        eprintln!("recorded the graph of DAO `{name}` in {LOCK_FILE}");
    }
    Ok(())
}
