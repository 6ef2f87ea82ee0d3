//! Advisory file locks (`flock`) shared by every bramble process using one store, and the
//! locked temporary directories builds and adds work in.
//!
//! A lock file may be unlinked by `gc` while it holds the lock; whoever acquires a lock
//! therefore checks afterwards that the file it locked is still the one at the path, and
//! retries if not (the classic flock/unlink race).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FlockOperation, flock};

use super::Error;

/// An advisory lock, released when dropped.
#[derive(Debug)]
pub struct PathLock {
    _file: File,
    path: PathBuf,
}

impl PathLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How to take a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    Exclusive,
    Shared,
}

/// Take the lock at `path`: waits if `wait`, else returns `None` when it is held elsewhere.
pub(crate) fn acquire(path: &Path, mode: LockMode, wait: bool) -> Result<Option<PathLock>, Error> {
    let op = match (mode, wait) {
        (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
        (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
        (LockMode::Shared, true) => FlockOperation::LockShared,
        (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
    };
    let io = |op: &'static str| {
        move |source: std::io::Error| Error::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    loop {
        let file = open_lock_file(path)?;
        loop {
            match flock(&file, op) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(io("lock")(e.into())),
            }
        }
        let held = file.metadata().map_err(io("stat lock file"))?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok(Some(PathLock {
                    _file: file,
                    path: path.to_owned(),
                }));
            }
            // Unlinked (or replaced) while we waited: lock the new file instead.
            _ => continue,
        }
    }
}

/// An exclusive lock on one key (a build key): one byte of a shared lock file, locked with
/// an open file description lock, released when dropped.
///
/// Unlike [`PathLock`] it creates no file per key: a build of N derivations would otherwise
/// leave N lock files behind, and creating inodes is what a cold build spends most of its
/// host-side time on (ext4 skips every recently deleted inode of a group when allocating).
/// The byte is chosen by the first 63 bits of the key; two keys sharing them would only
/// make one wait for the other.
#[derive(Debug)]
pub struct KeyLock {
    _file: File,
}

/// Take the exclusive lock of `key` in the lock file `path`, waiting for other holders (in
/// this or another process: every call opens the file anew, and open file description
/// locks conflict between descriptions).
pub(crate) fn acquire_key(
    path: &Path,
    key: &[u8; crate::store::hash::HASH_BYTES],
) -> Result<KeyLock, Error> {
    let io = |op: &'static str| {
        move |source: std::io::Error| Error::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let file = open_lock_file(path)?;
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    let range = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: i64::from_le_bytes(first) & i64::MAX,
        l_len: 1,
        l_pid: 0,
    };
    loop {
        match nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLKW(&range)) {
            Ok(_) => return Ok(KeyLock { _file: file }),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io("lock")(e.into())),
        }
    }
}

/// Open (creating it) the lock file `path`, never following a symlink there.
fn open_lock_file(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| Error::Io {
            op: "open lock file",
            path: path.to_owned(),
            source,
        })
}

/// Remove a lock file while holding its lock (so nobody can hold it through this file).
pub(crate) fn remove_locked(lock: PathLock) {
    let _ = std::fs::remove_file(&lock.path);
    drop(lock);
}

/// A directory under `<home>/tmp/` for a build or an add, on the same file system as the
/// store so a finished tree can be renamed into place. It holds a lock that tells `gc` it is
/// in use; `gc` removes temp directories whose lock is free (left by a crash). Dropping it
/// removes the directory.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    lock: Option<PathLock>,
}

impl TempDir {
    pub(crate) fn create(tmp_root: &Path, locks: &Path, prefix: &str) -> Result<TempDir, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name = format!(
                "{prefix}-{}-{}-{nanos:x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let lock_path = locks.join(format!("tmp-{name}.lock"));
            // Lock first, then create: a temp dir never exists unlocked while in use.
            let Some(lock) = acquire(&lock_path, LockMode::Exclusive, false)? else {
                continue;
            };
            let path = tmp_root.join(&name);
            // Private: a build's or an add's work is nobody else's business.
            match std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&path)
            {
                Ok(()) => {
                    return Ok(TempDir {
                        path,
                        lock: Some(lock),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::Io {
                        op: "create directory",
                        path,
                        source,
                    });
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(err) = crate::store::local::fs::remove(&self.path) {
            tracing::warn!("cannot remove temporary directory: {err}");
        }
        if let Some(lock) = self.lock.take() {
            remove_locked(lock);
        }
    }
}
