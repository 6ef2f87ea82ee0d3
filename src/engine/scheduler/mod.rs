//! The scheduler: a loop on tokio (`Loop`) that owns the [`BuildGraph`] and the state of
//! every node.
//!
//! The loop never blocks on a build. Each build is a task (`task.rs`) that reports back
//! through a channel; the loop then releases the dependents whose inputs are now all
//! realised. A node is only ever in one state, and slots are counted by the loop itself, so a
//! node that waits for something (a lock, a DAO's spliced subgraph) holds a slot only while
//! its builder runs or its outputs are being added.
//!
//! - `mod.rs`: [`run`], its options, and the loop: settle ready nodes (cached or queued),
//!   dispatch queued ones to free slots, take finished tasks back;
//! - `task.rs`: one build's task and its two blocking sections around the builder;
//! - `splice.rs`: a realised DAO's document read, validated and spliced into the graph
//!   (derivations as output, DESIGN §6);
//! - `plan.rs`: what a build would do without building ([`expand`], [`plan()`]).

mod plan;
mod splice;
mod task;

#[cfg(test)]
pub(crate) mod fake;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::stable_graph::NodeIndex;

use crate::store::{Hash, OutputRef, StorePath};

use super::dao::{self, DaoError, Generated};
use super::graph::NodeMap;
use super::report::{BuildReport, Event, Failure, FailureKind, Reporter, RootResult};
use super::{BuildGraph, BuildStore, Cancel, Error, ExecError, Executor, Job};

pub use plan::{Plan, expand, plan};
use task::{Reply, Task, start};

/// How to run a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Concurrent builds (at least 1).
    pub jobs: usize,
    /// Keep building what does not depend on a failure.
    pub keep_going: bool,
    /// Rebuild the requested roots and every DAO even if realised and compare the outputs.
    pub check: bool,
    /// Bounds on DAO documents and nesting.
    pub dao_limits: dao::Limits,
    /// The graph hash recorded for a DAO (by derivation hash), e.g. in `bramble.lock`: a
    /// DAO that generates another graph fails.
    pub dao_graphs: Arc<HashMap<Hash, Hash>>,
    /// A DAO without a recorded graph fails (`--locked`).
    pub dao_locked: bool,
    /// Build nothing: what is not realised stays unbuilt ([`expand`]).
    pub dry: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keep_going: false,
            check: false,
            dao_limits: dao::Limits::default(),
            dao_graphs: Arc::default(),
            dao_locked: false,
            dry: false,
        }
    }
}

/// The store, the executor and the reporter a build runs with.
pub struct Engine<S, E> {
    pub store: Arc<S>,
    pub executor: Arc<E>,
    pub reporter: Arc<dyn Reporter>,
}

impl<S, E> std::fmt::Debug for Engine<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Build every root of `graph`. Build failures are in the report; `Err` is for failures of
/// the store outside any one build.
pub async fn run<S: BuildStore, E: Executor>(
    engine: &Engine<S, E>,
    graph: BuildGraph,
    options: &BuildOptions,
    cancel: Cancel,
) -> Result<BuildReport, Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Finished>();
    let mut scheduler = Loop::new(engine, graph, options, tx);
    scheduler.reporter.event(Event::Planned {
        total: scheduler.graph.node_count(),
    });
    loop {
        scheduler.settle()?;
        scheduler.dispatch();
        if scheduler.running == 0 && scheduler.generating == 0 {
            break;
        }
        tokio::select! {
            finished = rx.recv() => {
                let finished = finished.expect("the loop holds a sender");
                scheduler.finish(finished);
            }
            () = cancel.cancelled(), if !scheduler.report.cancelled => {
                scheduler.report.cancelled = true;
                scheduler.stop_all();
            }
        }
    }
    Ok(scheduler.into_report())
}

