//! The on-disk store: where store objects live on the host, their SQLite database, atomic
//! adds, per-path locks, `verify` and `gc`. [`fs`] is its file-system side of the archive
//! format: dumping a tree, restoring one, removing one, all through descriptors.
//!
//! # Layout
//!
//! ```text
//! <home>/store/<hash>-<name>   store objects: files 0444/0555, directories 0555, mtime 1
//! <home>/db.sqlite             valid paths, references, realisations, derivations, logs
//! <home>/gcroots/              symlinks to store paths (or to links that point at them)
//! <home>/tmp/                  temporary directories (same file system: rename is atomic)
//! <home>/locks/                `<hash>.lock`, `gc.lock`, `tmp-<name>.lock`
//! <home>/temproots/            one file per live process: the paths it uses
//! ```
//!
//! The home and everything in it belong to the user running bramble: anything else, or a
//! symlink where a file or directory belongs, is refused (see `home`); the database and
//! the directories other than `store/` are private (0600/0700).
//!
//! `<home>` is `$BRAMBLE_HOME`, else `$XDG_DATA_HOME/bramble`, else
//! `~/.local/share/bramble`. There is no daemon: every bramble process opens the store
//! itself, and they coordinate through the locks and SQLite's own locking.
//!
//! # Adding an object
//!
//! 1. hash the tree (an archive stream into sha256) to learn its store path; if the path is
//!    already valid, stop (deduplication);
//! 2. take the path's lock (a second process adding the same path waits here, then finds it
//!    valid) and a shared `gc.lock` (so gc cannot delete a reference meanwhile);
//! 3. copy the tree into a locked temp dir with store permissions (no fsync yet);
//! 4. re-hash the copy (that is the archive hash recorded and later verified; a build
//!    output's copy is hashed from the very stream written in 3, see [`Hashing`]);
//! 5. remove any unregistered leftover at the final name (a crash between 5 and 6), rename
//!    the copy into place, then fsync every file and directory of it and `store/` (after
//!    the rename, so one journal commit covers contents and name);
//! 6. register path, archive hash, size, references and deriver in one transaction.
//!
//! A crash before 6 leaves an unregistered directory in `tmp/` or `store/`, which is never
//! taken for valid (validity is the database row) and which `gc` removes.
//!
//! The outputs of one build go through 1-5 together ([`LocalStore::add_outputs`]: every
//! path's lock taken in path order, held to the end) and step 6 registers all of them
//! *and* the build's realisations in a single transaction: one write transaction (one WAL
//! commit) per build instead of one per output plus one for the realisations, and a crash
//! registers the whole build or nothing of it.
//!
//! # Locks and gc
//!
//! `gc` holds `gc.lock` exclusively; adds hold it shared. A path whose lock is held (being
//! built or added, or pinned with [`LocalStore::hold`]) is treated as a root by `gc`, as is
//! its closure.

mod db;
pub mod fs;
mod gc;
mod home;
mod lock;
mod repair;
mod temproots;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

pub use gc::{GcOptions, GcReport, VerifyOptions, VerifyProblem, VerifyReport};
pub use lock::{KeyLock, PathLock, TempDir};
pub use repair::RebuildReport;

use self::db::Db;
use self::fs::{DumpOptions, RestoreOptions, TreeError};
use self::lock::LockMode;
use super::archive::Writer;
use super::output::{RefScanner, Rewrite, Tee, content_address};
use super::path::{StorePathError, validate_name};
use super::{Derivation, DerivationError, Hash, StorePath};
use crate::error::{Class, Diagnose};

