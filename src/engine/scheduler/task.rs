//! One build as a tokio task: its first blocking section ([`start`]: build lock, recheck,
//! pins, input closure, the executor's preparation), the builder's run, and its second
//! blocking section ([`BuildStore::finish_build`]: outputs added and registered), after which
//! it tells the loop how it ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use petgraph::stable_graph::NodeIndex;
use tokio::task::JoinHandle;

use crate::store::StorePath;

use super::{Finished, TaskOutcome};
use crate::engine::report::{Event, FailureKind, Reporter};
use crate::engine::{BuildStart, BuildStore, Cancel, ExecError, Executor, Job};

/// How a build's first blocking section ([`start`]) ended, handed to its task.
pub(super) enum Started<L, P> {
    /// Build it: hold `lock` (the build lock) and `pins` (the inputs) until the outputs are
    /// registered; `job.inputs` is now the input closure, `prepared` the executor's setup.
    Build {
        lock: L,
        pins: Vec<L>,
        job: Job,
        prepared: P,
    },
    /// Another process built it while this one waited for the lock: its outputs.
    BuiltElsewhere(BTreeMap<String, StorePath>),
    /// The store or the executor's preparation failed.
    Failed(FailureKind),
}

/// A build's first blocking section: take the build lock, then look again (another
/// process may have built it), pin the inputs, read their closure and prepare the build.
pub(super) fn start<S: BuildStore, E: Executor>(
    store: &S,
    executor: &E,
    mut job: Job,
    recheck: bool,
) -> Started<S::Lock, E::Prepared> {
    let start = match store.start_build(job.build_key, &job.drv.outputs, &job.inputs, recheck) {
        Ok(start) => start,
        Err(e) => return Started::Failed(e.into()),
    };
    let (lock, pins, closure) = match start {
        BuildStart::Realised(found) => return Started::BuiltElsewhere(found),
        BuildStart::Build {
            lock,
            pins,
            closure,
        } => (lock, pins, closure),
    };
    job.inputs = closure;
    match executor.prepare(&job) {
        Ok(prepared) => Started::Build {
            lock,
            pins,
            job,
            prepared,
        },
        Err(e) => Started::Failed(e.into()),
    }
}

/// Where a build's task tells the loop how it ended.
#[derive(Clone)]
pub(super) struct Reply {
    pub(super) node: NodeIndex,
    pub(super) tx: tokio::sync::mpsc::UnboundedSender<Finished>,
    pub(super) since: Instant,
}

impl Reply {
    fn send(&self, outcome: TaskOutcome) {
        let _ = self.tx.send(Finished {
            node: self.node,
            outcome,
            elapsed: self.since.elapsed(),
        });
    }
}

/// One build, run as a tokio task after its first blocking section was started.
pub(super) struct Task<S, E> {
    pub(super) store: Arc<S>,
    pub(super) executor: Arc<E>,
    pub(super) reporter: Arc<dyn Reporter>,
    pub(super) name: String,
    /// `--check`: the registered outputs to compare with.
    pub(super) expected: Option<BTreeMap<String, StorePath>>,
    pub(super) stop: Cancel,
    pub(super) reply: Reply,
}

impl<S: BuildStore, E: Executor> Task<S, E> {
    /// Run the build once `started` ([`start`] on a blocking thread) is done, and report its
    /// outcome (a successful one straight from the blocking thread that registered it,
    /// without waking this task first).
    pub(super) async fn run(self, started: JoinHandle<Started<S::Lock, E::Prepared>>) {
        let reply = self.reply.clone();
        if let Err(kind) = self.run_inner(started).await {
            reply.send(TaskOutcome::Failed(kind));
        }
    }

    /// A build crosses threads twice besides its builder's run: one blocking section
    /// before it ([`start`]: [`BuildStore::start_build`] then [`Executor::prepare`]) and
    /// one after ([`BuildStore::finish_build`]: outputs added, paths and realisations
    /// registered).
    async fn run_inner(
        self,
        started: JoinHandle<Started<S::Lock, E::Prepared>>,
    ) -> Result<(), FailureKind> {
        let Task {
            store,
            executor,
            reporter,
            name,
            expected,
            stop,
            reply,
        } = self;
        let started = tokio::select! {
            joined = started => joined.expect("the store does not panic"),
            () = stop.cancelled() => return Err(ExecError::Cancelled.into()),
        };
        let (lock, pins, job, prepared) = match started {
            Started::BuiltElsewhere(found) => {
                reply.send(TaskOutcome::BuiltElsewhere(found));
                return Ok(());
            }
            Started::Failed(kind) => return Err(kind),
            Started::Build {
                lock,
                pins,
                job,
                prepared,
            } => (lock, pins, job, prepared),
        };
        reporter.event(Event::Started {
            drv: job.drv_hash,
            name,
        });
        let (drv, closure) = (job.drv.clone(), job.inputs.clone());
        let (key, drv_hash) = (job.build_key, job.drv_hash);
        let started = Instant::now();
        let built = executor.execute(job, prepared, stop.clone()).await?;
        tracing::debug!(drv = %drv.name, elapsed = ?started.elapsed(), "builder finished");
        let finish = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            for output in &drv.outputs {
                if !built.outputs.iter().any(|staged| staged.name == *output) {
                    return Err(FailureKind::Exec(ExecError::MissingOutput {
                        output: output.clone(),
                    }));
                }
            }
            let register = expected.is_none();
            let paths = store.finish_build(key, drv_hash, &built.outputs, &closure, register)?;
            let fetched = built.fetched.clone();
            drop(built);
            if let Some(expected) = expected {
                for (output, registered) in expected {
                    let rebuilt = &paths[&output];
                    if *rebuilt != registered {
                        return Err(FailureKind::NotDeterministic {
                            output,
                            registered,
                            rebuilt: rebuilt.clone(),
                        });
                    }
                }
            }
            drop((lock, pins));
            tracing::debug!(drv = %drv.name, elapsed = ?started.elapsed(), "outputs added");
            reply.send(TaskOutcome::Built(paths, fetched));
            Ok(())
        });
        finish.await.expect("the store does not panic")
    }
}