#[derive(Debug)]
enum State {
    /// Waiting for this many dependencies.
    Waiting(usize),
    Queued(Box<Queued>),
    Running,
    /// Realised: the path of every output, in the order of the derivation's `outputs` (no
    /// map per node: a no-op build of 10,000 derivations holds 10,000 of these).
    Done(Vec<StorePath>),
    /// A realised DAO whose document is being read and validated.
    Generating(BTreeMap<String, StorePath>),
    /// A DAO whose document was spliced: its dependents now depend on `result`.
    Spliced {
        result: NodeIndex,
    },
    /// Not realised, and not built ([`BuildOptions::dry`]).
    Unbuilt,
    Failed,
    Skipped,
}

#[derive(Debug)]
struct Queued {
    job: Job,
    /// `--check`: the registered outputs to compare with.
    expected: Option<BTreeMap<String, StorePath>>,
}

/// How a finished task ended.
enum TaskOutcome {
    /// Built: its outputs, and what it downloaded if it is a fetch.
    Built(
        BTreeMap<String, StorePath>,
        Option<super::fetch::FetchRecord>,
    ),
    BuiltElsewhere(BTreeMap<String, StorePath>),
    Failed(FailureKind),
    /// A DAO's document, read and validated (no build slot was held).
    Generated(Result<Generated, DaoError>),
}

struct Finished {
    node: NodeIndex,
    outcome: TaskOutcome,
    elapsed: Duration,
}

/// Output paths in the order of `outputs` keyed by output name.
fn by_output(outputs: &[String], paths: Vec<StorePath>) -> BTreeMap<String, StorePath> {
    outputs.iter().cloned().zip(paths).collect()
}

/// The paths of `found` (one per output, as a finished task reports them) in the order of
/// `outputs`.
fn in_output_order(outputs: &[String], mut found: BTreeMap<String, StorePath>) -> Vec<StorePath> {
    outputs
        .iter()
        .map(|o| {
            found
                .remove(o)
                .expect("a finished task reports every output")
        })
        .collect()
}

/// The path `refs` ([`Loop::resolved_refs`]) has for template `r`.
fn lookup<'p>(refs: &[(&OutputRef, &'p StorePath)], r: &OutputRef) -> Option<&'p StorePath> {
    refs.binary_search_by(|(known, _)| (*known).cmp(r))
        .ok()
        .map(|i| refs[i].1)
}

/// The loop's state: the graph, every node's [`State`], the ready nodes and the queue.
struct Loop<'a, S, E> {
    store: &'a Arc<S>,
    executor: &'a Arc<E>,
    reporter: &'a Arc<dyn Reporter>,
    options: &'a BuildOptions,
    graph: BuildGraph,
    state: NodeMap<State>,
    keys: NodeMap<Hash>,
    /// Nodes whose dependencies are all realised, not yet resolved.
    ready: Vec<NodeIndex>,
    /// Resolved nodes waiting for a slot, in order.
    queue: VecDeque<NodeIndex>,
    running: usize,
    /// No new builds start (a failure without keep-going, or cancellation).
    stopping: bool,
    /// Fired to cancel running builds.
    stop: Cancel,
    check_roots: HashSet<NodeIndex>,
    report: BuildReport,
    tx: tokio::sync::mpsc::UnboundedSender<Finished>,
    /// DAO documents being read and validated (these hold no build slot).
    generating: usize,
    /// The DAO nesting level that generated a node (absent: written in Starlark, level 0).
    level: HashMap<NodeIndex, u32>,
    /// Store paths a generated node names literally: inputs besides its dependencies.
    extra_inputs: HashMap<NodeIndex, BTreeSet<StorePath>>,
    /// The DAO that generated a node.
    generated_by: HashMap<NodeIndex, NodeIndex>,
    /// Results of spliced DAOs that stood for a root (a root, or the result of one): with
    /// `--check` they are checked as the roots are, since they are what was asked for.
    root_results: HashSet<NodeIndex>,
}