/// Errors of the local store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot {op} the store database `{path}`")]
    Database {
        op: &'static str,
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the store database `{path}` has schema version {found}, newer than this bramble's ({supported})"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("the store database `{path}` is corrupt: {detail}")]
    CorruptDatabase { path: PathBuf, detail: String },
    #[error(
        "the store database `{db}` registers no paths, but `{store}` holds {objects} objects: the database was emptied or lost"
    )]
    DatabaseLost {
        db: PathBuf,
        store: PathBuf,
        objects: usize,
    },
    #[error("refusing to use `{path}` in the store's home: {reason}")]
    UntrustedHome { path: PathBuf, reason: String },
    #[error("cannot find the store's home: neither BRAMBLE_HOME, XDG_DATA_HOME nor HOME is set")]
    NoHome,
    #[error(transparent)]
    Name(#[from] StorePathError),
    #[error("`{path}` is not a valid path in this store")]
    NotValid { path: StorePath },
    #[error("`{path}` refers to `{reference}`, which is not a valid path in this store")]
    InvalidReference {
        path: StorePath,
        reference: StorePath,
    },
    #[error("cannot add `{path}`: it contains the store itself (`{home}`)")]
    ContainsStore { path: PathBuf, home: PathBuf },
    #[error("`{path}` changed while it was being added to the store")]
    SourceChanged { path: PathBuf },
    #[error("derivation `{hash}` in the store database is invalid")]
    BadDerivation { hash: Hash, source: DerivationError },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

impl From<super::archive::ArchiveError> for Error {
    fn from(e: super::archive::ArchiveError) -> Error {
        Error::Tree(TreeError::Archive(e))
    }
}

/// Advice for a tree that a store object cannot hold.
const TREE_SHAPE_HINT: &str = "a store object holds only regular files, directories and symlinks, without setuid/setgid bits or hardlinks to files outside it";
/// Advice for a tree that changed while it was added.
const CHANGED_HINT: &str = "make sure nothing writes to the directory while it is being added";

impl Diagnose for Error {
    fn class(&self) -> Class {
        match self {
            Error::Name(_)
            | Error::NotValid { .. }
            | Error::ContainsStore { .. }
            | Error::SourceChanged { .. } => Class::User,
            Error::InvalidReference { .. } => Class::Internal,
            Error::Tree(e) => e.class(),
            Error::Io { .. }
            | Error::Database { .. }
            | Error::NewerSchema { .. }
            | Error::CorruptDatabase { .. }
            | Error::DatabaseLost { .. }
            | Error::UntrustedHome { .. }
            | Error::NoHome
            | Error::BadDerivation { .. } => Class::Environment,
        }
    }

    fn hint(&self) -> Option<String> {
        let hint = match self {
            Error::NewerSchema { .. } => {
                "this store was written by a newer bramble: upgrade bramble, or set BRAMBLE_HOME to use another store"
            }
            Error::CorruptDatabase { .. } => {
                "run `bramble store verify --repair`; if that fails, move the database aside"
            }
            Error::DatabaseLost { .. } => {
                "nothing was deleted; rebuild the database from the objects with `bramble store repair --rebuild-db` (which realisations and build logs cannot survive: the next builds run again and find their outputs stored)"
            }
            Error::UntrustedHome { .. } => {
                "the store's home and everything in it must belong to the user running bramble, with no symlinks in place of its files; set BRAMBLE_HOME to a directory of your own"
            }
            Error::NoHome => "set BRAMBLE_HOME to the directory that should hold the store",
            Error::Name(_) => "names use letters, digits and `+-._?=`; pass `--name` to choose one",
            Error::NotValid { .. } => {
                "it is not registered in this store (BRAMBLE_HOME selects the store); add it first with `bramble store add`"
            }
            Error::ContainsStore { .. } => {
                "add a directory that does not contain BRAMBLE_HOME, or move the store elsewhere"
            }
            Error::SourceChanged { .. } => CHANGED_HINT,
            Error::Tree(e) => return e.hint(),
            Error::InvalidReference { .. }
            | Error::BadDerivation { .. }
            | Error::Io { .. }
            | Error::Database { .. } => return None,
        };
        Some(hint.to_owned())
    }
}

/// The tree errors are classified here, where the store reads trees: a path the user named
/// is missing or unreadable (their mistake) or the disk failed (the environment's).
impl Diagnose for TreeError {
    fn class(&self) -> Class {
        match self {
            TreeError::Io { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                Class::User
            }
            TreeError::Io { .. } => Class::Environment,
            TreeError::Unsupported { .. }
            | TreeError::Setuid { .. }
            | TreeError::ForeignHardlink { .. }
            | TreeError::Xattr { .. }
            | TreeError::DuplicateAfterRewrite { .. }
            | TreeError::BadName { .. }
            | TreeError::TooDeep { .. }
            | TreeError::Changed { .. } => Class::User,
            TreeError::Archive(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            TreeError::Unsupported { .. }
            | TreeError::Setuid { .. }
            | TreeError::ForeignHardlink { .. }
            | TreeError::Xattr { .. }
            | TreeError::DuplicateAfterRewrite { .. } => Some(TREE_SHAPE_HINT.to_owned()),
            TreeError::Changed { .. } => Some(CHANGED_HINT.to_owned()),
            _ => None,
        }
    }
}

/// What the database knows about a valid path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PathInfo {
    pub path: StorePath,
    /// Hash of the object's archive (what `verify` recomputes).
    pub archive_hash: Hash,
    /// Size of that archive in bytes.
    pub archive_size: u64,
    /// Valid paths this one refers to (itself included if it refers to itself).
    pub references: BTreeSet<StorePath>,
    /// Hash of the derivation that built it, if it was built.
    pub deriver: Option<Hash>,
    /// When it was registered (unix seconds).
    pub registered_at: i64,
}

/// What [`LocalStore::add_output`] needs to know about a finished build output.
#[derive(Debug, Clone, Copy)]
pub struct AddOutput<'a> {
    /// The tree the builder wrote (inside a [`LocalStore::tmp_dir`]). Read through fds only.
    pub built: &'a Path,
    /// The placeholder path the builder was told to write to.
    pub placeholder: &'a StorePath,
    /// Name of the final store path (usually `placeholder.name()`).
    pub name: &'a str,
    /// Store paths the output may refer to (the input closure).
    pub candidate_refs: &'a BTreeSet<StorePath>,
    /// Paths among `candidate_refs` that are references even if the output never names
    /// them (a build's root view).
    pub required_refs: &'a [StorePath],
    /// The derivation that built it.
    pub deriver: Option<Hash>,
    /// A directory the caller owns on the store's file system (inside a locked
    /// [`LocalStore::tmp_dir`], not writable by anyone else) to stage the final tree in;
    /// `None`: a temp dir of its own. Saves a lock file and a directory per output.
    pub scratch: Option<&'a Path>,
}

