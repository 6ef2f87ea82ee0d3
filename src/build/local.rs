//! [`BuildStore`] for the on-disk [`LocalStore`].
//!
//! The build lock of a build key is the store's lock file named after the key's hash (the
//! namespace store-path locks use; a key and a path hash colliding would need a sha256
//! collision). Inputs are pinned with [`LocalStore::hold`] while a build runs, so a
//! concurrent `bramble gc` keeps them and their closures.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::local::{AddOutput, LocalStore, PathLock};
use crate::store::{Hash, StorePath};

use super::{BuildStore, StagedOutput, StoreError};

/// Name of the pseudo path whose lock is a build key's lock.
const BUILD_LOCK_NAME: &str = "build";

impl BuildStore for LocalStore {
    type Lock = PathLock;

    fn realisation(&self, key: Hash, output: &str) -> Result<Option<StorePath>, StoreError> {
        LocalStore::realisation(self, key, output).map_err(StoreError::new)
    }

    fn realisations(&self, wanted: &[(Hash, &str)]) -> Result<Vec<Option<StorePath>>, StoreError> {
        LocalStore::realisations(self, wanted).map_err(StoreError::new)
    }

    fn lock_build(&self, key: Hash) -> Result<PathLock, StoreError> {
        let pseudo = StorePath::new(key, BUILD_LOCK_NAME).expect("a constant valid name");
        self.lock(&pseudo).map_err(StoreError::new)
    }

    fn pin(&self, paths: &BTreeSet<StorePath>) -> Result<Vec<PathLock>, StoreError> {
        paths
            .iter()
            .map(|p| self.hold(p).map_err(StoreError::new))
            .collect()
    }

    fn closure(&self, paths: &BTreeSet<StorePath>) -> Result<BTreeSet<StorePath>, StoreError> {
        let paths: Vec<StorePath> = paths.iter().cloned().collect();
        LocalStore::closure(self, &paths).map_err(StoreError::new)
    }

    fn add_output(
        &self,
        output: &StagedOutput,
        drv: Hash,
        inputs: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        LocalStore::add_output(
            self,
            &AddOutput {
                built: &output.path,
                placeholder: &output.placeholder,
                name: output.placeholder.name(),
                candidate_refs: inputs,
                deriver: Some(drv),
            },
        )
        .map_err(StoreError::new)
    }

    fn register(
        &self,
        key: Hash,
        _drv: Hash,
        outputs: &BTreeMap<String, StorePath>,
    ) -> Result<(), StoreError> {
        for (output, path) in outputs {
            self.register_realisation(key, output, path)
                .map_err(StoreError::new)?;
        }
        Ok(())
    }
}
