//! The real executor: runs one resolved derivation in its own `bramble-sandbox`.
//!
//! Per build:
//!
//! 1. In a locked temporary directory of the store (so `gc` leaves it alone), one per
//!    executor and shared by its builds, a fresh private build directory (usually made
//!    ahead of time by the chores thread, see [`Chores`]) (see
//!    [`super::workspace`]: random name, 0700), mounted at `/build`, and a fresh staging
//!    directory `store-<random>` (0700), mounted writable at `/bramble/store`, where the
//!    builder creates its outputs at their placeholder paths. (A temp dir per build cost a
//!    lock file and a directory more per build; on ext4 creating inodes gets slower with
//!    every inode deleted in the last seconds, so these add up in large graphs.) Outputs are not
//!    pre-created: a builder may make `$out` a file (`echo hi > $out`), a directory or a
//!    symlink, as with Nix.
//! 2. The derivation's sources (the files of its `sources` store object) are copied into
//!    the build directory.
//! 3. The spec: exactly the input closure bound read-only at `/bramble/store/<path>` on top
//!    of the staging area, `$out` and `$<output>` pointing at the placeholders, no network.
//!    The builder is the derivation's builder if absolute (usually a path in an input's
//!    output); a relative builder names a file of the derivation's own sources, run as
//!    `/build/<builder>`, so a project can bootstrap from a static binary it ships. The
//!    build's limits (time, silence, memory, processes: the derivation's own, else
//!    [`DefaultLimits`]) go into the spec; the helper enforces them.
//! 4. The helper runs with the spec on stdin and its stdout and stderr on one pipe, read
//!    into memory (the last [`MAX_LOG_BYTES`]) and stored as the derivation's log in the
//!    store database when the build ends: no log file a builder could reach, no extra
//!    inode. The helper was started ahead of time (`--warm`, see [`WarmPool`]): its
//!    namespaces, root, `/proc` and `/dev` are ready when the spec comes, on a socket that
//!    also brings back the builder's status as soon as the sandbox is empty
//!    (`--status-fd 0`), before the kernel tears the namespaces down. Both are the helper's
//!    own work moved off a build's critical path: one helper per derivation, as DESIGN §4
//!    says, only started earlier. Cancelling sends the helper SIGTERM (it kills the whole
//!    sandbox), then SIGKILL if it has not exited after a grace period.
//! 5. On success the staged outputs are handed back (the scheduler adds them to the store,
//!    staging the final trees in the same temporary directory); the directories go when the
//!    [`Built`] is dropped, the build directory through descriptors. On failure they are
//!    removed at once, unless `keep_failed` moves the build directory to the store's `tmp/`
//!    (where `gc` removes it later).
//!
//! Removing a finished build's directories and saving a successful build's log are not on
//! the critical path: dropping the [`Built`] hands the directories to the executor's chores
//! thread (and the log went there when the sandbox exited), so the scheduler registers the
//! outputs and starts the dependents at once (deleting inodes on ext4 costs milliseconds
//! per build). Dropping the executor waits until every chore handed over is done, so no
//! directory outlives the build command and no log is lost.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bramble_sandbox::{Bind, Spec, Status};
use tokio::io::AsyncWriteExt;

use crate::store::limits::{format_duration_ms, format_size};
use crate::store::local::{LocalStore, TempDir};
use crate::store::{BuildLimits, Derivation, Hash, STORE_DIR, StorePath};

use super::workspace::BuildDir;
use super::{Built, Cancel, ExecError, Executor, Job, StagedOutput};

/// Lines of the log shown when a build fails.
pub const LOG_TAIL_LINES: usize = 25;

/// How long a cancelled helper gets to tear its sandbox down before SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(3);

/// Largest log kept per build (its end is kept).
pub const MAX_LOG_BYTES: u64 = 32 << 20;

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
    chores: Chores,
    warm: WarmPool,
}

impl SandboxExecutor {
    pub fn new(config: SandboxConfig, store: Arc<LocalStore>) -> SandboxExecutor {
        SandboxExecutor {
            warm: WarmPool::new(config.helper.clone()),
            config,
            chores: Chores::start(Arc::clone(&store)),
            store,
            tmp: std::sync::Mutex::new(None),
        }
    }

    fn tmp(&self) -> Result<Arc<TempDir>, ExecError> {
        let mut tmp = self.tmp.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tmp) = tmp.as_ref() {
            return Ok(tmp.clone());
        }
        let created = Arc::new(self.store.tmp_dir("build").map_err(|e| ExecError::Setup {
            message: e.to_string(),
        })?);
        *tmp = Some(created.clone());
        Ok(created)
    }
}

/// A finished build's directories: the build directory and the staging directory (removed
/// by descriptor), then (if this was its last holder) the locked temp dir holding them.
type Dirs = (BuildDir, BuildDir, Arc<TempDir>);

/// Spare build and staging directories the chores thread keeps ready (see [`Chores`]).
const SPARE_DIRS: usize = 2;

/// Fresh build directory pairs made ahead of time, with the temp dir holding them.
type Spares = Arc<std::sync::Mutex<Vec<Dirs>>>;

