//! [`BuildStore`] for the on-disk [`LocalStore`].
//!
//! The build lock of a build key is [`LocalStore::lock_key`]: one byte of a shared lock
//! file, so a build creates no lock file of its own. Inputs are pinned as with
//! [`LocalStore::hold`] ([`LocalStore::hold_closure`]) while a build runs, so a concurrent `bramble gc` keeps them and
//! their closures.
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

    fn realisation(&self, key: Hash, output: &str) -> Result<Option<StorePath>, StoreError> {
        LocalStore::realisation(self, key, output).map_err(StoreError::new)
    }

    fn realisations(&self, wanted: &[(Hash, &str)]) -> Result<Vec<Option<StorePath>>, StoreError> {
        LocalStore::realisations(self, wanted).map_err(StoreError::new)
    }

    fn lock_build(&self, key: Hash) -> Result<LocalLock, StoreError> {
        self.lock_key(key)
            .map(LocalLock::Key)
            .map_err(StoreError::new)
    }

    fn pin(&self, paths: &BTreeSet<StorePath>) -> Result<Vec<LocalLock>, StoreError> {
        paths
            .iter()
            .map(|p| self.hold(p).map(LocalLock::Path).map_err(StoreError::new))
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
        LocalStore::add_output(self, &add_output(output, drv, inputs)).map_err(StoreError::new)
    }

    fn read_document(&self, output: &StorePath, limit: usize) -> Result<Vec<u8>, StoreError> {
        use rustix::fs::{FileType, Mode, OFlags};
        use std::io::Read;
        let host = self.host_path(output);
        let io = |what: &str, e: std::io::Error| {
            StoreError::new(std::io::Error::new(
                e.kind(),
                format!("{what} `{}`: {e}", host.display()),
            ))
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
                return Err(io(
                    "cannot read",
                    std::io::Error::other("the output is neither a file nor a directory"),
                ));
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io("cannot stat", e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(io(
                "cannot read",
                std::io::Error::other(format!("`{DOCUMENT_FILE}` is not a regular file")),
            ));
        }
        let mut text = Vec::new();
        std::fs::File::from(fd)
            .take(limit as u64 + 1)
            .read_to_end(&mut text)
            .map_err(|e| io("cannot read", e))?;
        Ok(text)
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

    fn start_build(
        &self,
        key: Hash,
        outputs: &[String],
        inputs: &BTreeSet<StorePath>,
        recheck: bool,
    ) -> Result<BuildStart<LocalLock>, StoreError> {
        let lock = self.lock_key(key).map_err(StoreError::new)?;
        if recheck && let Some(found) = self.realised(key, outputs)? {
            return Ok(BuildStart::Realised(found));
        }
        let (pins, closure) = self.hold_closure(inputs).map_err(StoreError::new)?;
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
            let paths = self.add_outputs(&adds, realise).map_err(StoreError::new)?;
            names.iter().map(|n| (*n).to_owned()).zip(paths).collect()
        };
        for output in stored {
            let path = output.stored.clone().expect("partitioned on `stored`");
            if register {
                self.register_realisation(key, &output.name, &path)
                    .map_err(StoreError::new)?;
            }
            paths.insert(output.name.clone(), path);
        }
        Ok(paths)
    }
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
        let outputs = BTreeMap::from([("out".to_owned(), path.clone())]);
        BuildStore::register(&store, k1, Hash::digest(b"drv"), &outputs).unwrap();
        let wanted = [(k1, "out"), (k2, "out"), (k1, "dev")];
        let batch = BuildStore::realisations(&store, &wanted).unwrap();
        assert_eq!(batch, vec![Some(path.clone()), None, None]);
        for ((key, output), found) in wanted.iter().zip(&batch) {
            assert_eq!(
                &BuildStore::realisation(&store, *key, output).unwrap(),
                found
            );
        }
        // The build lock of a key is exclusive between lock holders.
        let held = store.lock_build(k1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _second = store.lock_build(k1).unwrap();
                tx.send(()).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(rx.try_recv().is_err(), "a second holder got the lock");
            drop(held);
            rx.recv().unwrap();
        });
    }
}
