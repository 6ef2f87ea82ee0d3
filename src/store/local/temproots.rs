//! Temporary roots: the store paths a running bramble process uses, kept from `gc` until
//! the process ends (Nix's temproots).
//!
//! A process that learns of a path — a source it added during evaluation, an output it
//! built, a realisation it looked up as a build's input — records it in its own file
//! `<home>/temproots/<pid>-<n>-<nanos>` (one line per path), which it holds locked
//! (`flock`, exclusive) for as long as the store is open. `gc` reads the files it cannot
//! lock (their processes live) and treats their paths as roots; a file it can lock belongs
//! to a process that ended, and is deleted.
//!
//! Ordering with `gc`: a path is recorded while the recorder holds `gc.lock` shared and has
//! just seen the path valid, and `gc` holds `gc.lock` exclusively from before it reads the
//! temporary roots until it has deleted what it deletes. So a path is either recorded
//! before `gc` starts (and kept), or looked at after `gc` ended (and its validity is then
//! what the recorder sees). The file itself is created and locked under the shared lock
//! too, so `gc` never sees it unlocked while its process lives.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FlockOperation, flock};

use super::{Error, io_err};
use crate::store::StorePath;

/// This process's temporary roots in one store.
#[derive(Debug)]
pub(super) struct TempRoots {
    dir: PathBuf,
    state: Mutex<Option<Recorded>>,
}

#[derive(Debug)]
struct Recorded {
    /// Locked exclusively while this process lives (the lock is the sign of life).
    file: File,
    path: PathBuf,
    paths: HashSet<StorePath>,
}

impl TempRoots {
    pub(super) fn new(dir: PathBuf) -> TempRoots {
        TempRoots {
            dir,
            state: Mutex::new(None),
        }
    }

    /// Record `paths`. The caller holds `gc.lock` shared and knows every path is valid.
    pub(super) fn record<'p>(
        &self,
        paths: impl IntoIterator<Item = &'p StorePath>,
    ) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        let mut new = Vec::new();
        for path in paths {
            if state.as_ref().is_some_and(|r| r.paths.contains(path)) {
                continue;
            }
            text.push_str(&path.to_string());
            text.push('\n');
            new.push(path.clone());
        }
        if new.is_empty() {
            return Ok(());
        }
        if state.is_none() {
            *state = Some(self.create()?);
        }
        let recorded = state.as_mut().unwrap_or_else(|| unreachable!());
        // One write of whole lines (the file is opened for appending).
        recorded
            .file
            .write_all(text.as_bytes())
            .map_err(io_err("write", &recorded.path))?;
        recorded.paths.extend(new);
        Ok(())
    }

    fn create(&self) -> Result<Recorded, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = self.dir.join(format!(
                "{}-{}-{nanos:x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let file = match OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &path)(e)),
            };
            flock(&file, FlockOperation::NonBlockingLockExclusive)
                .map_err(|e| io_err("lock", &path)(e.into()))?;
            return Ok(Recorded {
                file,
                path,
                paths: HashSet::new(),
            });
        }
    }
}

impl Drop for TempRoots {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(recorded) = state.take() {
            // Still locked: nobody else removes it meanwhile.
            let _ = std::fs::remove_file(&recorded.path);
        }
    }
}

/// The temporary roots of the live processes in `dir`; files of processes that ended are
/// deleted (unless `dry_run`). The caller holds `gc.lock` exclusively.
///
/// The roots of `own` (the store running the collection) are not among them: a process
/// collecting garbage in its own store asked for it, and what it is using is held by
/// locks as in any process.
pub(super) fn live_roots(
    dir: &Path,
    own: &TempRoots,
    dry_run: bool,
) -> Result<Vec<StorePath>, Error> {
    let own = own
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|r| r.path.clone());
    let mut roots = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(roots),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err("list", dir))?.path();
        if own.as_deref() == Some(path.as_path()) {
            continue;
        }
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // Not a regular file we can open (a symlink someone planted): not ours.
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                // Its process ended.
                if !dry_run {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(e) => return Err(io_err("lock", &path)(e.into())),
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(io_err("read", &path))?;
        // A line being appended right now cannot be: recorders hold `gc.lock` shared.
        roots.extend(text.lines().filter_map(|l| l.parse::<StorePath>().ok()));
    }
    Ok(roots)
}