/// Work taken off a build's critical path: the next step of a chain starts while it is done.
#[derive(Debug)]
enum Chore {
    /// Remove a finished build's directories (each by its own `Drop`, build directory first).
    Remove(Dirs),
    /// Save a successful build's log (a failed build's log is saved before it is reported).
    SaveLog {
        drv: Hash,
        name: String,
        log: Vec<u8>,
    },
}

impl Chore {
    fn run(self, store: &LocalStore, spares: &Spares) {
        match self {
            Chore::Remove(dirs) => {
                let tmp = dirs.2.clone();
                drop(dirs);
                make_spare(spares, tmp);
            }
            Chore::SaveLog { drv, name, log } => save_log(store, drv, &name, &log),
        }
    }
}

/// Create a fresh build and staging directory in `tmp` for a later build, unless
/// [`SPARE_DIRS`] pairs are ready. A failure is left for `prepare` to meet and report.
fn make_spare(spares: &Spares, tmp: Arc<TempDir>) {
    let ready = spares.lock().unwrap_or_else(|e| e.into_inner()).len();
    if ready >= SPARE_DIRS {
        return;
    }
    let made = BuildDir::create(tmp.path()).and_then(|dir| {
        let staging = BuildDir::create_prefixed(tmp.path(), "store-")?;
        Ok((dir, staging))
    });
    if let Ok((dir, staging)) = made {
        let mut spares = spares.lock().unwrap_or_else(|e| e.into_inner());
        spares.push((dir, staging, tmp));
    }
}

fn save_log(store: &LocalStore, drv: Hash, name: &str, log: &[u8]) {
    if let Err(e) = store.put_log(drv, log) {
        tracing::warn!("cannot save the log of `{name}`: {e}");
    }
}

/// A thread that does the [`Chore`]s in order. Dropping it waits for all of them, so every
/// log is saved and every directory removed before the executor is gone.
///
/// After removing a finished build's directories it creates a fresh pair for a later
/// build (up to [`SPARE_DIRS`] pairs), which `prepare` takes instead of creating its own:
/// creating two directories costs a chain step tens of microseconds on ext4, more right
/// after many inodes were deleted. A spare pair is what `prepare` would have made (fresh,
/// empty, random names, 0700, in the same locked temp dir), made earlier; no builder ever
/// sees a pair before its build. Spares left over are removed when the executor is dropped.
#[derive(Debug)]
struct Chores {
    store: Arc<LocalStore>,
    sender: Option<std::sync::mpsc::Sender<Chore>>,
    thread: Option<std::thread::JoinHandle<()>>,
    spares: Spares,
}

impl Chores {
    fn start(store: Arc<LocalStore>) -> Chores {
        let (sender, receiver) = std::sync::mpsc::channel::<Chore>();
        let spares = Spares::default();
        let (on_thread, thread_spares) = (store.clone(), spares.clone());
        let thread = std::thread::Builder::new()
            .name("build-chores".into())
            .spawn(move || {
                for chore in receiver {
                    chore.run(&on_thread, &thread_spares);
                }
            });
        match thread {
            Ok(thread) => Chores {
                store,
                sender: Some(sender),
                thread: Some(thread),
                spares,
            },
            // No thread: chores are done where they arise.
            Err(e) => {
                tracing::warn!("cannot start the build chores thread: {e}");
                Chores {
                    store,
                    sender: None,
                    thread: None,
                    spares,
                }
            }
        }
    }

    /// A spare pair of directories, if one is ready.
    fn spare(&self) -> Option<Dirs> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Do `chore` on the thread, or here if there is none.
    fn submit(&self, chore: Chore) {
        let unsent = match &self.sender {
            Some(sender) => sender.send(chore).err().map(|e| e.0),
            None => Some(chore),
        };
        if let Some(chore) = unsent {
            chore.run(&self.store, &self.spares);
        }
    }

    fn workspace(&self, dirs: Dirs) -> Workspace {
        Workspace {
            dirs: Some(dirs),
            chores: self.sender.clone(),
        }
    }
}

impl Drop for Chores {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The directories of a successful build, handed to the chores thread when dropped.
#[derive(Debug)]
struct Workspace {
    dirs: Option<Dirs>,
    chores: Option<std::sync::mpsc::Sender<Chore>>,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let (Some(dirs), Some(chores)) = (self.dirs.take(), &self.chores) {
            // If the thread is gone the directories come back in the error and are
            // removed here.
            let _ = chores.send(Chore::Remove(dirs));
        }
    }
}

impl Executor for SandboxExecutor {
    type Prepared = Prepared;

