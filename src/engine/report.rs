//! What a build tells its caller: the [`Event`]s it reports while it runs, downloads
//! included, through the one [`Reporter`] interface (only `cli` renders them: bars on a
//! terminal, plain lines otherwise), and the [`BuildReport`] it returns at the end (with the
//! [`GraphView`] of [`super::expand`] for `bramble graph`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::store::{DerivationError, Hash, StorePath};

use super::dao::DaoError;
use super::{Error, ExecError, StoreError};

/// Something that happened during a build.
#[derive(Debug, Clone)]
pub enum Event {
    /// The graph is known: `total` derivations.
    Planned { total: usize },
    /// A derivation was already realised.
    Cached { drv: Hash, name: String },
    /// A builder started.
    Started { drv: Hash, name: String },
    /// A build finished and its outputs are registered.
    Built {
        drv: Hash,
        name: String,
        elapsed: Duration,
    },
    /// Another process built it while this one waited for the lock.
    BuiltElsewhere { drv: Hash, name: String },
    /// A DAO's document was spliced into the graph: `generated` derivations, `new` of them
    /// not already in the graph.
    Spliced {
        drv: Hash,
        name: String,
        generated: usize,
        new: usize,
    },
    /// A build failed (the failure itself is in the report).
    Failed {
        drv: Hash,
        name: String,
        elapsed: Duration,
    },
    /// `done` bytes of `url` arrived, of `total` if the server said; `done` is 0 when a
    /// download (or a retry of one) starts.
    Download {
        url: String,
        done: u64,
        total: Option<u64>,
    },
}

/// Receives build events, from any thread.
pub trait Reporter: Send + Sync {
    fn event(&self, event: Event);
}

/// Ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullReporter;

impl Reporter for NullReporter {
    fn event(&self, _event: Event) {}
}

/// A requested root and, if it was realised, its outputs.
#[derive(Debug, Clone)]
pub struct RootResult {
    pub drv: Hash,
    pub name: String,
    pub build_key: Option<Hash>,
    pub outputs: Option<BTreeMap<String, StorePath>>,
}

/// One derivation that could not be built.
#[derive(Debug)]
pub struct Failure {
    pub drv: Hash,
    pub name: String,
    pub kind: FailureKind,
}

/// Why a derivation could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FailureKind {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resolve(#[from] DerivationError),
    #[error(transparent)]
    Dao(#[from] DaoError),
    #[error("cannot splice the generated derivations")]
    Splice(#[source] Error),
    #[error(
        "output `{output}` differs from the registered one: registered `{registered}`, rebuilt `{rebuilt}`"
    )]
    NotDeterministic {
        output: String,
        registered: StorePath,
        rebuilt: StorePath,
    },
}

/// What one DAO added to the graph.
#[derive(Debug, Clone)]
pub struct Splice {
    pub dao: Hash,
    pub name: String,
    /// The DAO's own output: the document.
    pub document: StorePath,
    /// The result derivation, whose `out` stands in for the DAO's.
    pub result: Hash,
    /// See [`super::dao::Generated::graph_hash`].
    pub graph: Hash,
    /// Every derivation of the document (hash, name), dependencies first.
    pub derivations: Vec<(Hash, String)>,
    /// How many of them were not already in the graph.
    pub new: usize,
}

/// What a build did.
#[derive(Debug, Default)]
pub struct BuildReport {
    /// One entry per requested root, in request order.
    pub roots: Vec<RootResult>,
    /// Derivations built by this run.
    pub built: usize,
    /// Derivations found realised (including those another process built meanwhile).
    pub cached: usize,
    /// Derivations not attempted because a dependency failed or the build stopped.
    pub skipped: usize,
    pub failures: Vec<Failure>,
    /// Cancelled from outside (Ctrl-C).
    pub cancelled: bool,
    /// The DAOs spliced, in the order they were.
    pub splices: Vec<Splice>,
    /// What the fetch derivations of this run downloaded (for `bramble.lock`).
    pub fetches: Vec<super::fetch::FetchRecord>,
}

impl BuildReport {
    pub fn success(&self) -> bool {
        self.failures.is_empty() && !self.cancelled
    }
}

/// A graph as far as the store knows it: realised DAOs spliced in, nothing built
/// ([`super::expand`]).
#[derive(Debug, Default)]
pub struct GraphView {
    /// Every node, in graph order.
    pub nodes: Vec<ViewNode>,
    /// `(dependent, dependency, output)` by node position in `nodes`.
    pub edges: Vec<(usize, usize, String)>,
    /// `(dao, result)`: the DAO's dependents were redirected to its result.
    pub spliced: Vec<(usize, usize)>,
    /// Positions of the requested roots.
    pub roots: Vec<usize>,
}

/// One node of a [`GraphView`].
#[derive(Debug, Clone)]
pub struct ViewNode {
    pub hash: Hash,
    pub name: String,
    pub dao: bool,
    /// Realised in the store (for a spliced DAO: its document).
    pub realised: bool,
    /// The DAO that generated it (position in `nodes`), if any.
    pub generated_by: Option<usize>,
}
