//! The real executor: runs one resolved derivation in its own `bramble-sandbox` (DESIGN §4).
//!
//! Per build:
//!
//! 1. Directories: a private build directory, mounted at `/build`, and a staging directory
//!    `store-<random>`, mounted writable at `/bramble/store`, where the builder creates its
//!    outputs at their placeholder paths (random names, mode 0700, see
//!    [`super::build_dir`]). Both live in one locked temporary directory of the store per
//!    executor, so `gc` leaves them alone. Outputs are not pre-created: a builder may make
//!    `$out` a file, a directory or a symlink, as with Nix.
//! 2. The derivation's sources (the files of its `sources` store object) are copied into
//!    the build directory.
//! 3. The spec ([`spec`]): exactly the input closure, read-only at `/bramble/store/<path>`
//!    over the staging area; `$out` and `$<output>` pointing at the placeholders; no
//!    network; the build's limits (time, silence, memory, processes: the derivation's own,
//!    else [`DefaultLimits`]), which the helper enforces.
//! 4. A helper started ahead of time (`warm.rs`) takes the spec and reports the builder's
//!    status as soon as the sandbox is empty. Its stdout and stderr share one pipe, read
//!    into memory (the last [`MAX_LOG_BYTES`]) and stored as the derivation's log in the
//!    store database: no log file a builder could reach. Cancelling sends the helper
//!    SIGTERM (it kills the whole sandbox), then SIGKILL after a grace period.
//! 5. On success the staged outputs go back to the scheduler, which adds them to the store;
//!    the directories go when the [`Built`] is dropped. On failure they are removed at once,
//!    unless `keep_failed` moves the build directory to the store's `tmp/` (where `gc`
//!    removes it later).
//!
//! Removing a finished build's directories, saving a successful build's log and making the
//! next build's directories are done off the critical path (`background.rs`). Dropping the
//! executor waits for that work, so no directory outlives the command and no log is lost.
//!
//! [`interactive`] runs another program in a build's environment, or a `run()` value's
//! sandbox, with the caller's terminal (`bramble shell`, `bramble run`).

mod background;
pub mod interactive;
pub mod spec;
mod warm;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bramble_sandbox::Spec;

use crate::store::BuildLimits;
use crate::store::local::{LocalStore, TempDir};

use super::build_dir::BuildDir;
use super::{Built, Cancel, ExecError, Executor, Job, SetupError, StagedOutput};
use background::{BuildDirs, Deferred, DeferredWork, SpareDirs};

pub use interactive::{Interactive, prepare_shell, run_interactive};
pub use spec::{ROOT_VIEW_LINKS, add_root_view, builder_path, root_path};
pub use warm::MAX_LOG_BYTES;

/// Lines of the log shown when a build fails.
pub const LOG_TAIL_LINES: usize = 25;

/// How builds run.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The `bramble-sandbox` helper.
    pub helper: PathBuf,
    /// Keep the build directory of a failed build and name it in the error.
    pub keep_failed: bool,
    /// The limits of a build whose derivation sets none.
    pub limits: DefaultLimits,
}
/// The limits every build gets where its derivation sets none (`derivation(..., timeout =
/// ...)` wins; the command line's `--timeout`, `--max-silent-time`, `--max-memory` and
/// `--max-processes` change these). `None` is no limit. The defaults:
///
/// - time: [`DEFAULT_TIMEOUT_MS`], 24 hours. Long enough for the longest honest builds on a
///   small machine (a toolchain bootstrap, a browser), short enough that a hung build ends
///   within a day instead of never (Nix has no default; Hydra's is 10 hours).
/// - silence: [`DEFAULT_SILENCE_MS`], 2 hours without a byte of output (Hydra's
///   `maxSilent`): a hang usually goes quiet, while a long link or test step rarely says
///   nothing for that long.
/// - memory: half the machine's memory for each process (`RLIMIT_DATA`, see
///   `bramble_sandbox`'s `limits`): one runaway process is refused memory before the
///   machine runs out, while a big compiler or linker process still fits.
/// - processes: [`DEFAULT_PROCESSES`] processes and threads at once per build (counted per
///   sandbox): ample for `make -j` with threaded compilers, and a fork bomb stops there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultLimits {
    pub timeout_ms: Option<u64>,
    pub silence_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub processes: Option<u32>,
}

/// Default time limit of a build: 24 hours.
pub const DEFAULT_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Default silence limit of a build: 2 hours.
pub const DEFAULT_SILENCE_MS: u64 = 2 * 3600 * 1000;
/// Default process limit of a build.
pub const DEFAULT_PROCESSES: u32 = 4096;
/// Memory limit when the machine's memory cannot be read: 8 GiB.
const FALLBACK_MEMORY: u64 = 8 << 30;