    fn prepare(&self, job: &Job) -> Result<Prepared, ExecError> {
        let started = std::time::Instant::now();
        let dirs = match self.chores.spare() {
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
        let Prepared {
            tmp,
            dir,
            staging,
            spec,
        } = prepared;
        let started = std::time::Instant::now();
        let writable = [dir.path().to_owned(), staging.path().to_owned()];
        let run = run_helper(&self.warm, &self.config, &spec, &writable, &cancel).await;
        tracing::debug!(drv = %job.drv.name, elapsed = ?started.elapsed(), "sandbox exited");
        let (status, log) = run?;
        let log_tail = tail(&log, LOG_TAIL_LINES);
        if status.success() {
            self.chores.submit(Chore::SaveLog {
                drv: job.drv_hash,
                name: job.drv.name.clone(),
                log,
            });
        } else {
            // Saved before the failure is reported: its message names `bramble log`.
            let (store, drv, name) = (self.store.clone(), job.drv_hash, job.drv.name.clone());
            tokio::task::spawn_blocking(move || save_log(&store, drv, &name, &log))
                .await
                .expect("saving a log does not panic");
        }
        if !status.success() {
            let kept = if self.config.keep_failed {
                keep(dir, &tmp)
            } else {
                drop(dir);
                None
            };
            return Err(match status {
                Ended::Status(Status::Helper { code, message }) => {
                    match limit_failure(code, &spec) {
                        Some((status, hint)) => ExecError::Failed {
                            status,
                            log_tail,
                            kept,
                            hint: Some(hint),
                        },
                        None => sandbox_failure(code, &message, log_tail, kept),
                    }
                }
                Ended::Status(Status::Builder(code)) => {
                    let (status, hint) = match out_of_memory(&spec, &log_tail) {
                        Some((limit, hint)) => (
                            format!(
                                "exceeded its memory limit of {limit} per process ({}: an allocation failed)",
                                describe_code(code)
                            ),
                            Some(hint),
                        ),
                        None => (describe_code(code), None),
                    };
                    ExecError::Failed {
                        status,
                        log_tail,
                        kept,
                        hint,
                    }
                }
                Ended::Exit(status) => ExecError::Failed {
                    status: describe(status),
                    log_tail,
                    kept,
                    hint: None,
                },
            });
        }
        let mut outputs = Vec::new();
        for name in &job.drv.outputs {
            let placeholder = job.drv.placeholder(job.build_key, name);
            let path = staging.path().join(placeholder.to_string());
            if std::fs::symlink_metadata(&path).is_err() {
                return Err(ExecError::MissingOutput {
                    output: name.clone(),
                });
            }
            outputs.push(StagedOutput {
                name: name.clone(),
                placeholder,
                path,
                scratch: Some(tmp.path().to_owned()),
                required_refs: root_path(&job.drv).ok().flatten().into_iter().collect(),
                stored: None,
            });
        }
        Ok(Built {
            outputs,
            workspace: Some(Box::new(self.chores.workspace((dir, staging, tmp)))),
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
    if let Err(e) = super::workspace::make_private(&path) {
        tracing::warn!("cannot make `{}` private, removing it: {e}", path.display());
        if let Some((parent, name)) = path.parent().zip(path.file_name().and_then(|n| n.to_str()))
            && let Ok(parent) = std::fs::File::open(parent)
        {
            let _ = super::workspace::remove_at(&parent, name);
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

/// One build's directories (fields in drop order: build directory, staging directory,
/// then the temp dir holding them) and its spec.
#[derive(Debug)]
pub struct Prepared {
    dir: BuildDir,
    /// Mounted at `/bramble/store`, where outputs are created.
    staging: BuildDir,
    tmp: Arc<TempDir>,
    spec: Spec,
}

/// A fresh build directory and staging directory in `tmp`.
fn new_dirs(tmp: Arc<TempDir>) -> Result<Dirs, ExecError> {
    let workspace = |e: super::workspace::WorkspaceError| ExecError::Setup {
        message: e.to_string(),
    };
    let dir = BuildDir::create(tmp.path()).map_err(workspace)?;
    let staging = BuildDir::create_prefixed(tmp.path(), "store-").map_err(workspace)?;
    Ok((dir, staging, tmp))
}

/// Copy the sources into the (fresh) build directory of `dirs` and write the spec.
fn prepare(store: &LocalStore, dirs: Dirs, job: &Job) -> Result<Prepared, ExecError> {
    let setup = |what: &str, path: &Path, e: io::Error| ExecError::Setup {
        message: format!("{what} `{}`: {e}", path.display()),
    };
    let (dir, staging, tmp) = dirs;
    if let Some(sources) = &job.drv.sources {
        let from = store.host_path(&sources.path);
        copy_tree(&from, dir.path()).map_err(|e| setup("cannot copy sources from", &from, e))?;
    }
    let tool =
        super::tool::tool_of(&job.drv.builder).map_err(|message| ExecError::Setup { message })?;
    let mut spec = build_spec(store, &dir, staging.path(), job);
    if let Some(name) = tool {
        add_tool(&mut spec, dir.path(), name)?;
    }
    if let Some(root) = root_path(&job.drv)? {
        add_root_view(&mut spec, &store.host_path(&root))?;
    }
    spec.validate().map_err(|e| ExecError::Setup {
        message: e.to_string(),
    })?;
    Ok(Prepared {
        dir,
        staging,
        tmp,
        spec,
    })
}

/// Copy tool `name` into `build_dir`'s `.tool/` and run it as the builder, with the
/// derivation's arguments after the program (see [`super::tool`]).
fn add_tool(spec: &mut Spec, build_dir: &Path, name: &str) -> Result<(), ExecError> {
    let setup = |message: String| ExecError::Setup { message };
    let entries = super::tool::entries(name).map_err(setup)?;
    let host = build_dir.join(super::tool::SANDBOX_TOOL_DIR);
    for (file, from) in &entries {
        let to = host.join(file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| setup(format!("cannot create `{}`: {e}", parent.display())))?;
        }
        std::fs::copy(from, &to).map_err(|e| {
            setup(format!(
                "cannot copy `{}` of the tool `{name}`: {e}",
                from.display()
            ))
        })?;
    }
    let inside =
        Path::new(bramble_sandbox::spec::SANDBOX_BUILD_DIR).join(super::tool::SANDBOX_TOOL_DIR);
    spec.builder = inside.join("lib").join(super::tool::LOADER);
    let mut args = vec![
        "--library-path".to_owned(),
        inside.join("lib").to_string_lossy().into_owned(),
        inside.join("bin").join(name).to_string_lossy().into_owned(),
    ];
    args.append(&mut spec.args);
    spec.args = args;
    Ok(())
}

/// The directories a root view links at the top of the sandbox (merged `/usr`).
pub const ROOT_VIEW_LINKS: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// The store path of a resolved derivation's root view (`Derivation::root`), if it has one.
pub fn root_path(drv: &Derivation) -> Result<Option<StorePath>, ExecError> {
    let Some(root) = &drv.root else {
        return Ok(None);
    };
    let bad = || ExecError::Setup {
        message: format!(
            "the root view `{root}` of `{}` is not a store path (`root` takes a derivation, \
             e.g. a Debian package set)",
            drv.name
        ),
    };
    let rest = root
        .strip_prefix(STORE_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.contains('/'))
        .ok_or_else(bad)?;
    rest.parse().map(Some).map_err(|_| bad())
}

/// Show the tree at `host_root` as the sandbox's root view: its `usr/` read-only at `/usr`,
/// `/bin`, `/sbin`, `/lib`, `/lib64` linking into it. `bramble run` and `bramble shell` use
/// the same view as the build.
pub fn add_root_view(spec: &mut Spec, host_root: &Path) -> Result<(), ExecError> {
    let usr = host_root.join("usr");
    match std::fs::symlink_metadata(&usr) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(ExecError::Setup {
                message: format!(
                    "the root view `{}` has no `usr` directory (is it a package set?)",
                    host_root.display()
                ),
            });
        }
    }
    spec.binds.push(Bind {
        source: usr,
        target: "/usr".into(),
        writable: false,
    });
    for dir in ROOT_VIEW_LINKS {
        spec.symlinks.push(bramble_sandbox::Symlink {
            path: Path::new("/").join(dir),
            to: Path::new("usr").join(dir),
        });
    }
    Ok(())
}

/// The sandbox spec of a build.
fn build_spec(store: &LocalStore, dir: &BuildDir, staging: &Path, job: &Job) -> Spec {
    let drv = &job.drv;
    let mut spec = Spec::new(builder_path(drv));
    spec.args = drv.args.clone();
    spec.env = output_env(drv, job);
    spec.binds.push(Bind {
        source: staging.to_owned(),
        target: STORE_DIR.into(),
        writable: true,
    });
    spec.binds.push(Bind {
        source: dir.path().to_owned(),
        target: bramble_sandbox::spec::SANDBOX_BUILD_DIR.into(),
        writable: true,
    });
    for input in &job.inputs {
        spec.binds.push(Bind {
            source: store.host_path(input),
            target: input.in_store_dir().into(),
            writable: false,
        });
    }
    spec
}

/// The builder as a path inside the sandbox: absolute as given, else a file in `/build`.
pub fn builder_path(drv: &Derivation) -> PathBuf {
    if drv.builder.starts_with('/') {
        PathBuf::from(&drv.builder)
    } else {
        Path::new(bramble_sandbox::spec::SANDBOX_BUILD_DIR)
            .join(drv.builder.trim_start_matches("./"))
    }
}

/// The derivation's env plus `$<output>` for every output (`$out` included), which win over
/// a variable of the same name, as in Nix.
fn output_env(drv: &Derivation, job: &Job) -> BTreeMap<String, String> {
    let mut env = drv.env.clone();
    for output in &drv.outputs {
        let placeholder: StorePath = drv.placeholder(job.build_key, output);
        env.insert(output.clone(), placeholder.in_store_dir());
    }
    env
}

/// A helper started ahead of its build (`bramble-sandbox --warm`): it sets up its
/// namespaces and the spec-independent part of the sandbox while it waits for the spec.
#[derive(Debug)]
struct WarmHelper {
    child: std::process::Child,
    /// Our end of the helper's stdin, a socket: the spec goes out, the early status (one
    /// byte, `--status-fd 0`) comes back.
    control: std::os::unix::net::UnixStream,
    /// The read end of the helper's stdout and stderr (one pipe).
    log: OwnedFd,
}

impl WarmHelper {
    /// Starts `helper --warm --status-fd 0`, on the pool's starter thread only: the helper
    /// dies with the thread that spawned it (PDEATHSIG).
    fn start(helper: &Path) -> io::Result<WarmHelper> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut command = std::process::Command::new(helper);
        command
            .args(["--warm", "--status-fd", "0"])
            .stdin(OwnedFd::from(theirs))
            .stdout(writer.try_clone()?)
            .stderr(writer);
        let spawned = command.spawn();
        // The command holds our copies of the pipe's write end and of the helper's end of
        // the socket: drop them so we see the ends when the helper is gone.
        drop(command);
        ours.set_nonblocking(true)?;
        Ok(WarmHelper {
            child: spawned?,
            control: ours,
            log: reader,
        })
    }
}

/// Helpers started ahead of time. Taking one asks for the next, so a chain's next step finds
/// its namespaces ready and `-j N` builds keep about N warm. Helpers are started on one
/// thread of the pool's own, never on the build's path (spawning costs the caller's thread
/// the whole `vfork` + `exec`) and never on a thread that may exit before the helper is done
/// (a helper dies with the thread that spawned it). The thread ends, and every helper not
/// taken with it, when the pool drops.
#[derive(Debug)]
struct WarmPool {
    shared: Arc<PoolShared>,
    requests: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct PoolShared {
    /// Started, not taken yet (or why one could not be started).
    ready: std::sync::Mutex<Vec<io::Result<WarmHelper>>>,
    /// Asked for and not in `ready` yet.
    starting: std::sync::atomic::AtomicUsize,
    /// Wakes takers when one is ready.
    notify: tokio::sync::Notify,
}

impl WarmPool {
    fn new(helper: PathBuf) -> WarmPool {
        let shared = Arc::new(PoolShared::default());
        let (requests, received) = std::sync::mpsc::channel::<()>();
        let on_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sandbox-starter".into())
            .spawn(move || {
                for () in received {
                    let started = WarmHelper::start(&helper);
                    on_thread
                        .ready
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(started);
                    on_thread
                        .starting
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    on_thread.notify.notify_waiters();
                }
            });
        match thread {
            Ok(thread) => WarmPool {
                shared,
                requests: Some(requests),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!("cannot start the sandbox starter thread: {e}");
                WarmPool {
                    shared,
                    requests: None,
                    thread: None,
                }
            }
        }
    }

    /// Asks the starter thread for one more helper (counted before it can be done).
    fn request(&self) -> io::Result<()> {
        let starting = &self.shared.starting;
        starting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let sent = self.requests.as_ref().is_some_and(|r| r.send(()).is_ok());
        if !sent {
            starting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return Err(io::Error::other("the sandbox starter thread is gone"));
        }
        Ok(())
    }

    /// A started helper, waiting for one if none is ready; asks for the next one.
    async fn take(&self) -> io::Result<WarmHelper> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a helper made ready in between wakes us.
            notified.as_mut().enable();
            let ready = self
                .shared
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            if let Some(ready) = ready {
                self.request()?;
                return ready;
            }
            if self
                .shared
                .starting
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                self.request()?;
            }
            notified.await;
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Helpers not taken: closing their sockets (the `ready` list drops with the last
        // reference) tells them they are not needed; the thread's exit killed them anyway.
        let ready =
            std::mem::take(&mut *self.shared.ready.lock().unwrap_or_else(|e| e.into_inner()));
        for mut warm in ready.into_iter().flatten() {
            drop(warm.control);
            let _ = warm.child.wait();
        }
    }
}

/// Run `spec` in a warm helper until the sandbox is empty or `cancel` fires; returns the
/// builder's status and the end of its output (stdout and stderr interleaved on one pipe).
///
/// The status comes early (`--status-fd`): once every process of the sandbox is gone and
/// the log has ended, before the kernel tears the namespaces down; the helper is reaped in
/// the background.
///
/// `writable`: the build's writable directories, given to the builder's host id first
/// (as root, see [`give`]).
async fn run_helper(
    pool: &WarmPool,
    config: &SandboxConfig,
    spec: &Spec,
    writable: &[PathBuf],
    cancel: &Cancel,
) -> Result<(Ended, Vec<u8>), ExecError> {
    let setup = |e: io::Error| ExecError::Setup {
        message: format!("cannot run `{}`: {e}", config.helper.display()),
    };
    let WarmHelper {
        mut child,
        control,
        log,
    } = pool.take().await.map_err(setup)?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if nix::unistd::geteuid().is_root() {
        let (dirs, helper) = (writable.to_vec(), child.id());
        tokio::task::spawn_blocking(move || give(&dirs, helper))
            .await
            .expect("changing owners does not panic")
            .map_err(|e| ExecError::Setup {
                message: format!("cannot give the build directory to the builder's id: {e}"),
            })?;
    }
    let mut control = tokio::net::UnixStream::from_std(control).map_err(setup)?;
    let collector = tokio::task::spawn_blocking(move || read_log(std::fs::File::from(log)));
    // A helper that failed early has closed its end: its status tells why.
    if control.write_all(spec.to_json().as_bytes()).await.is_ok() {
        let _ = control.shutdown().await;
    }
    let early = tokio::select! {
        record = read_status(&mut control) => record,
        () = cancel.cancelled() => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let mut exited = tokio::task::spawn_blocking(move || child.wait());
            if tokio::time::timeout(CANCEL_GRACE, &mut exited).await.is_err() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = exited.await;
            }
            return Err(ExecError::Cancelled);
        }
    };
    let exited = tokio::task::spawn_blocking(move || child.wait());
    let ended = match early {
        // The sandbox is empty: its teardown is reaped in the background.
        Some(record) => Ended::Status(record),
        // No record (the helper was killed): the exit status tells.
        None => Ended::Exit(
            exited
                .await
                .expect("waiting for a child does not panic")
                .map_err(setup)?,
        ),
    };
    let log = collector.await.expect("reading a log does not panic");
    Ok((ended, log))
}

/// How a run ended: the helper's status record (the builder's status or the helper's own
/// failure), or, without one, the helper's exit status.
#[derive(Debug)]
enum Ended {
    Status(Status),
    Exit(std::process::ExitStatus),
}

impl Ended {
    fn success(&self) -> bool {
        match self {
            Ended::Status(status) => *status == Status::Builder(0),
            Ended::Exit(status) => status.success(),
        }
    }
}

/// Reads the helper's status record (see [`bramble_sandbox::Status`]); `None` at end of file
/// or on anything else.
async fn read_status(control: &mut tokio::net::UnixStream) -> Option<Status> {
    use tokio::io::AsyncReadExt;
    let mut record = vec![0u8; 2];
    control.read_exact(&mut record).await.ok()?;
    if record[0] == bramble_sandbox::STATUS_HELPER {
        let mut len = [0u8; 2];
        control.read_exact(&mut len).await.ok()?;
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        control.read_exact(&mut message).await.ok()?;
        record.extend_from_slice(&len);
        record.extend_from_slice(&message);
    }
    Status::decode(&record)
}

/// Read a pipe to its end, keeping the last [`MAX_LOG_BYTES`].
fn read_log(mut pipe: std::fs::File) -> Vec<u8> {
    let mut log = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                log.extend_from_slice(&buf[..n]);
                let max = usize::try_from(MAX_LOG_BYTES).unwrap_or(usize::MAX);
                if log.len() > 2 * max {
                    log.drain(..log.len() - max);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let max = usize::try_from(MAX_LOG_BYTES).unwrap_or(usize::MAX);
    if log.len() > max {
        log.drain(..log.len() - max);
    }
    log
}

/// `exited with code 1` or `was killed by signal 9`, from the helper's exit status (when it
/// sent no status record).
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (
        status.signal(),
        status.code().and_then(|c| u8::try_from(c).ok()),
    ) {
        (Some(signal), _) => format!("was killed by signal {signal}"),
        (None, Some(code)) => describe_code(code),
        (None, None) => "exited abnormally".into(),
    }
}

/// A builder's own status as a shell reports it: `exited with code 127`, or `was killed by
/// signal 9` (128 + 9). Never what the helper's codes mean: the helper's own failures come
/// as their own record (see [`sandbox_failure`]).
fn describe_code(code: u8) -> String {
    match code.checked_sub(bramble_sandbox::EXIT_SIGNAL_BASE) {
        Some(signal) if signal > 0 => format!("was killed by signal {signal}"),
        _ => format!("exited with code {code}"),
    }
}

/// The helper's own failure (its status record): its message and hint, worded for the
/// author of the derivation where the helper's hint is for the caller of the helper.
fn sandbox_failure(
    code: u8,
    message: &str,
    log_tail: Vec<String>,
    kept: Option<PathBuf>,
) -> ExecError {
    let (message, hint) = match message.split_once("\nhint: ") {
        Some((message, hint)) => (message, Some(hint.trim_end().to_owned())),
        None => (message.trim_end(), None),
    };
    let hint = match code {
        bramble_sandbox::EXIT_NOT_FOUND => Some(
            "a builder is a file of an input's output (`<input>.out + \"/bin/...\"`) or of the \
             derivation's own sources"
                .into(),
        ),
        _ => hint,
    };
    ExecError::Sandbox {
        message: message.to_owned(),
        hint,
        log_tail,
        kept,
    }
}

/// A failure of the helper's that is a limit of the build's (its time, its silence, its
/// processes): what happened, naming the limit, and how to raise it.
fn limit_failure(code: u8, spec: &Spec) -> Option<(String, String)> {
    match code {
        bramble_sandbox::EXIT_TIMEOUT => spec.time_limit_ms.map(|ms| {
            (
                format!(
                    "exceeded its time limit of {} and was killed",
                    format_duration_ms(ms)
                ),
                "raise it with `--timeout DURATION` or `derivation(..., timeout = \"...\")`"
                    .into(),
            )
        }),
        bramble_sandbox::EXIT_SILENT => spec.silence_limit_ms.map(|ms| {
            (
                format!(
                    "printed nothing for {} (its silence limit) and was killed",
                    format_duration_ms(ms)
                ),
                "raise it with `--max-silent-time DURATION` or `derivation(..., max_silent_time = \"...\")`"
                    .into(),
            )
        }),
        bramble_sandbox::EXIT_PROCESS_LIMIT => spec.process_limit.map(|n| {
            (
                format!("reached its limit of {n} processes (a fork failed)"),
                "raise it with `--max-processes N` or `derivation(..., processes = N)`".into(),
            )
        }),
        _ => None,
    }
}

/// The memory limit (as text) and a hint, if the builder failed with an allocation failure
/// in the end of its log while it had one. The limit is an rlimit per process: the kernel
/// keeps no count of refusals, so the builder's own words are the evidence.
fn out_of_memory(spec: &Spec, log_tail: &[String]) -> Option<(String, String)> {
    const ALLOCATION_FAILURES: [&str; 6] = [
        "out of memory",
        "cannot allocate memory",
        "memory exhausted",
        "memory allocation of",
        "bad_alloc",
        "failed to allocate",
    ];
    let bytes = spec.memory_limit_bytes?;
    let oom = log_tail.iter().any(|line| {
        let line = line.to_ascii_lowercase();
        ALLOCATION_FAILURES.iter().any(|p| line.contains(p))
    });
    oom.then(|| {
        (
            format_size(bytes),
            "raise it with `--max-memory SIZE` or `derivation(..., memory = \"...\")`".into(),
        )
    })
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

/// A build environment for an interactive program (`bramble shell`): the directory, sources,
/// input closure and environment of a build, with another program instead of the builder
/// and the caller's terminal. Removed when dropped.
#[derive(Debug)]
pub struct Interactive {
    // Field order is drop order: the build and staging directories (by descriptor), then
    // the temp dir.
    dir: BuildDir,
    _staging: BuildDir,
    tmp: Arc<TempDir>,
    pub spec: Spec,
}

/// Prepare the build environment of `job` (resolved, `inputs` = its input closure) with a
/// shell in place of the builder: the builder itself if it is a shell (`sh`, `bash`, `ash`,
/// `dash`), `<builder> sh` if it is a busybox, else `bin/sh` of an input.
pub fn prepare_shell(store: &LocalStore, job: &Job) -> Result<Interactive, ExecError> {
    let tmp = Arc::new(store.tmp_dir("shell").map_err(|e| ExecError::Setup {
        message: e.to_string(),
    })?);
    let Prepared {
        dir,
        staging,
        tmp,
        mut spec,
    } = prepare(store, new_dirs(tmp)?, job)?;
    let (builder, args) = shell_for(store, job).ok_or_else(|| ExecError::Setup {
        message: format!(
            "no shell for `{}`: its builder is not a shell or busybox and no input has `bin/sh`",
            job.drv.name
        ),
    })?;
    spec.builder = builder;
    spec.args = args;
    spec.stdin = bramble_sandbox::Stdin::Inherit;
    Ok(Interactive {
        dir,
        _staging: staging,
        tmp,
        spec,
    })
}

fn shell_for(store: &LocalStore, job: &Job) -> Option<(PathBuf, Vec<String>)> {
    let builder = builder_path(&job.drv);
    match builder.file_name().and_then(|n| n.to_str()) {
        Some("busybox") => return Some((builder, vec!["sh".into()])),
        Some("sh" | "bash" | "ash" | "dash") => return Some((builder, Vec::new())),
        _ => {}
    }
    job.inputs
        .iter()
        .find(|p| std::fs::symlink_metadata(store.host_path(p).join("bin/sh")).is_ok())
        .map(|p| (Path::new(&p.in_store_dir()).join("bin/sh"), Vec::new()))
}

impl Interactive {
    /// The build directory on the host (`/build` inside).
    pub fn build_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Run the program with this process's stdin, stdout and stderr; returns its status.
    pub fn run(&self, helper: &Path) -> Result<std::process::ExitStatus, ExecError> {
        run_interactive(helper, &self.spec, self.tmp.path())
    }
}

/// Run `spec` (whose stdin is inherited) with the helper: the spec goes on a descriptor
/// (`--spec-fd`) read from a file written in `scratch`.
pub fn run_interactive(
    helper: &Path,
    spec: &Spec,
    scratch: &Path,
) -> Result<std::process::ExitStatus, ExecError> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::os::fd::AsRawFd;
    let setup = |what: String, e: io::Error| ExecError::Setup {
        message: format!("{what}: {e}"),
    };
    let path = scratch.join("spec.json");
    std::fs::write(&path, spec.to_json())
        .map_err(|e| setup(format!("cannot write `{}`", path.display()), e))?;
    let file = std::fs::File::open(&path)
        .map_err(|e| setup(format!("cannot open `{}`", path.display()), e))?;
    // The helper inherits this one descriptor (std opens everything else close-on-exec).
    fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| setup("cannot pass the spec descriptor".into(), e.into()))?;
    // `--as-caller`: the user's own program with the user's own paths, as the user (as
    // root too: no build runs here).
    let status = std::process::Command::new(helper)
        .arg("--as-caller")
        .arg("--spec-fd")
        .arg(file.as_raw_fd().to_string())
        .status()
        .map_err(|e| setup(format!("cannot run `{}`", helper.display()), e))?;
    drop(file);
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Hash;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn builder_paths() {
        let mut d = Derivation::new("x", "/bramble/store/abc-sh/bin/sh");
        assert_eq!(builder_path(&d), Path::new("/bramble/store/abc-sh/bin/sh"));
        d.builder = "busybox".into();
        assert_eq!(builder_path(&d), Path::new("/build/busybox"));
        d.builder = "./tools/sh".into();
        assert_eq!(builder_path(&d), Path::new("/build/tools/sh"));
    }

