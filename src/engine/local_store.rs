//! [`BuildStore`] for the on-disk [`LocalStore`].
//!
//! The build lock of a build key is [`LocalStore::lock_key`]: one byte of a shared lock
//! file, so a build creates no lock file of its own. Inputs are pinned as with
//! [`LocalStore::hold`] ([`LocalStore::hold_closure`]) while a build runs, so a concurrent
//! `bramble gc` keeps them and their closures.
//!
//! A build's store work is two calls: [`BuildStore::start_build`] (build lock, recheck in
//! one read transaction, pins, then the input closure in one read transaction that also
//! checks every pinned input is still valid) and [`BuildStore::finish_build`]
//! ([`LocalStore::add_outputs`]: the output paths and the realisations registered in one
//! write transaction).

use std::collections::{BTreeMap, BTreeSet};

use crate::store::local::{AddOutput, KeyLock, LocalStore, PathLock};
use crate::store::{Hash, StorePath};

use super::dao::DOCUMENT_FILE;
use super::{BuildStart, BuildStore, StagedOutput, StoreError};

/// A lock the build engine holds on a [`LocalStore`]: a build key's, or a pinned input's.
#[derive(Debug)]
pub enum LocalLock {
    Key(KeyLock),
    Path(PathLock),
}

impl BuildStore for LocalStore {
    type Lock = LocalLock;

    fn realisations(&self, wanted: &[(Hash, &str)]) -> Result<Vec<Option<StorePath>>, StoreError> {
        Ok(LocalStore::realisations(self, wanted)?)
    }

    fn start_build(
        &self,
        key: Hash,
        outputs: &[String],
        inputs: &BTreeSet<StorePath>,
        recheck: bool,
    ) -> Result<BuildStart<LocalLock>, StoreError> {
        let lock = self.lock_key(key)?;
        if recheck && let Some(found) = realised(self, key, outputs)? {
            return Ok(BuildStart::Realised(found));
        }
        let (pins, closure) = self.hold_closure(inputs)?;
        Ok(BuildStart::Build {
            lock: LocalLock::Key(lock),
            pins: pins.into_iter().map(LocalLock::Path).collect(),
            closure,
        })
    }

    fn finish_build(
        &self,
        key: Hash,
        drv: Hash,
        outputs: &[StagedOutput],
        inputs: &BTreeSet<StorePath>,
        register: bool,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        // Outputs already in the store (a fetch whose result the store holds) are registered
        // as they are; the others are added.
        let (stored, added): (Vec<&StagedOutput>, Vec<&StagedOutput>) =
            outputs.iter().partition(|o| o.stored.is_some());
        let adds: Vec<AddOutput<'_>> = added
            .iter()
            .map(|output| add_output(output, drv, inputs))
            .collect();
        let names: Vec<&str> = added.iter().map(|o| o.name.as_str()).collect();
        let realise = register.then_some((key, names.as_slice()));
        let mut paths: BTreeMap<String, StorePath> = if added.is_empty() {
            BTreeMap::new()
        } else {
            let paths = self.add_outputs(&adds, realise)?;
            names.iter().map(|n| (*n).to_owned()).zip(paths).collect()
        };
        for output in stored {
            let path = output.stored.clone().expect("partitioned on `stored`");
            if register {
                self.register_realisation(key, &output.name, &path)?;
            }
            paths.insert(output.name.clone(), path);
        }
        Ok(paths)
    }

    fn closure(&self, paths: &BTreeSet<StorePath>) -> Result<BTreeSet<StorePath>, StoreError> {
        let paths: Vec<StorePath> = paths.iter().cloned().collect();
        Ok(LocalStore::closure(self, &paths)?)
    }