impl Default for DefaultLimits {
    fn default() -> Self {
        DefaultLimits {
            timeout_ms: Some(DEFAULT_TIMEOUT_MS),
            silence_ms: Some(DEFAULT_SILENCE_MS),
            memory_bytes: Some(machine_memory().map_or(FALLBACK_MEMORY, |m| m / 2)),
            processes: Some(DEFAULT_PROCESSES),
        }
    }
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), in bytes.
fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The limits of one build: the derivation's own, else the defaults.
fn effective_limits(drv: &BuildLimits, defaults: &DefaultLimits) -> DefaultLimits {
    DefaultLimits {
        timeout_ms: drv.timeout_ms.or(defaults.timeout_ms),
        silence_ms: drv.silence_ms.or(defaults.silence_ms),
        memory_bytes: drv.memory_bytes.or(defaults.memory_bytes),
        processes: drv.processes.or(defaults.processes),
    }
}

/// Runs derivations with `bramble-sandbox` against a [`LocalStore`].
#[derive(Debug)]
pub struct SandboxExecutor {
    config: SandboxConfig,
    store: Arc<LocalStore>,
    /// The temp dir holding the builds' directories, created by the first build.
    tmp: std::sync::Mutex<Option<Arc<TempDir>>>,
    /// Dropped before the spares, so that it has finished making them.
    deferred: DeferredWork,
    spares: Arc<SpareDirs>,
    warm: warm::WarmPool,
}

impl SandboxExecutor {
    pub fn new(config: SandboxConfig, store: Arc<LocalStore>) -> SandboxExecutor {
        let spares = Arc::new(SpareDirs::default());
        SandboxExecutor {
            warm: warm::WarmPool::new(config.helper.clone()),
            config,
            deferred: DeferredWork::start(Arc::clone(&store), spares.clone()),
            spares,
            store,
            tmp: std::sync::Mutex::new(None),
        }
    }

    fn tmp(&self) -> Result<Arc<TempDir>, ExecError> {
        let mut tmp = self.tmp.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tmp) = tmp.as_ref() {
            return Ok(tmp.clone());
        }
        let created = Arc::new(self.store.tmp_dir("build").map_err(SetupError::TempDir)?);
        *tmp = Some(created.clone());
        Ok(created)
    }
}

impl Executor for SandboxExecutor {
    type Prepared = Prepared;

    fn prepare(&self, job: &Job) -> Result<Prepared, ExecError> {
        let started = std::time::Instant::now();
        let dirs = match self.spares.take() {
            Some(dirs) => Ok(dirs),
            None => self.tmp().and_then(new_dirs),
        };
        let limits = effective_limits(&job.drv.limits, &self.config.limits);
        let prepared = dirs
            .and_then(|dirs| prepare(&self.store, dirs, job))
            .map(|mut p| {
                p.spec.time_limit_ms = limits.timeout_ms;
                p.spec.silence_limit_ms = limits.silence_ms;
                p.spec.memory_limit_bytes = limits.memory_bytes;
                p.spec.process_limit = limits.processes;
                p
            });
        tracing::debug!(drv = %job.drv.name, elapsed = ?started.elapsed(), "prepared");
        prepared
    }

    async fn execute(
        &self,
        job: Job,
        prepared: Prepared,
        cancel: Cancel,
    ) -> Result<Built, ExecError> {
        let Prepared { dirs, spec } = prepared;
        let started = std::time::Instant::now();
        let writable = [dirs.dir.path().to_owned(), dirs.staging.path().to_owned()];
        let run =
            warm::run_helper(&self.warm, &self.config.helper, &spec, &writable, &cancel).await;
        tracing::debug!(drv = %job.drv.name, elapsed = ?started.elapsed(), "sandbox exited");
        let (ended, log) = run?;
        let log_tail = tail(&log, LOG_TAIL_LINES);
        if ended.success() {
            self.deferred.submit(Deferred::SaveLog {
                drv: job.drv_hash,
                name: job.drv.name.clone(),
                log,
            });
        } else {
            // Saved before the failure is reported: its message names `bramble log`.
            let (store, drv, name) = (self.store.clone(), job.drv_hash, job.drv.name.clone());
            tokio::task::spawn_blocking(move || background::save_log(&store, drv, &name, &log))
                .await
                .expect("saving a log does not panic");
            // Field order is drop order: the build directory goes (or is kept) first.
            let BuildDirs { dir, staging, tmp } = dirs;
            let kept = if self.config.keep_failed {
                keep(dir, &tmp)
            } else {
                drop(dir);
                None
            };
            drop(staging);
            return Err(warm::failure(ended, &spec, log_tail, kept));
        }
        let mut outputs = Vec::new();
        for name in &job.drv.outputs {
            let placeholder = job.drv.placeholder(job.build_key, name);
            let path = dirs.staging.path().join(placeholder.to_string());
            if std::fs::symlink_metadata(&path).is_err() {
                return Err(ExecError::MissingOutput {
                    output: name.clone(),
                });
            }
            outputs.push(StagedOutput {
                name: name.clone(),
                placeholder,
                path,
                scratch: Some(dirs.tmp.path().to_owned()),
                required_refs: root_path(&job.drv).ok().flatten().into_iter().collect(),
                stored: None,
            });
        }
        Ok(Built {
            outputs,
            workspace: Some(Box::new(self.deferred.hold(dirs))),
            fetched: None,
        })
    }
}
/// Move a failed build's directory out of its temporary directory into the store's `tmp/`.
/// As root, everything in it is given back to root first (the builder was an unprivileged
/// id, see [`give`]).
fn keep(dir: BuildDir, tmp: &TempDir) -> Option<PathBuf> {
    let path = dir.keep();
    if let Ok(Some(owner)) = sandbox_id(None)
        && let Err(e) = chown_tree(&path, owner)
    {
        tracing::warn!("cannot give `{}` back to its owner: {e}", path.display());
    }
    // Private, with the builder's world-writable and setuid/sticky modes taken away; a
    // directory that cannot be made so is removed rather than kept.
    if let Err(e) = super::build_dir::make_private(&path) {
        tracing::warn!("cannot make `{}` private, removing it: {e}", path.display());
        if let Some((parent, name)) = path.parent().zip(path.file_name().and_then(|n| n.to_str()))
            && let Ok(parent) = std::fs::File::open(parent)
        {
            let _ = super::build_dir::remove_at(&parent, name);
        }
        return None;
    }
    let name = path.file_name()?.to_owned();
    let target = tmp.path().parent()?.join(name);
    match std::fs::rename(&path, &target) {
        Ok(()) => Some(target),
        Err(e) => {
            tracing::warn!("cannot keep `{}`: {e}", path.display());
            Some(path)
        }
    }
}

