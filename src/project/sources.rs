//! Adding a derivation's source files to the store.
//!
//! A source object is the tree of exactly the listed files with their relative layout:
//! regular files keep only their executable bit, symlinks stay symlinks (never followed),
//! directories exist only to hold listed files. It is encoded in the store's archive format
//! ([`crate::store::archive`]) straight from the project, without staging, so its address
//! is what [`LocalStore::add_dir`] gives for the same tree: `bramble eval` (which writes
//! nothing) and a build agree on every hash. The address depends only on that content —
//! never on the host path or timestamps — so identical sources dedupe.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::store::archive::{Sink, Writer};
use crate::store::local::fs::{RestoreOptions, Restorer, TreeError};
use crate::store::local::{Error, LocalStore};
use crate::store::output::content_address;
use crate::store::{Hash, StorePath};

pub use crate::lang::SourceStore as SourceSink;

/// The store object name of every source object.
pub const SOURCE_NAME: &str = "source";

enum Entry<'a> {
    /// The host file.
    File(&'a Path),
    Dir(BTreeMap<&'a [u8], Entry<'a>>),
}

/// Push the tree of `entries` (path in the object, host file) into `sink`, directory entries
/// in byte-wise order as the archive format requires.
fn emit_entries<S: Sink>(entries: &[(String, PathBuf)], sink: &mut S) -> Result<(), Error>
where
    Error: From<S::Error>,
{
    let mut tree: BTreeMap<&[u8], Entry> = BTreeMap::new();
    for (file, host) in entries {
        let parts: Vec<&str> = file.split('/').collect();
        let mut dir = &mut tree;
        for part in &parts[..parts.len() - 1] {
            let entry = dir
                .entry(part.as_bytes())
                .or_insert_with(|| Entry::Dir(BTreeMap::new()));
            dir = match entry {
                Entry::Dir(d) => d,
                Entry::File(..) => {
                    return Err(TreeError::BadName {
                        path: host.clone(),
                        reason: "it is listed below a file",
                    }
                    .into());
                }
            };
        }
        let last = parts[parts.len() - 1];
        if dir.insert(last.as_bytes(), Entry::File(host)).is_some() {
            return Err(TreeError::BadName {
                path: host.clone(),
                reason: "it is listed twice or is also a directory",
            }
            .into());
        }
    }
    sink.begin_directory(None)?;
    emit_dir(&tree, sink)?;
    Ok(sink.end_directory()?)
}

fn emit_dir<S: Sink>(dir: &BTreeMap<&[u8], Entry>, sink: &mut S) -> Result<(), Error>
where
    Error: From<S::Error>,
{
    for (name, entry) in dir {
        match entry {
            Entry::Dir(sub) => {
                sink.begin_directory(Some(name))?;
                emit_dir(sub, sink)?;
                sink.end_directory()?;
            }
            Entry::File(path) => {
                let io = |source| TreeError::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    source,
                };
                let meta = std::fs::symlink_metadata(path).map_err(io)?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(path).map_err(io)?;
                    sink.symlink(Some(name), target.as_os_str().as_encoded_bytes())?;
                    continue;
                }
                // O_NOFOLLOW: a file swapped for a symlink since the check is refused;
                // O_NONBLOCK: a fifo cannot hang the open (it is refused below).
                let mut file = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(path)
                    .map_err(io)?;
                let meta = file.metadata().map_err(io)?;
                if !meta.is_file() {
                    return Err(TreeError::Unsupported {
                        path: path.to_path_buf(),
                        kind: "special file",
                    }
                    .into());
                }
                let executable = meta.permissions().mode() & 0o111 != 0;
                sink.file(Some(name), executable, meta.len(), &mut file)?;
            }
        }
    }
    Ok(())
}

/// The store path of the source object holding `files` below `root` (writes nothing).
pub fn source_address(root: &Path, files: &[String]) -> Result<StorePath, Error> {
    address_of(&to_entries(root, files))
}

fn to_entries(root: &Path, files: &[String]) -> Vec<(String, PathBuf)> {
    files.iter().map(|f| (f.clone(), root.join(f))).collect()
}

fn address_of(entries: &[(String, PathBuf)]) -> Result<StorePath, Error> {
    let mut writer = Writer::new(Sha256::new())?;
    emit_entries::<Writer<Sha256>>(entries, &mut writer)?;
    let (sha, _) = writer.finish()?;
    let digest = Hash::from_sha256(&sha.finalize().into());
    Ok(content_address(
        SOURCE_NAME,
        digest,
        false,
        &BTreeSet::new(),
    )?)
}

/// A [`SourceSink`] that computes the address the store would give and writes nothing
/// (`bramble eval`, tests). It remembers what it was asked to add.
#[derive(Debug, Default)]
pub struct MemorySources {
    added: Mutex<BTreeMap<StorePath, Vec<String>>>,
}