impl<'a, S: BuildStore, E: Executor> Loop<'a, S, E> {
    fn new(
        engine: &'a Engine<S, E>,
        graph: BuildGraph,
        options: &'a BuildOptions,
        tx: tokio::sync::mpsc::UnboundedSender<Finished>,
    ) -> Self {
        let nodes = graph.node_count();
        let mut state = NodeMap::with_capacity(nodes);
        let mut ready = Vec::new();
        for index in graph.nodes() {
            let missing = graph.dependency_count(index);
            if missing == 0 {
                ready.push(index);
            }
            state.insert(index, State::Waiting(missing));
        }
        let check_roots = if options.check {
            let daos = graph.nodes().filter(|&i| graph.node(i).drv.dao);
            graph.roots().iter().copied().chain(daos).collect()
        } else {
            HashSet::new()
        };
        Loop {
            store: &engine.store,
            executor: &engine.executor,
            reporter: &engine.reporter,
            options,
            graph,
            state,
            keys: NodeMap::with_capacity(nodes),
            ready,
            queue: VecDeque::new(),
            running: 0,
            stopping: false,
            stop: Cancel::new(),
            check_roots,
            report: BuildReport::default(),
            tx,
            generating: 0,
            level: HashMap::new(),
            extra_inputs: HashMap::new(),
            generated_by: HashMap::new(),
            root_results: HashSet::new(),
        }
    }

    /// Resolve every ready node: done if realised, queued otherwise. Nodes that become
    /// ready meanwhile (dependents of cached ones) are handled in the same call, one wave
    /// at a time, with one store lookup per wave.
    fn settle(&mut self) -> Result<(), Error> {
        while !self.ready.is_empty() {
            let wave = std::mem::take(&mut self.ready);
            let mut keyed = Vec::with_capacity(wave.len());
            for index in wave {
                if self.stopping {
                    self.state.insert(index, State::Skipped);
                    continue;
                }
                // The build key is hashed from a borrowed view of the resolved derivation;
                // the resolved `Derivation` itself is built only for nodes that are queued.
                let refs = self.resolved_refs(index);
                let node = self.graph.node(index);
                let key = node
                    .drv
                    .build_key_with(&node.templates, |r| lookup(&refs, r));
                match key {
                    Ok(key) => {
                        self.keys.insert(index, key);
                        keyed.push((index, key));
                    }
                    Err(e) => self.fail(index, FailureKind::Resolve(e)),
                }
            }
            let wanted: Vec<(Hash, &str)> = keyed
                .iter()
                .flat_map(|&(index, key)| {
                    let drv = &self.graph.node(index).drv;
                    drv.outputs.iter().map(move |o| (key, o.as_str()))
                })
                .collect();
            let found: Vec<Option<StorePath>> = self.store.realisations(&wanted)?;
            drop(wanted);
            let mut found = found.into_iter();
            for (index, key) in keyed {
                let node = self.graph.node(index).clone();
                // Every output's path, in output order, or `None` if one is missing (each
                // output's answer is taken either way).
                let mut paths = Some(Vec::with_capacity(node.drv.outputs.len()));
                for _ in &node.drv.outputs {
                    match (found.next().flatten(), paths.as_mut()) {
                        (Some(path), Some(realised)) => realised.push(path),
                        _ => paths = None,
                    }
                }
                let check = self.check_roots.contains(&index);
                match paths {
                    Some(paths) if !check => {
                        self.reporter.event(Event::Cached {
                            drv: node.hash,
                            name: node.drv.name.clone(),
                        });
                        self.report.cached += 1;
                        self.complete(index, paths);
                    }
                    _ if self.options.dry => {
                        self.state.insert(index, State::Unbuilt);
                    }
                    expected => {
                        let refs = self.resolved_refs(index);
                        let resolved = node.drv.resolve_with(&node.templates, |r| lookup(&refs, r));
                        drop(refs);
                        let drv = match resolved {
                            Ok(drv) => drv,
                            Err(e) => {
                                self.fail(index, FailureKind::Resolve(e));
                                continue;
                            }
                        };
                        let inputs = self.inputs(index);
                        let job = Job {
                            drv_hash: node.hash,
                            drv: Arc::new(drv),
                            build_key: key,
                            inputs,
                        };
                        let expected = match expected {
                            Some(paths) if check => Some(by_output(&node.drv.outputs, paths)),
                            _ => None,
                        };
                        self.state
                            .insert(index, State::Queued(Box::new(Queued { job, expected })));
                        self.queue.push_back(index);
                    }
                }
            }
        }
        Ok(())
    }