/// A build output after pass 1 of [`LocalStore::add_outputs`].
struct Analysed {
    path: StorePath,
    /// References to other paths (not to itself).
    references: BTreeSet<StorePath>,
    /// Whether it refers to itself (its placeholder was found).
    self_ref: bool,
}

/// Largest file [`Hashing`] hashes on the way (it holds one file's contents in memory).
const HASHED_FILE_MAX: u64 = 256 * 1024;

/// The sink of pass 2 of [`LocalStore::add_outputs`]: restores the final tree and hashes
/// its archive from the same stream, so the archive hash recorded is that of exactly the
/// nodes written (the archive holds names, the executable bit, contents and symlink targets,
/// all of which the restorer writes as given), without reading the copy back. A file
/// larger than [`HASHED_FILE_MAX`] stops the hashing (`archive` becomes `None`) and the
/// copy is hashed afterwards as before.
struct Hashing {
    restorer: fs::Restorer,
    archive: Option<Writer<Sha256>>,
    /// One file's contents.
    buf: Vec<u8>,
}

impl Hashing {
    fn archive(
        &mut self,
        op: impl FnOnce(&mut Writer<Sha256>) -> Result<(), TreeError>,
    ) -> Result<(), TreeError> {
        match &mut self.archive {
            Some(archive) => op(archive),
            None => Ok(()),
        }
    }
}

impl super::archive::Sink for Hashing {
    type Error = TreeError;

    fn begin_directory(&mut self, name: Option<&[u8]>) -> Result<(), TreeError> {
        self.archive(|a| Ok(a.begin_directory(name)?))?;
        self.restorer.begin_directory(name)
    }

    fn end_directory(&mut self) -> Result<(), TreeError> {
        self.archive(|a| Ok(a.end_directory()?))?;
        self.restorer.end_directory()
    }

    fn file(
        &mut self,
        name: Option<&[u8]>,
        executable: bool,
        size: u64,
        contents: &mut dyn io::Read,
    ) -> Result<(), TreeError> {
        if size > HASHED_FILE_MAX || self.archive.is_none() {
            self.archive = None;
            return self.restorer.file(name, executable, size, contents);
        }
        // At most one byte more than announced is read: enough to tell it grew.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let read = io::Read::read_to_end(&mut io::Read::take(contents, size + 1), &mut buf);
        let result = read
            .map_err(|e| TreeError::Archive(super::archive::ArchiveError::Write(e)))
            .and_then(|_| {
                self.restorer
                    .file(name, executable, size, &mut buf.as_slice())
            })
            .and_then(|()| {
                self.archive(|a| Ok(a.file(name, executable, size, &mut buf.as_slice())?))
            });
        self.buf = buf;
        result
    }

    fn symlink(&mut self, name: Option<&[u8]>, target: &[u8]) -> Result<(), TreeError> {
        self.archive(|a| Ok(a.symlink(name, target)?))?;
        self.restorer.symlink(name, target)
    }
}