impl MemorySources {
    /// Every source object "added" so far, with its file list.
    pub fn added(&self) -> BTreeMap<StorePath, Vec<String>> {
        self.added.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl SourceSink for MemorySources {
    fn add_sources(&self, _name: &str, root: &Path, files: &[String]) -> Result<StorePath, Error> {
        let path = source_address(root, files)?;
        self.added
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), files.to_vec());
        Ok(path)
    }
}

/// A [`SourceSink`] that adds source objects to a [`LocalStore`]: the listed files are
/// copied (layout and executable bits kept) into a temporary directory of the store, then
/// added with [`LocalStore::add_dir`].
#[derive(Debug)]
pub struct StoreSources<'a> {
    pub store: &'a LocalStore,
}

impl SourceSink for StoreSources<'_> {
    fn add_sources(&self, _name: &str, root: &Path, files: &[String]) -> Result<StorePath, Error> {
        let entries = to_entries(root, files);
        let expected = address_of(&entries)?;
        self.add_entries(&entries, expected, root)
    }
}

impl StoreSources<'_> {
    fn add_entries(
        &self,
        entries: &[(String, PathBuf)],
        expected: StorePath,
        root: &Path,
    ) -> Result<StorePath, Error> {
        // Kept from gc until this process ends, like every source it adds.
        if self.store.keep_valid(&expected)? {
            return Ok(expected);
        }
        let tmp = self.store.tmp_dir("sources")?;
        let staged = tmp.path().join(SOURCE_NAME);
        let mut restorer = Restorer::new(
            &staged,
            RestoreOptions {
                read_only: false,
                fsync: false,
            },
        )?;
        emit_entries(entries, &mut restorer)?;
        let path = self.store.add_dir(&staged, SOURCE_NAME)?;
        if path != expected {
            // Between hashing and copying.
            return Err(Error::SourceChanged {
                path: root.to_owned(),
            });
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (f, exec) in [
            ("a-b", false),
            ("a/c", true),
            ("a/d/e", false),
            ("z", false),
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
            if exec {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        std::os::unix::fs::symlink("a/c", dir.path().join("link")).unwrap();
        dir
    }

    fn list(files: &[&str]) -> Vec<String> {
        files.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn store_and_memory_agree_and_dedupe() {
        let p = project();
        let files = list(&["a-b", "a/c", "a/d/e", "link"]);
        let home = tempfile::tempdir().unwrap();
        let store = LocalStore::open(home.path()).unwrap();
        let sink = StoreSources { store: &store };
        let in_store = sink.add_sources("x", p.path(), &files).unwrap();
        let memory = MemorySources::default();
        assert_eq!(memory.add_sources("y", p.path(), &files).unwrap(), in_store);
        assert_eq!(sink.add_sources("z", p.path(), &files).unwrap(), in_store);
        // Exactly the listed files, with their layout and executable bit.
        let obj = store.host_path(&in_store);
        assert!(!obj.join("z").exists());
        assert_eq!(std::fs::read(obj.join("a/d/e")).unwrap(), b"a/d/e");
        let mode = std::fs::metadata(obj.join("a/c"))
            .unwrap()
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0);
        assert_eq!(
            std::fs::read_link(obj.join("link")).unwrap(),
            Path::new("a/c")
        );
        // A different set, a different object.
        let other = memory.add_sources("y", p.path(), &list(&["a-b"])).unwrap();
        assert_ne!(other, in_store);
        assert_eq!(memory.added().len(), 2);
    }

    #[test]
    fn the_address_ignores_the_host_location() {
        let a = project();
        let b = project();
        let files = list(&["a/c", "z"]);
        assert_eq!(
            source_address(a.path(), &files).unwrap(),
            source_address(b.path(), &files).unwrap()
        );
        std::fs::write(b.path().join("z"), "changed").unwrap();
        assert_ne!(
            source_address(a.path(), &files).unwrap(),
            source_address(b.path(), &files).unwrap()
        );
    }

    #[test]
    fn errors_are_the_stores_with_the_host_path() {
        use crate::error::{Class, Diagnose};
        let p = project();
        let fifo = p.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = source_address(p.path(), &list(&["fifo"])).unwrap_err();
        assert!(
            matches!(&err, Error::Tree(TreeError::Unsupported { path, .. }) if *path == fifo),
            "{err:?}"
        );
        assert_eq!(err.class(), Class::User);
        assert!(err.hint().is_some());
        let err = source_address(p.path(), &list(&["missing"])).unwrap_err();
        assert!(
            matches!(&err, Error::Tree(TreeError::Io { path, .. }) if path.ends_with("missing")),
            "{err:?}"
        );
        assert_eq!(err.class(), Class::User);
    }
}