    /// The realised dependency outputs of `index`, by the template naming them, sorted (for
    /// `binary_search_by`: no map is built per node).
    fn resolved_refs(&self, index: NodeIndex) -> Vec<(&OutputRef, &StorePath)> {
        let mut refs: Vec<(&OutputRef, &StorePath)> = self
            .graph
            .dependencies(index)
            .filter_map(|(dep, r)| match self.state.get(dep) {
                Some(State::Done(paths)) => {
                    let outputs = &self.graph.node(dep).drv.outputs;
                    let output = outputs.iter().position(|o| *o == r.output)?;
                    Some((r, paths.get(output)?))
                }
                _ => None,
            })
            .collect();
        refs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        refs
    }

    /// The store paths a build of `index` reads: its realised dependency outputs and the
    /// paths it names literally.
    fn inputs(&self, index: NodeIndex) -> BTreeSet<StorePath> {
        let mut inputs: BTreeSet<StorePath> = self
            .resolved_refs(index)
            .into_iter()
            .map(|(_, p)| p.clone())
            .collect();
        if let Some(extra) = self.extra_inputs.get(&index) {
            inputs.extend(extra.iter().cloned());
        }
        inputs
    }

    /// Start queued builds while slots are free. Each build's first blocking section
    /// ([`start`]) is handed to a blocking thread from here, not from its task: one thread
    /// handoff fewer between a build's dependency finishing and its builder starting.
    fn dispatch(&mut self) {
        while !self.stopping && self.running < self.options.jobs.max(1) {
            let Some(index) = self.queue.pop_front() else {
                break;
            };
            let Some(State::Queued(queued)) = self.state.insert(index, State::Running) else {
                unreachable!("only queued nodes are in the queue");
            };
            self.running += 1;
            let Queued { job, expected } = *queued;
            let (store, executor) = (self.store.clone(), self.executor.clone());
            let recheck = expected.is_none();
            let started =
                tokio::task::spawn_blocking(move || start(&*store, &*executor, job, recheck));
            let task = Task {
                store: self.store.clone(),
                executor: self.executor.clone(),
                reporter: self.reporter.clone(),
                name: self.graph.node(index).drv.name.clone(),
                expected,
                stop: self.stop.clone(),
                reply: Reply {
                    node: index,
                    tx: self.tx.clone(),
                    since: Instant::now(),
                },
            };
            tokio::spawn(task.run(started));
        }
    }

