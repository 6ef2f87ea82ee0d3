//! The one interface through which a build reports progress, downloads included. Only `cli`
//! renders it (bars on a terminal, plain lines otherwise).

use std::time::Duration;

use crate::store::Hash;

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