    fn read_document(&self, output: &StorePath, limit: usize) -> Result<Vec<u8>, StoreError> {
        use rustix::fs::{FileType, Mode, OFlags};
        use std::io::Read;
        let host = self.host_path(output);
        let io = |what: &str, e: std::io::Error| StoreError::Document {
            what: what.to_owned(),
            path: host.clone(),
            source: e,
        };
        let not_a_document = |problem: String| StoreError::NotADocument {
            path: host.clone(),
            problem,
        };
        // Store objects are read-only, but open without following links all the same.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&host, flags, Mode::empty())
            .map_err(|e| io("cannot open", e.into()))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| io("cannot stat", e.into()))?;
        let fd = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => fd,
            FileType::Directory => rustix::fs::openat(&fd, DOCUMENT_FILE, flags, Mode::empty())
                .map_err(|e| io(&format!("cannot open `{DOCUMENT_FILE}` in"), e.into()))?,
            _ => {
                return Err(not_a_document(
                    "the output is neither a file nor a directory".to_owned(),
                ));
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io("cannot stat", e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(not_a_document(format!(
                "`{DOCUMENT_FILE}` is not a regular file"
            )));
        }
        let mut text = Vec::new();
        std::fs::File::from(fd)
            .take(limit as u64 + 1)
            .read_to_end(&mut text)
            .map_err(|e| io("cannot read", e))?;
        Ok(text)
    }
}

/// The realised path of every output of `key`, by output, or `None` if one is missing (one
/// batch lookup).
fn realised(
    store: &LocalStore,
    key: Hash,
    outputs: &[String],
) -> Result<Option<BTreeMap<String, StorePath>>, StoreError> {
    let wanted: Vec<(Hash, &str)> = outputs.iter().map(|o| (key, o.as_str())).collect();
    let found = LocalStore::realisations(store, &wanted)?;
    Ok(found.iter().all(Option::is_some).then(|| {
        outputs
            .iter()
            .cloned()
            .zip(found.into_iter().flatten())
            .collect()
    }))
}

/// How a staged output of derivation `drv` is added (references among `inputs`).
fn add_output<'a>(
    output: &'a StagedOutput,
    drv: Hash,
    inputs: &'a BTreeSet<StorePath>,
) -> AddOutput<'a> {
    AddOutput {
        built: &output.path,
        placeholder: &output.placeholder,
        name: output.placeholder.name(),
        candidate_refs: inputs,
        required_refs: &output.required_refs,
        deriver: Some(drv),
        scratch: output.scratch.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lookup_matches_single_lookups_and_build_locks_are_exclusive() {
        let home = tempfile::tempdir().unwrap();
        let store = LocalStore::open(home.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), "x").unwrap();
        let path = store.add_dir(src.path(), "thing").unwrap();
        let (k1, k2) = (Hash::digest(b"k1"), Hash::digest(b"k2"));
        store.register_realisation(k1, "out", &path).unwrap();
        let wanted = [(k1, "out"), (k2, "out"), (k1, "dev")];
        let batch = BuildStore::realisations(&store, &wanted).unwrap();
        assert_eq!(batch, vec![Some(path.clone()), None, None]);
        for ((key, output), found) in wanted.iter().zip(&batch) {
            assert_eq!(&store.realisation(*key, output).unwrap(), found);
        }
        // A realised key is found again under its build lock.
        let out = ["out".to_owned()];
        let inputs = BTreeSet::from([path.clone()]);
        let start = store.start_build(k1, &out, &inputs, true).unwrap();
        assert!(
            matches!(&start, BuildStart::Realised(found) if found["out"] == path),
            "{start:?}"
        );
        // The build lock of a key is exclusive between builds; the inputs' closure comes
        // with it.
        let held = store.start_build(k2, &out, &inputs, true).unwrap();
        assert!(
            matches!(&held, BuildStart::Build { closure, pins, .. } if *closure == inputs && pins.len() == 1),
            "{held:?}"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _second = store.start_build(k2, &out, &inputs, true).unwrap();
                tx.send(()).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(rx.try_recv().is_err(), "a second holder got the lock");
            drop(held);
            rx.recv().unwrap();
        });
    }
}