/// When bramble runs as root, the host id its builders run as: with `helper`, the sandbox
/// of that helper process (see [`bramble_sandbox::ids`], the range from
/// [`crate::env::BRAMBLE_SANDBOX_IDS`]); without, root's own (0, to give a builder's files
/// back). `None` for an ordinary user, whose builders are that user.
fn sandbox_id(helper: Option<u32>) -> io::Result<Option<u32>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let Some(helper) = helper else {
        return Ok(Some(0));
    };
    let range = bramble_sandbox::IdRange::from_env().map_err(io::Error::other)?;
    Ok(Some(range.host_id(helper)))
}

/// As root, gives a build's writable directories (the build directory with the sources
/// copied into it, the staging directory) to the unprivileged host id the builder of the
/// helper process `helper` runs as, before the spec goes out. Nothing else is in them yet.
fn give(dirs: &[PathBuf], helper: u32) -> io::Result<()> {
    let Some(id) = sandbox_id(Some(helper))? else {
        return Ok(());
    };
    dirs.iter().try_for_each(|dir| chown_tree(dir, id))
}

/// `lchown` of `dir` and everything below it to `id` (uid and gid), never following a
/// symbolic link. Used on a builder's directories only while no process of the builder runs
/// (before the spec is sent, after the sandbox is empty), so nothing changes them meanwhile.
fn chown_tree(dir: &Path, id: u32) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        std::os::unix::fs::lchown(entry.path(), Some(id), Some(id))?;
    }
    Ok(())
}

/// One build's directories and its spec.
#[derive(Debug)]
pub struct Prepared {
    dirs: BuildDirs,
    spec: Spec,
}

/// A fresh build directory and staging directory in `tmp`.
fn new_dirs(tmp: Arc<TempDir>) -> Result<BuildDirs, ExecError> {
    Ok(BuildDirs::create(tmp).map_err(SetupError::BuildDir)?)
}

/// Copy the sources into the (fresh) build directory of `dirs` and write the spec.
fn prepare(store: &LocalStore, dirs: BuildDirs, job: &Job) -> Result<Prepared, ExecError> {
    if let Some(sources) = &job.drv.sources {
        let from = store.host_path(&sources.path);
        copy_tree(&from, dirs.dir.path())
            .map_err(|source| SetupError::CopySources { path: from, source })?;
    }
    let spec = spec::build(store, &dirs, job)?;
    Ok(Prepared { dirs, spec })
}

/// The last `lines` lines of a log.
pub fn tail(log: &[u8], lines: usize) -> Vec<String> {
    let start = log.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&log[start..]);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// Copy a store object (trusted: read-only, written by the store) into a fresh directory.
/// Regular files keep their executable bit, symlinks are recreated, directories created.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a sources object must be a directory",
        ));
    }
    for entry in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry
            .path()
            .strip_prefix(from)
            .expect("walkdir yields paths under its root");
        let target = to.join(rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            let exec = entry
                .metadata()
                .map_err(io::Error::other)?
                .permissions()
                .mode()
                & 0o111;
            let mode = if exec != 0 { 0o755 } else { 0o644 };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
