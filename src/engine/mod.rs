//! The build engine: the graph of derivations, the scheduler that walks it, and the executors
//! that run one derivation each (DESIGN §2, §3, §7).
//!
//! DESIGN calls this module `build`; it is `engine` here because many tools and `.gitignore`
//! templates treat a `build/` directory as build output.
//!
//! `engine` uses `store` and the sandbox spec, never `lang`: callers hand it store derivations
//! and the hashes of the roots they want.
//!
//! # How a build runs
//!
//! 1. [`BuildGraph`] ([`graph`]) collects the roots and everything their templates name (one
//!    node per derivation; a missing derivation, a missing output or a cycle is an error).
//! 2. [`run`] (the loop of [`scheduler`], on tokio) owns the graph. A node whose
//!    dependencies are all realised is *resolved* (templates replaced by
//!    `/bramble/store/<path>`), which gives its build key. If the store has a realisation
//!    for every output of that key, the node is done without building (cached). Because the
//!    key depends on the inputs' *content*, an input rebuilt to identical bytes leaves its
//!    dependents cached (early cutoff).
//! 3. Otherwise the node waits for one of the `jobs` build slots. Its task
//!    (`scheduler/task.rs`) takes the store's per-key build lock (several bramble processes
//!    may share a store; whoever holds the lock builds, the others find the realisation when
//!    they get it), runs the [`Executor`], adds each output to the store and registers all
//!    realisations together. Nothing is registered
//!    for a build that failed or was cancelled. The store work before the builder runs is one
//!    call ([`BuildStore::start_build`]: lock, recheck, pins, input closure) made with the
//!    executor's [`Executor::prepare`] on one blocking thread, and the work after it another
//!    ([`BuildStore::finish_build`]), so a build step hands work between threads as rarely as
//!    it can: each handoff costs wake-ups on both sides, which a chain of small builds pays on
//!    its critical path at every step.
//! 4. A realised DAO (derivations as output, [`dao`]) does not release its dependents: its
//!    document is read, validated and spliced into the graph (`scheduler/splice.rs`), and
//!    its dependents wait for the generated result instead.
//! 5. A failure stops new builds and cancels running ones, unless `keep_going`: then
//!    everything that does not depend on the failure still builds. Cancellation (Ctrl-C)
//!    kills running sandboxes and returns a report marked cancelled.
//!
//! Progress goes to a [`Reporter`] as [`Event`]s while the build runs; the [`BuildReport`]
//! (both in [`report`]) says what happened. [`expand`] and [`plan()`] walk the same loop
//! without building (`bramble graph`, `--dry-run`).
//!
//! `--check` rebuilds the requested roots even when realised and compares the result's store
//! paths with the registered ones (as `nix-build --check` does for the requested
//! derivations); a difference is a [`FailureKind::NotDeterministic`].
//!
//! The store side ([`BuildStore`], the protocol the scheduler speaks) and the executor
//! ([`Executor`]) are small traits so the scheduler is tested with in-memory fakes
//! (`scheduler/fake.rs`); [`local_store`] adapts the on-disk store and [`sandbox`] holds the
//! real executor, its build directories in [`build_dir`]. [`job`] runs one derivation outside
//! a graph (`bramble shell`, `bramble test`).

pub mod build_dir;
pub mod dao;
pub mod fetch;
pub mod graph;
pub mod job;
pub mod local_store;
pub mod report;
pub mod sandbox;
pub mod scheduler;
pub mod tool;

/// The in-memory store and executor the scheduler is tested with.
#[cfg(test)]
pub(crate) use scheduler::fake;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::store::{Derivation, DerivationError, Hash, StorePath};

pub use graph::BuildGraph;
pub use report::{
    BuildReport, Event, Failure, FailureKind, GraphView, NullReporter, Reporter, RootResult,
    Splice, ViewNode,
};
pub use scheduler::{BuildOptions, Engine, Plan, expand, plan, run};

/// Errors that stop a build before or outside any one derivation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("derivation `{drv}` was requested but is not known")]
    UnknownRoot { drv: Hash },
    #[error("derivation `{dependent}` refers to `{template}`, which names no known derivation")]
    UnknownDerivation { dependent: String, template: String },
    #[error(
        "derivation `{dependent}` uses output `{output}` of `{dependency}`, which has no such output"
    )]
    UnknownOutput {
        dependent: String,
        dependency: String,
        output: String,
    },
    #[error("dependency cycle: {path}")]
    Cycle { path: String },
    #[error(transparent)]
    Derivation(DerivationError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Diagnose for Error {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            Error::UnknownRoot { .. } => Class::Internal,
            Error::UnknownDerivation { .. }
            | Error::UnknownOutput { .. }
            | Error::Cycle { .. }
            | Error::Derivation(_) => Class::User,
            Error::Store(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Error::Store(e) => e.hint(),
            _ => None,
        }
    }
}