/// A store on the local file system.
#[derive(Debug)]
pub struct LocalStore {
    home: PathBuf,
    store_dir: PathBuf,
    db: Mutex<Db>,
    /// The paths this process uses, kept from `gc` while it lives (see [`temproots`]).
    temp_roots: temproots::TempRoots,
}

/// The default home: `$BRAMBLE_HOME`, else `$XDG_DATA_HOME/bramble`, else
/// `$HOME/.local/share/bramble`.
pub fn default_home() -> Result<PathBuf, Error> {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(home) = non_empty(crate::env::BRAMBLE_HOME) {
        return Ok(PathBuf::from(home));
    }
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(data).join("bramble"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home).join(".local/share/bramble"));
    }
    Err(Error::NoHome)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Hash of the archive of the tree at `path`, and the archive's size.
pub fn hash_tree(path: &Path) -> Result<(Hash, u64), TreeError> {
    let mut w = Writer::new(Sha256::new())?;
    fs::dump(path, &mut w, &DumpOptions::default())?;
    let (sha, size) = w.finish()?;
    Ok((Hash::from_sha256(&sha.finalize().into()), size))
}

impl LocalStore {
    /// Open the store at `home`, creating its layout and database if needed.
    pub fn open(home: &Path) -> Result<LocalStore, Error> {
        let home = home::create(home)?;
        // Everything in it must be the caller's, with no symlink planted (see `home`).
        home::prepare(&home)?;
        // A database made anew beside objects of `store/` was lost, not new: mark it so that
        // gc refuses until `store repair --rebuild-db` (crash leftovers in a store whose
        // database exists are not a loss: gc removes them).
        let db_path = home.join("db.sqlite");
        let fresh = std::fs::symlink_metadata(&db_path).map_or(true, |m| m.len() == 0);
        let db = Db::open(&db_path)?;
        if fresh && repair::has_objects(&home.join("store"))? {
            std::fs::write(home.join(repair::LOST_MARK), b"")
                .map_err(io_err("write", &home.join(repair::LOST_MARK)))?;
        }
        Ok(LocalStore {
            store_dir: home.join("store"),
            temp_roots: temproots::TempRoots::new(home.join("temproots")),
            home,
            db: Mutex::new(db),
        })
    }

