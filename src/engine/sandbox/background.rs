//! Work taken off a build's critical path, so the next step of a chain starts while it is
//! done: a thread that removes finished builds' directories and saves successful builds'
//! logs ([`DeferredWork`]), and the fresh directories it makes for later builds
//! ([`SpareDirs`]).
//!
//! Deleting inodes costs a build milliseconds on ext4, and creating a directory right after
//! many were deleted costs tens of microseconds; a chain of small builds would pay both at
//! every step.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use crate::engine::build_dir::{BuildDir, BuildDirError};
use crate::store::Hash;
use crate::store::local::{LocalStore, TempDir};

/// One build's directories. Field order is drop order: the build directory and the staging
/// directory (each removed by descriptor), then, if this was its last holder, the locked
/// temp dir holding them.
#[derive(Debug)]
pub(super) struct BuildDirs {
    /// Mounted at `/build`.
    pub dir: BuildDir,
    /// Mounted at `/bramble/store`, where outputs are created.
    pub staging: BuildDir,
    pub tmp: Arc<TempDir>,
}

impl BuildDirs {
    /// A fresh build directory and staging directory in `tmp`.
    pub fn create(tmp: Arc<TempDir>) -> Result<BuildDirs, BuildDirError> {
        let dir = BuildDir::create(tmp.path())?;
        let staging = BuildDir::create_prefixed(tmp.path(), "store-")?;
        Ok(BuildDirs { dir, staging, tmp })
    }
}

/// How many spare pairs of directories are kept ready.
const SPARE_DIRS: usize = 2;

/// Build and staging directories made ahead of time, which `prepare` takes instead of
/// creating its own. A spare pair is what `prepare` would have made (fresh, empty, random
/// names, 0700, in the same locked temp dir), made earlier; no builder ever sees a pair
/// before its build. Spares left over are removed when the pool is dropped.
#[derive(Debug, Default)]
pub(super) struct SpareDirs {
    pub(super) ready: Mutex<Vec<BuildDirs>>,
}

impl SpareDirs {
    /// A spare pair of directories, if one is ready.
    pub fn take(&self) -> Option<BuildDirs> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Create a fresh pair in `tmp` for a later build, unless [`SPARE_DIRS`] pairs are
    /// ready. A failure is left for `prepare` to meet and report.
    pub fn refill(&self, tmp: Arc<TempDir>) {
        let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner()).len();
        if ready >= SPARE_DIRS {
            return;
        }
        if let Ok(dirs) = BuildDirs::create(tmp) {
            self.ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dirs);
        }
    }
}

/// One piece of deferred work.
#[derive(Debug)]
pub(super) enum Deferred {
    /// Remove a finished build's directories (each by its own `Drop`, build directory first),
    /// then make a spare pair.
    RemoveDirs(BuildDirs),
    /// Save a successful build's log (a failed build's log is saved before it is reported).
    SaveLog {
        drv: Hash,
        name: String,
        log: Vec<u8>,
    },
}

impl Deferred {
    fn run(self, store: &LocalStore, spares: &SpareDirs) {
        match self {
            Deferred::RemoveDirs(dirs) => {
                let tmp = dirs.tmp.clone();
                drop(dirs);
                spares.refill(tmp);
            }
            Deferred::SaveLog { drv, name, log } => save_log(store, drv, &name, &log),
        }
    }
}

/// Store `log` as the log of derivation `drv` (named `name` in a warning if that fails).
pub(super) fn save_log(store: &LocalStore, drv: Hash, name: &str, log: &[u8]) {
    if let Err(e) = store.put_log(drv, log) {
        tracing::warn!("cannot save the log of `{name}`: {e}");
    }
}

/// A thread that does the [`Deferred`] work in order. Dropping it waits for all of it, so
/// every log is saved and every directory removed before the executor is gone.
#[derive(Debug)]
pub(super) struct DeferredWork {
    store: Arc<LocalStore>,
    spares: Arc<SpareDirs>,
    sender: Option<Sender<Deferred>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeferredWork {
    /// Start the thread; it refills `spares` after each removal.
    pub fn start(store: Arc<LocalStore>, spares: Arc<SpareDirs>) -> DeferredWork {
        let (sender, receiver) = std::sync::mpsc::channel::<Deferred>();
        let (on_thread, thread_spares) = (store.clone(), spares.clone());
        let thread = std::thread::Builder::new()
            .name("build-deferred".into())
            .spawn(move || {
                for work in receiver {
                    work.run(&on_thread, &thread_spares);
                }
            });
        match thread {
            Ok(thread) => DeferredWork {
                store,
                spares,
                sender: Some(sender),
                thread: Some(thread),
            },
            // No thread: the work is done where it arises.
            Err(e) => {
                tracing::warn!("cannot start the thread for deferred build work: {e}");
                DeferredWork {
                    store,
                    spares,
                    sender: None,
                    thread: None,
                }
            }
        }
    }

    /// Do `work` on the thread, or here if there is none.
    pub fn submit(&self, work: Deferred) {
        let unsent = match &self.sender {
            Some(sender) => sender.send(work).err().map(|e| e.0),
            None => Some(work),
        };
        if let Some(work) = unsent {
            work.run(&self.store, &self.spares);
        }
    }

    /// Holds a successful build's directories until the scheduler is done with its outputs;
    /// dropping it hands them to the thread.
    pub fn hold(&self, dirs: BuildDirs) -> HeldDirs {
        HeldDirs {
            dirs: Some(dirs),
            sender: self.sender.clone(),
        }
    }
}

impl Drop for DeferredWork {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The directories of a successful build, handed to [`DeferredWork`]'s thread when dropped.
#[derive(Debug)]
pub(super) struct HeldDirs {
    dirs: Option<BuildDirs>,
    sender: Option<Sender<Deferred>>,
}

impl Drop for HeldDirs {
    fn drop(&mut self) {
        if let (Some(dirs), Some(sender)) = (self.dirs.take(), &self.sender) {
            // If the thread is gone the directories come back in the error and are
            // removed here.
            let _ = sender.send(Deferred::RemoveDirs(dirs));
        }
    }
}