/// A failure of the store behind [`BuildStore`]. Its causes are its `source`s, rendered
/// once each by [`crate::error::chain`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The local store failed.
    #[error(transparent)]
    Local(#[from] crate::store::local::Error),
    /// A DAO's document cannot be opened or read (`what`: `cannot open`, `cannot read`…).
    #[error("{what} `{}`", path.display())]
    Document {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A DAO's output holds no document: neither a regular file nor a directory with a
    /// regular [`dao::DOCUMENT_FILE`].
    #[error("cannot read `{}`: {problem}", path.display())]
    NotADocument { path: PathBuf, problem: String },
    /// A failure of the in-memory store the scheduler is tested with.
    #[cfg(test)]
    #[error("{0}")]
    Fake(String),
}

impl crate::error::Diagnose for StoreError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            StoreError::Local(e) => e.class(),
            StoreError::Document { .. } => Class::Environment,
            // The DAO's builder wrote something else than a document.
            StoreError::NotADocument { .. } => Class::User,
            #[cfg(test)]
            StoreError::Fake(_) => Class::Environment,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            StoreError::Local(e) => e.hint(),
            _ => None,
        }
    }
}

/// What the scheduler asks of a store: whether build keys are realised, the two blocking
/// sections around a builder's run, and what a DAO's document needs (its text, and the
/// closure its generated derivations may name).
///
/// Methods may block (SQLite, file locks, copying); the scheduler calls the slow ones
/// (`start_build`, `finish_build`, `closure`, `read_document`) from blocking threads.
pub trait BuildStore: Send + Sync + 'static {
    /// Held while one process builds one build key, or while a build reads a pinned input;
    /// dropping it releases the lock.
    type Lock: Send + 'static;

    /// The realised path of each `(key, output)` pair, in order (`None`: not registered or
    /// not valid), in one round trip (a no-op build asks about every derivation).
    fn realisations(&self, wanted: &[(Hash, &str)]) -> Result<Vec<Option<StorePath>>, StoreError>;

    /// Everything a build does in the store before its builder runs, in one call (one
    /// blocking section): take the build lock of `key`, waiting for other processes; if
    /// `recheck`, look for a realisation of every output again (another process may have
    /// built it while we waited); otherwise pin `inputs` against garbage collection and read
    /// their closure.
    fn start_build(
        &self,
        key: Hash,
        outputs: &[String],
        inputs: &BTreeSet<StorePath>,
        recheck: bool,
    ) -> Result<BuildStart<Self::Lock>, StoreError>;

    /// Everything a successful build does in the store after its builder ran, in one call:
    /// add every staged output of derivation `drv` (hashed modulo self-references,
    /// canonicalised, references scanned among `inputs`, the input closure) and, if
    /// `register`, register the realisations of `key`. Returns the paths by output name.
    fn finish_build(
        &self,
        key: Hash,
        drv: Hash,
        outputs: &[StagedOutput],
        inputs: &BTreeSet<StorePath>,
        register: bool,
    ) -> Result<BTreeMap<String, StorePath>, StoreError>;

    /// `paths` and everything they reference, transitively (what a DAO's generated
    /// derivations may name).
    fn closure(&self, paths: &BTreeSet<StorePath>) -> Result<BTreeSet<StorePath>, StoreError>;

    /// The document of a realised DAO output: the output itself when it is a file, else its
    /// [`dao::DOCUMENT_FILE`]. At most `limit + 1` bytes are read, so an oversized document
    /// can be reported as such.
    fn read_document(&self, output: &StorePath, limit: usize) -> Result<Vec<u8>, StoreError>;
}

/// What [`BuildStore::start_build`] found.
#[derive(Debug)]
pub enum BuildStart<L> {
    /// Every output is realised (built by another process meanwhile): the paths by output.
    Realised(BTreeMap<String, StorePath>),
    /// Build it: hold `lock` (the build lock) and `pins` (the inputs) until its outputs are
    /// registered; `closure` is the input closure.
    Build {
        lock: L,
        pins: Vec<L>,
        closure: BTreeSet<StorePath>,
    },
}