    /// Open the store at [`default_home`].
    pub fn open_default() -> Result<LocalStore, Error> {
        LocalStore::open(&default_home()?)
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The host directory holding the store objects.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Where `path` lives on the host.
    pub fn host_path(&self, path: &StorePath) -> PathBuf {
        self.store_dir.join(path.to_string())
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the lock cannot leave the connection inconsistent (every
        // write is a transaction), so a poisoned lock is still usable.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_file(&self, name: &str) -> PathBuf {
        self.home.join("locks").join(format!("{name}.lock"))
    }

    /// Take `path`'s lock exclusively, waiting for other holders. Hold it while building
    /// `path`; `gc` never deletes a locked path.
    pub fn lock(&self, path: &StorePath) -> Result<PathLock, Error> {
        let file = self.lock_file(&path.hash().to_string());
        lock::acquire(&file, LockMode::Exclusive, true)
            .map(|l| l.unwrap_or_else(|| unreachable!("a blocking lock returns a lock")))
    }

    /// Take the exclusive build lock of `key` (a derivation's build key), waiting for other
    /// holders. Build keys share one lock file (`locks/build-keys.lock`, one byte per key):
    /// see [`KeyLock`].
    pub fn lock_key(&self, key: Hash) -> Result<KeyLock, Error> {
        lock::acquire_key(&self.lock_file("build-keys"), key.as_bytes())
    }

    /// Pin a valid path (and so its closure) against `gc` while it is in use, e.g. as a
    /// build input. Several holders may pin the same path. Do not add the same path from
    /// the same process while holding this (flock locks conflict between open files).
    pub fn hold(&self, path: &StorePath) -> Result<PathLock, Error> {
        let file = self.lock_file(&path.hash().to_string());
        let lock = lock::acquire(&file, LockMode::Shared, true)?
            .unwrap_or_else(|| unreachable!("a blocking lock returns a lock"));
        // gc may have deleted it just before we got the lock.
        if !self.is_valid(path)? {
            return Err(Error::NotValid { path: path.clone() });
        }
        Ok(lock)
    }

    fn gc_lock(&self, mode: LockMode) -> Result<PathLock, Error> {
        lock::acquire(&self.lock_file("gc"), mode, true)
            .map(|l| l.unwrap_or_else(|| unreachable!("a blocking lock returns a lock")))
    }

    /// A fresh locked temporary directory on the store's file system.
    pub fn tmp_dir(&self, prefix: &str) -> Result<TempDir, Error> {
        TempDir::create(&self.home.join("tmp"), &self.home.join("locks"), prefix)
    }

    /// Whether `path` is registered.
    pub fn is_valid(&self, path: &StorePath) -> Result<bool, Error> {
        self.db().is_valid(path)
    }

    /// What the database knows about `path`, or `None` if it is not valid.
    pub fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, Error> {
        self.db().path_info(path)
    }

    /// The closure of `paths` under references (`paths` included), read in one database
    /// transaction. Every path must be valid.
    pub fn closure(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, Error> {
        self.db().closure(paths)
    }

    /// Pin every path of `paths` against `gc` (as [`LocalStore::hold`]) and return the pins
    /// and the closure of `paths`. Each pin is taken before the closure is read, and the
    /// closure read fails with [`Error::NotValid`] for a path that is not valid, so a path
    /// `gc` deleted before its pin was taken is an error here as it is for `hold` — with
    /// one database transaction in all instead of one validity query per path.
    pub fn hold_closure(
        &self,
        paths: &BTreeSet<StorePath>,
    ) -> Result<(Vec<PathLock>, BTreeSet<StorePath>), Error> {
        let mut pins = Vec::with_capacity(paths.len());
        for path in paths {
            let file = self.lock_file(&path.hash().to_string());
            pins.push(
                lock::acquire(&file, LockMode::Shared, true)?
                    .unwrap_or_else(|| unreachable!("a blocking lock returns a lock")),
            );
        }
        let closure = self.db().closure(paths)?;
        Ok((pins, closure))
    }

    /// Add the tree at `src` (a directory, file or symlink, not followed) as a
    /// content-addressed source object named `name`. Adding the same content twice gives the
    /// same path and stores it once.
    pub fn add_dir(&self, src: &Path, name: &str) -> Result<StorePath, Error> {
        validate_name(name)?;
        if let Ok(real) = std::fs::canonicalize(src)
            && self.home.starts_with(&real)
        {
            return Err(Error::ContainsStore {
                path: src.to_owned(),
                home: self.home.clone(),
            });
        }
        let (digest, _) = hash_tree(src)?;
        let path = content_address(name, digest, false, &BTreeSet::new())?;
        if self.keep_valid(&path)? {
            return Ok(path);
        }
        let _gc = self.gc_lock(LockMode::Shared)?;
        let _lock = self.lock(&path)?;
        if self.is_valid(&path)? {
            self.temp_roots.record([&path])?;
            return Ok(path);
        }
        let tmp = self.tmp_dir("add")?;
        let staged = tmp.path().join("object");
        fs::copy(src, &staged, &DumpOptions::default(), store_restore())?;
        let (archive_hash, archive_size) = hash_tree(&staged)?;
        if archive_hash != digest {
            return Err(Error::SourceChanged {
                path: src.to_owned(),
            });
        }
        self.install_source(&staged, path, archive_hash, archive_size)
    }

    /// Add a source object from an archive stream (e.g. `bramble store import`). The archive
    /// is untrusted: it is decoded with the default [`Limits`](super::archive::Limits) into a
    /// temp dir, and nothing reaches `store/` unless it decoded completely.
    pub fn add_archive(&self, archive: impl io::Read, name: &str) -> Result<StorePath, Error> {
        validate_name(name)?;
        let tmp = self.tmp_dir("import")?;
        let staged = tmp.path().join("object");
        fs::restore(
            archive,
            &staged,
            &super::archive::Limits::default(),
            store_restore(),
        )?;
        let (archive_hash, archive_size) = hash_tree(&staged)?;
        let path = content_address(name, archive_hash, false, &BTreeSet::new())?;
        let _gc = self.gc_lock(LockMode::Shared)?;
        let _lock = self.lock(&path)?;
        if self.is_valid(&path)? {
            self.temp_roots.record([&path])?;
            return Ok(path);
        }
        self.install_source(&staged, path, archive_hash, archive_size)
    }

    /// Install a staged source object: no references, no deriver, kept as a temporary root.
    /// The caller holds the path's lock and a shared gc lock, and has checked that it is
    /// not valid yet.
    fn install_source(
        &self,
        staged: &Path,
        path: StorePath,
        archive_hash: Hash,
        archive_size: u64,
    ) -> Result<StorePath, Error> {
        self.install(
            staged,
            PathInfo {
                path: path.clone(),
                archive_hash,
                archive_size,
                references: BTreeSet::new(),
                deriver: None,
                registered_at: db::now(),
            },
        )?;
        self.temp_roots.record([&path])?;
        Ok(path)
    }

    /// Write the archive of a valid path to `out`.
    pub fn export(&self, path: &StorePath, out: impl io::Write) -> Result<u64, Error> {
        if !self.is_valid(path)? {
            return Err(Error::NotValid { path: path.clone() });
        }
        let mut w = Writer::new(out)?;
        fs::dump(&self.host_path(path), &mut w, &DumpOptions::default())?;
        Ok(w.finish()?.1)
    }

    /// Turn a finished build output into a store object: hash it modulo self-references,
    /// scan it for references among `candidate_refs`, copy it with the placeholder rewritten
    /// to the final hash and with store permissions, and register it. Rejects setuid files,
    /// devices, fifos, sockets, foreign hardlinks and user/trusted xattrs. Returns the final
    /// path (an existing one if the same output was added before).
    pub fn add_output(&self, out: &AddOutput<'_>) -> Result<StorePath, Error> {
        let mut paths = self.add_outputs(std::slice::from_ref(out), None)?;
        Ok(paths.pop().expect("one path per output"))
    }

    /// [`LocalStore::add_output`] for every output of one build, registered together: the
    /// new paths and, with `realise = Some((build_key, names))` (`names[i]` naming
    /// `outputs[i]`), the build's realisations go into the database in one transaction, so
    /// a crash registers all of them or none. Returns the final paths in the order of
    /// `outputs`.
    ///
    /// The paths' locks are taken in path order (two processes adding the same outputs
    /// cannot deadlock) and held until that transaction is committed. A path whose lock is
    /// free is looked up once, under its lock.
    pub fn add_outputs(
        &self,
        outputs: &[AddOutput<'_>],
        realise: Option<(Hash, &[&str])>,
    ) -> Result<Vec<StorePath>, Error> {
        for out in outputs {
            validate_name(out.name)?;
        }
        let _gc = self.gc_lock(LockMode::Shared)?;
        let analysed = outputs
            .iter()
            .map(|out| self.analyse(out))
            .collect::<Result<Vec<_>, Error>>()?;
        let mut order: Vec<usize> = (0..analysed.len()).collect();
        order.sort_by(|&x, &y| analysed[x].path.cmp(&analysed[y].path));
        order.dedup_by(|x, y| analysed[*x].path == analysed[*y].path);
        let mut locks = Vec::with_capacity(order.len());
        let mut infos = Vec::with_capacity(order.len());
        for i in order {
            let path = &analysed[i].path;
            // Its lock, then whether it is valid (another process may have added it). When
            // the lock is held elsewhere, a valid path is left alone without waiting for it:
            // the holder may be this very process, pinning one of this build's inputs.
            let file = self.lock_file(&path.hash().to_string());
            let lock = match lock::acquire(&file, LockMode::Exclusive, false)? {
                Some(lock) => lock,
                None if self.is_valid(path)? => continue,
                None => self.lock(path)?,
            };
            if self.is_valid(path)? {
                continue;
            }
            infos.push(self.stage_output(&outputs[i], &analysed[i])?);
            locks.push(lock);
        }
        let paths: Vec<StorePath> = analysed.into_iter().map(|a| a.path).collect();
        match realise {
            Some((key, names)) => {
                let realisations: Vec<(&str, &StorePath)> =
                    names.iter().copied().zip(&paths).collect();
                self.db().register_all(&infos, Some(key), &realisations)?;
            }
            None if !infos.is_empty() => self.db().register_all(&infos, None, &[])?,
            None => {}
        }
        // Kept from gc until this process ends (until a result link or root holds them).
        self.temp_roots.record(&paths)?;
        drop(locks);
        Ok(paths)
    }

    /// Pass 1 of adding a build output: its digest modulo self-references, its references
    /// and so its final path.
    fn analyse(&self, out: &AddOutput<'_>) -> Result<Analysed, Error> {
        let placeholder = out.placeholder.hash();
        let scanner = RefScanner::new(out.candidate_refs.iter().map(StorePath::hash));
        let mut w = Writer::new(Tee(Sha256::new(), scanner))?;
        let stats = fs::dump(
            out.built,
            &mut w,
            &DumpOptions {
                rewrite: Some(Rewrite::to_marker(placeholder)),
                reject_xattrs: true,
            },
        )?;
        let (Tee(sha, scanner), _) = w.finish()?;
        let digest = Hash::from_sha256(&sha.finalize().into());
        let found = scanner.into_found();
        let references: BTreeSet<StorePath> = out
            .candidate_refs
            .iter()
            .filter(|p| {
                (found.contains(&p.hash()) || out.required_refs.contains(p))
                    && p.hash() != placeholder
            })
            .cloned()
            .collect();
        let self_ref = stats.rewrites > 0;
        let path = content_address(out.name, digest, self_ref, &references)?;
        Ok(Analysed {
            path,
            references,
            self_ref,
        })
    }

    /// Passes 2 and 3 of adding a build output, under its path's lock: copy the final tree
    /// (placeholder rewritten, store permissions), hashing the archive of what is written
    /// (see [`Hashing`]), and move it into place durably ([`LocalStore::place`]). Returns
    /// what to register.
    fn stage_output(&self, out: &AddOutput<'_>, analysed: &Analysed) -> Result<PathInfo, Error> {
        let path = &analysed.path;
        let own_tmp;
        let staged = match out.scratch {
            Some(dir) => {
                let staged = dir.join(path.to_string());
                // A leftover of an earlier failed attempt in the same directory.
                fs::remove(&staged)?;
                staged
            }
            None => {
                own_tmp = self.tmp_dir("out")?;
                own_tmp.path().join("object")
            }
        };
        // The archive of what is written is hashed as it is written (see `Hashing`); pass 3
        // re-reads the copy only when a file was too large to hash that way.
        let mut sink = Hashing {
            restorer: fs::Restorer::new(&staged, store_restore())?,
            archive: Some(Writer::new(Sha256::new())?),
            buf: Vec::new(),
        };
        fs::dump(
            out.built,
            &mut sink,
            &DumpOptions {
                rewrite: Some(Rewrite::to_final(out.placeholder.hash(), path.hash())),
                reject_xattrs: true,
            },
        )?;
        let (archive_hash, archive_size) = match sink.archive {
            Some(archive) => {
                let (sha, size) = archive.finish()?;
                (Hash::from_sha256(&sha.finalize().into()), size)
            }
            None => hash_tree(&staged)?,
        };
        let mut references = analysed.references.clone();
        if analysed.self_ref {
            references.insert(path.clone());
        }
        self.place(&staged, path)?;
        Ok(PathInfo {
            path: path.clone(),
            archive_hash,
            archive_size,
            references,
            deriver: out.deriver,
            registered_at: db::now(),
        })
    }

    /// Move a staged tree to its final name, make it durable and register it. The caller
    /// holds the path's lock and a shared gc lock.
    fn install(&self, staged: &Path, info: PathInfo) -> Result<(), Error> {
        self.place(staged, &info.path)?;
        self.db().register(&info)
    }

    /// Move a staged tree to its final name and make it durable; the caller registers it
    /// afterwards, holding the path's lock throughout.
    ///
    /// The tree was written without fsync: it is synced after the rename (every file and
    /// directory, then `store/`), so one journal commit covers its contents and its name,
    /// and it is registered only once all of that is durable. A crash before registration
    /// leaves an unregistered object, which is never taken for valid.
    ///
    /// Moving a directory to another parent writes its `..` entry, which needs write
    /// permission on the directory itself (root never notices: it bypasses the check). The
    /// staged root directory is therefore made writable (0755) for the rename and read-only
    /// (0555) again right after it, through the descriptor opened before the rename (the
    /// same inode, never a path a second time), before anything is synced or registered. A
    /// crash in between leaves an unregistered object with a writable top directory, which
    /// is removed like any other leftover.
    fn place(&self, staged: &Path, path: &StorePath) -> Result<(), Error> {
        use rustix::fs::{Mode, OFlags};
        let dest = self.host_path(path);
        // An unregistered leftover (a crash between rename and registration): nobody else
        // can be writing it, since we hold the path's lock.
        fs::remove(&dest)?;
        let root = match rustix::fs::open(
            staged,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            // A file or a symlink: renaming it touches only the two directories.
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => None,
            Err(e) => return Err(io_err("open", staged)(e.into())),
        };
        let chmod = |fd: &std::os::fd::OwnedFd, mode: u32, at: &Path| {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
                .map_err(|e| io_err("set permissions of", at)(e.into()))
        };
        if let Some(fd) = &root {
            chmod(fd, 0o755, staged)?;
        }
        std::fs::rename(staged, &dest).map_err(io_err("move into the store", &dest))?;
        if let Some(fd) = &root {
            chmod(fd, 0o555, &dest)?;
        }
        fs::sync(&dest)?;
        Ok(())
    }

    /// The path built for `(build_key, output)`, if it is known and still valid; a path
    /// found is kept from gc until this process ends (a temporary root), as a build about
    /// to use it as an input needs.
    pub fn realisation(&self, build_key: Hash, output: &str) -> Result<Option<StorePath>, Error> {
        Ok(self.realisations(&[(build_key, output)])?.pop().flatten())
    }

    /// [`LocalStore::realisation`] for many `(build_key, output)` pairs at once, in one
    /// read transaction; the results are in the order asked.
    pub fn realisations(&self, wanted: &[(Hash, &str)]) -> Result<Vec<Option<StorePath>>, Error> {
        // Looked up and recorded under the shared gc lock: a gc cannot run in between.
        let _gc = self.gc_lock(LockMode::Shared)?;
        let found = self.db().realisations(wanted)?;
        self.temp_roots.record(found.iter().flatten())?;
        Ok(found)
    }

    /// Whether `path` is valid; if it is, it is kept from gc until this process ends (a
    /// temporary root). For a path about to be used, where [`LocalStore::is_valid`] would
    /// leave a gc free to delete it right after the answer.
    pub fn keep_valid(&self, path: &StorePath) -> Result<bool, Error> {
        let _gc = self.gc_lock(LockMode::Shared)?;
        let valid = self.is_valid(path)?;
        if valid {
            self.temp_roots.record([path])?;
        }
        Ok(valid)
    }

    /// Record that building `build_key` gave `path` for `output` (`path` must be valid).
    pub fn register_realisation(
        &self,
        build_key: Hash,
        output: &str,
        path: &StorePath,
    ) -> Result<(), Error> {
        self.db().register_realisation(build_key, output, path)
    }

    /// Store a derivation (by its hash); returns the hash.
    pub fn put_derivation(&self, drv: &Derivation) -> Result<Hash, Error> {
        let hash = drv.hash();
        self.db().put_derivation(hash, &drv.canonical_json())?;
        Ok(hash)
    }

    pub fn get_derivation(&self, hash: Hash) -> Result<Option<Derivation>, Error> {
        let json = self.db().get_derivation(hash)?;
        json.map(|j| {
            Derivation::from_json(&j).map_err(|source| Error::BadDerivation { hash, source })
        })
        .transpose()
    }

    /// Store (replace) the build log of derivation `drv`.
    pub fn put_log(&self, drv: Hash, log: &[u8]) -> Result<(), Error> {
        self.db().put_log(drv, log)
    }

    pub fn get_log(&self, drv: Hash) -> Result<Option<Vec<u8>>, Error> {
        self.db().get_log(drv)
    }

    /// The directory of gc roots.
    pub fn gcroots_dir(&self) -> PathBuf {
        self.home.join("gcroots")
    }

    /// Register the symlink `link` (e.g. a `result` link in a project) as an indirect root:
    /// whatever store path it points at stays alive while the link exists.
    pub fn add_indirect_root(&self, link: &Path) -> Result<PathBuf, Error> {
        let abs = std::path::absolute(link).map_err(io_err("resolve", link))?;
        let name = format!("auto-{}", Hash::digest(abs.as_os_str().as_encoded_bytes()));
        self.replace_root_link(&self.gcroots_dir().join(name), &abs)
    }

    fn replace_root_link(&self, root: &Path, target: &Path) -> Result<PathBuf, Error> {
        replace_symlink(target, root).map_err(io_err("create gc root", root))?;
        Ok(root.to_owned())
    }
}

/// Point the symlink `link` at `target` atomically, replacing whatever symlink (or file) is
/// there: a fresh link under a name of this process's own next to `link` (`symlink(2)`
/// never follows or replaces anything), renamed over `link`. Several processes making the
/// same link at once all succeed; the last rename wins.
pub fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = link
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".tmp-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = link.with_file_name(tmp_name);
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        return std::fs::rename(&tmp, link).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        });
    }
}

/// How objects are written into a temp dir before [`LocalStore::install`] (which syncs them).
fn store_restore() -> RestoreOptions {
    RestoreOptions {
        read_only: true,
        fsync: false,
    }
}

#[cfg(test)]
mod tests;

/// An error and its sources, joined with `: ` (for reports that carry an error as text).
pub use crate::error::chain as error_chain;
