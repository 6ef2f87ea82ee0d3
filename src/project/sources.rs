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

use crate::store::archive::{ArchiveError, Sink, Writer};
use crate::store::local::LocalStore;
use crate::store::local::fs::{RestoreOptions, Restorer};
use crate::store::output::content_address;
use crate::store::{Hash, StorePath};

pub use crate::lang::SourceStore as SourceSink;

/// The store object name of every source object.
pub const SOURCE_NAME: &str = "source";

enum Entry<'a> {
    /// The path in the object (for messages) and the host file.
    File(&'a str, &'a Path),
    Dir(BTreeMap<&'a [u8], Entry<'a>>),
}

/// Why a file set could not be encoded.
#[derive(Debug)]
enum EmitError<E> {
    Sink(E),
    Io {
        file: String,
        source: std::io::Error,
    },
    Shape {
        file: String,
        problem: &'static str,
    },
}

impl<E: std::fmt::Display> std::fmt::Display for EmitError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmitError::Sink(e) => write!(f, "{e}"),
            EmitError::Io { file, source } => write!(f, "cannot read `{file}`: {source}"),
            EmitError::Shape { file, problem } => write!(f, "`{file}` {problem}"),
        }
    }
}

/// Push the tree of `entries` (path in the object, host file) into `sink`, directory entries
/// in byte-wise order as the archive format requires.
fn emit_entries<S: Sink>(
    entries: &[(String, PathBuf)],
    sink: &mut S,
) -> Result<(), EmitError<S::Error>> {
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
                    return Err(EmitError::Shape {
                        file: file.clone(),
                        problem: "is below a file",
                    });
                }
            };
        }
        let last = parts[parts.len() - 1];
        if dir
            .insert(last.as_bytes(), Entry::File(file, host))
            .is_some()
        {
            return Err(EmitError::Shape {
                file: file.clone(),
                problem: "is listed twice or is also a directory",
            });
        }
    }
    sink.begin_directory(None).map_err(EmitError::Sink)?;
    emit_dir(&tree, sink)?;
    sink.end_directory().map_err(EmitError::Sink)
}

fn emit_dir<S: Sink>(
    dir: &BTreeMap<&[u8], Entry>,
    sink: &mut S,
) -> Result<(), EmitError<S::Error>> {
    for (name, entry) in dir {
        match entry {
            Entry::Dir(sub) => {
                sink.begin_directory(Some(name)).map_err(EmitError::Sink)?;
                emit_dir(sub, sink)?;
                sink.end_directory().map_err(EmitError::Sink)?;
            }
            Entry::File(rel, path) => {
                let io = |source| EmitError::Io {
                    file: (*rel).to_owned(),
                    source,
                };
                let meta = std::fs::symlink_metadata(path).map_err(io)?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(path).map_err(io)?;
                    sink.symlink(Some(name), target.as_os_str().as_encoded_bytes())
                        .map_err(EmitError::Sink)?;
                    continue;
                }
                // O_NOFOLLOW: a file swapped for a symlink since the check is refused.
                let mut file = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(io)?;
                let meta = file.metadata().map_err(io)?;
                if !meta.is_file() {
                    return Err(EmitError::Shape {
                        file: (*rel).to_owned(),
                        problem: "is not a regular file or symlink",
                    });
                }
                let executable = meta.permissions().mode() & 0o111 != 0;
                sink.file(Some(name), executable, meta.len(), &mut file)
                    .map_err(EmitError::Sink)?;
            }
        }
    }
    Ok(())
}

/// The store path of the source object holding `files` below `root` (writes nothing).
pub fn source_address(root: &Path, files: &[String]) -> Result<StorePath, String> {
    address_of(&to_entries(root, files))
}

fn to_entries(root: &Path, files: &[String]) -> Vec<(String, PathBuf)> {
    files.iter().map(|f| (f.clone(), root.join(f))).collect()
}

fn address_of(entries: &[(String, PathBuf)]) -> Result<StorePath, String> {
    let mut writer = Writer::new(Sha256::new()).map_err(|e| e.to_string())?;
    emit_entries::<Writer<Sha256>>(entries, &mut writer).map_err(|e| e.to_string())?;
    let (sha, _) = writer.finish().map_err(|e: ArchiveError| e.to_string())?;
    let digest = Hash::from_sha256(&sha.finalize().into());
    content_address(SOURCE_NAME, digest, false, &BTreeSet::new()).map_err(|e| e.to_string())
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
    fn add_sources(&self, _name: &str, root: &Path, files: &[String]) -> Result<StorePath, String> {
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
    fn add_sources(&self, _name: &str, root: &Path, files: &[String]) -> Result<StorePath, String> {
        let entries = to_entries(root, files);
        let expected = address_of(&entries)?;
        self.add_entries(&entries, expected)
    }
}

impl StoreSources<'_> {
    fn add_entries(
        &self,
        entries: &[(String, PathBuf)],
        expected: StorePath,
    ) -> Result<StorePath, String> {
        // Kept from gc until this process ends, like every source it adds.
        if self
            .store
            .keep_valid(&expected)
            .map_err(|e| e.to_string())?
        {
            return Ok(expected);
        }
        let tmp = self.store.tmp_dir("sources").map_err(|e| e.to_string())?;
        let staged = tmp.path().join(SOURCE_NAME);
        let mut restorer = Restorer::new(
            &staged,
            RestoreOptions {
                read_only: false,
                fsync: false,
            },
        )
        .map_err(|e| e.to_string())?;
        emit_entries(entries, &mut restorer).map_err(|e| e.to_string())?;
        let path = self
            .store
            .add_dir(&staged, SOURCE_NAME)
            .map_err(|e| crate::store::local::error_chain(&e))?;
        if path != expected {
            return Err(format!(
                "the sources changed while they were being added (expected `{expected}`, got `{path}`)"
            ));
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
}