    #[test]
    fn statuses_are_described() {
        let exited = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(describe(exited(3)), "exited with code 3");
        // A builder's own 127 is a builder's exit code; a missing builder comes as the
        // helper's own record.
        assert_eq!(describe(exited(127)), "exited with code 127");
        assert_eq!(describe_code(127), "exited with code 127");
        assert_eq!(describe_code(128), "exited with code 128");
        assert_eq!(describe_code(137), "was killed by signal 9");
        let failure = sandbox_failure(
            127,
            "builder `/bramble/store/x/bin/sh` not found in the sandbox\nhint: bind it\n",
            Vec::new(),
            None,
        );
        assert_eq!(
            failure.to_string(),
            "builder `/bramble/store/x/bin/sh` not found in the sandbox"
        );
        let ExecError::Sandbox { hint, .. } = &failure else {
            panic!("{failure:?}");
        };
        assert!(hint.as_deref().unwrap().starts_with("a builder is a file"));
        let timeout = sandbox_failure(124, "the builder exceeded its time limit", Vec::new(), None);
        assert!(matches!(timeout, ExecError::Sandbox { hint: None, .. }));
        assert_eq!(describe(exited(128 + 9)), "was killed by signal 9");
        assert_eq!(
            describe(std::process::ExitStatus::from_raw(9)),
            "was killed by signal 9"
        );
    }