    fn finish(&mut self, finished: Finished) {
        let index = finished.node;
        let node = self.graph.node(index).clone();
        if let TaskOutcome::Generated(generated) = finished.outcome {
            self.generating -= 1;
            match generated {
                _ if self.stopping => {
                    self.state.insert(index, State::Skipped);
                }
                Ok(generated) => self.splice(index, generated),
                Err(e) => {
                    self.reporter.event(Event::Failed {
                        drv: node.hash,
                        name: node.drv.name.clone(),
                        elapsed: finished.elapsed,
                    });
                    self.fail(index, FailureKind::Dao(e));
                }
            }
            return;
        }
        self.running -= 1;
        match finished.outcome {
            TaskOutcome::Built(outputs, fetched) => {
                self.report.fetches.extend(fetched);
                self.reporter.event(Event::Built {
                    drv: node.hash,
                    name: node.drv.name.clone(),
                    elapsed: finished.elapsed,
                });
                self.report.built += 1;
                self.complete(index, in_output_order(&node.drv.outputs, outputs));
            }
            TaskOutcome::BuiltElsewhere(outputs) => {
                self.reporter.event(Event::BuiltElsewhere {
                    drv: node.hash,
                    name: node.drv.name.clone(),
                });
                self.report.cached += 1;
                self.complete(index, in_output_order(&node.drv.outputs, outputs));
            }
            TaskOutcome::Failed(FailureKind::Exec(ExecError::Cancelled)) if self.stopping => {
                self.state.insert(index, State::Skipped);
            }
            TaskOutcome::Failed(kind) => {
                self.reporter.event(Event::Failed {
                    drv: node.hash,
                    name: node.drv.name.clone(),
                    elapsed: finished.elapsed,
                });
                self.fail(index, kind);
            }
            TaskOutcome::Generated(_) => unreachable!("handled above"),
        }
    }

    /// `index` is realised: release the dependents that now have every input — or, for a
    /// DAO, read its document first.
    fn complete(&mut self, index: NodeIndex, paths: Vec<StorePath>) {
        let drv = &self.graph.node(index).drv;
        if drv.dao {
            let outputs = by_output(&drv.outputs, paths);
            self.generate(index, outputs);
            return;
        }
        self.state.insert(index, State::Done(paths));
        for dependent in self.graph.dependents(index) {
            if let Some(State::Waiting(missing)) = self.state.get_mut(dependent) {
                *missing -= 1;
                if *missing == 0 {
                    self.ready.push(dependent);
                }
            }
        }
    }

    /// How many distinct dependencies of `index` are not realised.
    fn missing(&self, index: NodeIndex) -> usize {
        let deps: BTreeSet<NodeIndex> = self.graph.dependencies(index).map(|(d, _)| d).collect();
        deps.into_iter()
            .filter(|&d| !matches!(self.state.get(d), Some(State::Done(_))))
            .count()
    }

    /// The outputs of `index`, following spliced DAOs to their results.
    fn outputs_of(&self, mut index: NodeIndex) -> Option<BTreeMap<String, StorePath>> {
        for _ in 0..=self.graph.node_count() {
            match self.state.get(index)? {
                State::Done(paths) => {
                    let outputs = &self.graph.node(index).drv.outputs;
                    return Some(by_output(outputs, paths.clone()));
                }
                State::Spliced { result } => index = *result,
                _ => return None,
            }
        }
        None
    }

    fn fail(&mut self, index: NodeIndex, kind: FailureKind) {
        let node = self.graph.node(index);
        self.report.failures.push(Failure {
            drv: node.hash,
            name: node.drv.name.clone(),
            kind,
        });
        self.state.insert(index, State::Failed);
        if !self.options.keep_going {
            self.stop_all();
        }
    }

    /// Start nothing new and cancel running builds.
    fn stop_all(&mut self) {
        self.stopping = true;
        self.stop.cancel();
        while let Some(index) = self.queue.pop_front() {
            self.state.insert(index, State::Skipped);
        }
    }

    fn into_report(mut self) -> BuildReport {
        let skipped = self
            .state
            .values()
            .filter(|s| {
                matches!(
                    s,
                    State::Waiting(_)
                        | State::Skipped
                        | State::Queued(_)
                        | State::Generating(_)
                        | State::Unbuilt
                )
            })
            .count();
        self.report.skipped = skipped;
        for &index in self.graph.roots() {
            let node = self.graph.node(index);
            let outputs = self.outputs_of(index);
            self.report.roots.push(RootResult {
                drv: node.hash,
                name: node.drv.name.clone(),
                build_key: self.keys.get(index).copied(),
                outputs,
            });
        }
        self.report
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod dao_tests;