/// One resolved derivation, ready to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The hash of the unresolved derivation (names its log).
    pub drv_hash: Hash,
    /// The resolved derivation: templates replaced by store paths.
    pub drv: Arc<Derivation>,
    pub build_key: Hash,
    /// The input closure: exactly what the sandbox may see under `/bramble/store`.
    pub inputs: BTreeSet<StorePath>,
}

/// One output a finished build left in its placeholder location on the host.
#[derive(Debug, Clone)]
pub struct StagedOutput {
    pub name: String,
    /// The placeholder store path the builder wrote to (`$out`).
    pub placeholder: StorePath,
    /// Where that is on the host.
    pub path: PathBuf,
    /// A directory of the build's own (on the store's file system, out of every builder's
    /// reach, removed with the workspace) where the store may stage the final tree instead
    /// of creating a temporary directory of its own.
    pub scratch: Option<PathBuf>,
    /// Store paths the output refers to whether or not its bytes name them: the root view
    /// it was built in (`Derivation::root`).
    pub required_refs: Vec<StorePath>,
    /// The output is already this valid store path (a fetch whose pinned result the store
    /// holds; `path` is where it is on the host): it is registered as it is, with nothing
    /// copied or hashed. The executor keeps it from being collected until then (a hold in
    /// [`Built::workspace`]).
    pub stored: Option<StorePath>,
}

/// A successful run of a builder: staged outputs, and the workspace that holds them (removed
/// when dropped).
#[derive(Debug)]
pub struct Built {
    pub outputs: Vec<StagedOutput>,
    pub workspace: Option<Box<dyn std::fmt::Debug + Send>>,
    /// What a fetch derivation downloaded, for `bramble.lock` (collected in
    /// [`BuildReport::fetches`]).
    pub fetched: Option<fetch::FetchRecord>,
}

/// Why an executor produced no outputs.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("builder {status}")]
    Failed {
        /// `exited with code 3`, `was killed by signal 9`…
        status: String,
        /// The last lines the builder printed.
        log_tail: Vec<String>,
        /// The build directory, kept for inspection (`--keep-failed`).
        kept: Option<PathBuf>,
        /// What to do about it (a limit to raise).
        hint: Option<String>,
    },
    /// The sandbox, not the builder, failed: the helper's own message (the builder not
    /// found or not executable, the time limit, a setup step).
    #[error("{message}")]
    Sandbox {
        message: String,
        hint: Option<String>,
        /// The last lines the builder (or the helper) printed.
        log_tail: Vec<String>,
        /// The build directory, kept for inspection (`--keep-failed`).
        kept: Option<PathBuf>,
    },
    #[error("the builder did not create output `{output}`")]
    MissingOutput { output: String },
    /// A fetch failed (its class and hint are the fetch error's).
    #[error(transparent)]
    Fetch(Box<fetch::FetchError>),
    #[error("the build was cancelled")]
    Cancelled,
    /// The build could not be set up or its sandbox not started; the message renders the
    /// whole cause chain, so the variant itself has no `source`.
    #[error("cannot run the build: {}", crate::store::local::error_chain(.0))]
    Setup(SetupError),
}

impl From<SetupError> for ExecError {
    fn from(e: SetupError) -> ExecError {
        ExecError::Setup(e)
    }
}