    #[test]
    fn spare_directories_are_made_after_a_removal_used_once_and_removed_with_the_executor() {
        let home = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(home.path()).unwrap());
        let config = SandboxConfig {
            helper: PathBuf::from("/nonexistent/bramble-sandbox"),
            keep_failed: false,
            limits: DefaultLimits::default(),
        };
        let executor = SandboxExecutor::new(config, store.clone());
        let d = Derivation::new("spare", "/bin/sh");
        let job = Job {
            drv_hash: d.hash(),
            build_key: Hash::digest(b"key"),
            drv: Arc::new(d),
            inputs: Default::default(),
        };
        let first = executor.prepare(&job).unwrap();
        let (first_dir, first_staging) =
            (first.dir.path().to_owned(), first.staging.path().to_owned());
        // Removing the first build's directories leaves a fresh pair behind.
        executor
            .chores
            .submit(Chore::Remove((first.dir, first.staging, first.tmp)));
        let spare = loop {
            let ready = executor
                .chores
                .spares
                .lock()
                .unwrap()
                .last()
                .map(|d| d.0.path().to_owned());
            if let Some(path) = ready {
                break path;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(!first_dir.exists() && !first_staging.exists());
        assert_ne!(spare, first_dir);
        let second = executor.prepare(&job).unwrap();
        assert_eq!(second.dir.path(), spare);
        for dir in [second.dir.path(), second.staging.path()] {
            let meta = std::fs::symlink_metadata(dir).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o700);
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
        }
        assert_eq!(second.spec.binds[0].source, second.staging.path());
        assert!(
            executor.chores.spare().is_none(),
            "a spare is handed out once"
        );
        // Another spare, never used: it goes with the executor, as does the temp dir.
        make_spare(&executor.chores.spares, executor.tmp().unwrap());
        drop(second);
        drop(executor);
        let left: Vec<_> = std::fs::read_dir(store.home().join("tmp"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn output_variables_point_at_placeholders() {
        let mut d = Derivation::new("multi", "/bin/sh");
        d.outputs = vec!["out".into(), "dev".into()];
        d.env.insert("dev".into(), "overridden".into());
        d.env.insert("other".into(), "kept".into());
        let key = Hash::digest(b"key");
        let job = Job {
            drv_hash: d.hash(),
            drv: Arc::new(d.clone()),
            build_key: key,
            inputs: Default::default(),
        };
        let env = output_env(&d, &job);
        assert_eq!(env["out"], d.placeholder(key, "out").in_store_dir());
        assert_eq!(env["dev"], d.placeholder(key, "dev").in_store_dir());
        assert!(env["dev"].ends_with("-multi-dev"));
        assert_eq!(env["other"], "kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_starts_the_next_helper_when_one_is_taken_and_ends_them_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Stands in for the helper: waits for its spec, like `bramble-sandbox --warm`.
        let helper = dir.path().join("helper");
        std::fs::write(&helper, "#!/bin/sh\nexec cat >/dev/null\n").unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pool = WarmPool::new(helper.clone());
        let mut first = pool.take().await.unwrap();
        // Taking one asked for the next: it is started without anybody waiting for it.
        let mut waited = 0;
        while pool.shared.ready.lock().unwrap().is_empty() {
            assert!(waited < 500, "the next helper was never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        let waiting_pid = match &pool.shared.ready.lock().unwrap()[0] {
            Ok(warm) => warm.child.id(),
            Err(e) => panic!("{e}"),
        };
        let mut second = pool.take().await.unwrap();
        assert_eq!(second.child.id(), waiting_pid);
        assert_ne!(first.child.id(), second.child.id());
        // Dropping the pool ends the helper started for a third build (its spec socket
        // closes): it is reaped by then, no longer a process.
        let third = loop {
            if let Some(Ok(warm)) = pool.shared.ready.lock().unwrap().first() {
                break warm.child.id();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        drop(pool);
        assert!(!Path::new(&format!("/proc/{third}")).exists());
        for warm in [&mut first, &mut second] {
            warm.control.shutdown(std::net::Shutdown::Both).unwrap();
            assert!(warm.child.wait().unwrap().success());
        }
        // A helper that cannot be started is an error naming why, not a hang.
        let pool = WarmPool::new(dir.path().join("missing"));
        let err = pool.take().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }
}