/// Why a build (or a program in a build's environment) could not be set up or started:
/// the store's temporary directory, the build's directories, its sources, its tool, its
/// root view, its spec, the helper.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The temporary directory holding build directories.
    #[error(transparent)]
    TempDir(crate::store::local::Error),
    #[error(transparent)]
    BuildDir(#[from] build_dir::BuildDirError),
    #[error("cannot copy sources from `{}`", path.display())]
    CopySources {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] tool::ToolError),
    #[error("cannot create `{}`", path.display())]
    ToolDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy `{}` of the tool `{tool}`", path.display())]
    CopyTool {
        path: PathBuf,
        tool: String,
        source: std::io::Error,
    },
    #[error(
        "the root view `{root}` of `{drv}` is not a store path (`root` takes a derivation, \
         e.g. a Debian package set)"
    )]
    RootNotInStore { root: String, drv: String },
    #[error("the root view `{}` has no `usr` directory (is it a package set?)", path.display())]
    RootWithoutUsr { path: PathBuf },
    #[error(transparent)]
    Spec(#[from] bramble_sandbox::SpecError),
    #[error(
        "no shell for `{drv}`: its builder is not a shell or busybox and no input has `bin/sh`"
    )]
    NoShell { drv: String },
    #[error("cannot {op} `{}`", path.display())]
    SpecFile {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot pass the spec descriptor")]
    SpecFd { source: std::io::Error },
    #[error("cannot run `{}`", helper.display())]
    Helper {
        helper: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot give the build directory to the builder's id")]
    GiveDirs { source: std::io::Error },
    /// An executor was asked to run a build it did not prepare (a bug).
    #[error("the build of `{drv}` was not prepared")]
    NotPrepared { drv: String },
    /// A fetch's result could not be kept from `gc` until it is registered.
    #[error(transparent)]
    Hold(crate::store::local::Error),
    /// A blocking step of the build panicked or was cancelled.
    #[error("a blocking step of the build did not finish")]
    Join { source: tokio::task::JoinError },
    /// The executor of a graph expansion, which never builds, was asked to.
    #[error("nothing is built while expanding a graph")]
    NotBuilding,
}

impl crate::error::Diagnose for SetupError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            SetupError::Tool(e) => e.class(),
            SetupError::TempDir(e) | SetupError::Hold(e) => e.class(),
            // What the derivation asks for.
            SetupError::RootNotInStore { .. }
            | SetupError::RootWithoutUsr { .. }
            | SetupError::Spec(_)
            | SetupError::NoShell { .. } => Class::User,
            SetupError::NotPrepared { .. } | SetupError::NotBuilding => Class::Internal,
            _ => Class::Environment,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            SetupError::Tool(e) => e.hint(),
            SetupError::TempDir(e) | SetupError::Hold(e) => e.hint(),
            _ => None,
        }
    }
}

impl crate::error::Diagnose for ExecError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            // The builder, its limits and its outputs are the user's.
            ExecError::Failed { .. }
            | ExecError::Sandbox { .. }
            | ExecError::MissingOutput { .. }
            | ExecError::Cancelled => Class::User,
            ExecError::Fetch(e) => e.class(),
            ExecError::Setup(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ExecError::Failed { hint, .. } | ExecError::Sandbox { hint, .. } => hint.clone(),
            ExecError::Fetch(e) => e.hint(),
            ExecError::Setup(e) => e.hint(),
            ExecError::MissingOutput { output } => Some(format!(
                "a builder writes its output to the path in `${output}` (a file or a directory)"
            )),
            _ => None,
        }
    }
}

/// Implemented here rather than next to [`FailureKind`] in `scheduler`: the classes of the
/// engine's errors read together.
impl crate::error::Diagnose for FailureKind {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            FailureKind::Exec(e) => e.class(),
            FailureKind::Store(e) => e.class(),
            FailureKind::Resolve(e) => e.class(),
            FailureKind::Dao(e) => e.class(),
            FailureKind::Splice(e) => e.class(),
            FailureKind::NotDeterministic { .. } => Class::User,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            FailureKind::Exec(e) => e.hint(),
            FailureKind::Store(e) => e.hint(),
            FailureKind::Dao(e) => e.hint(),
            FailureKind::NotDeterministic { .. } => {
                Some("the derivation is not reproducible: compare both paths".into())
            }
            _ => None,
        }
    }
}

/// Runs one resolved derivation.
pub trait Executor: Send + Sync + 'static {
    /// What [`Executor::prepare`] sets up for one build (e.g. its directories), handed to
    /// [`Executor::execute`].
    type Prepared: Send + 'static;

    /// Set up the build of `job` (`job.inputs` is the input closure). It may block: the
    /// scheduler calls it on a blocking thread right after [`BuildStore::start_build`], in
    /// the same blocking section, so a build crosses threads once before its builder runs.
    fn prepare(&self, job: &Job) -> Result<Self::Prepared, ExecError>;

    /// Run `job`, set up by [`Executor::prepare`]; on success every output of the
    /// derivation is staged. When `cancel` fires the executor stops the builder and
    /// returns [`ExecError::Cancelled`].
    fn execute(
        &self,
        job: Job,
        prepared: Self::Prepared,
        cancel: Cancel,
    ) -> impl Future<Output = Result<Built, ExecError>> + Send;
}

/// A cancellation signal shared by the scheduler and its tasks. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Cancel {
    sender: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel {
            sender: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Fire the signal; every waiter of [`Cancel::cancelled`] wakes.
    pub fn cancel(&self) {
        self.sender.send_replace(true);
    }

    /// Wait until the signal fires (at once if it has).
    pub async fn cancelled(&self) {
        let mut rx = self.sender.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail.
        let _ = rx.wait_for(|c| *c).await;
    }
}
