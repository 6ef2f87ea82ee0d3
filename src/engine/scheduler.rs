//! The scheduler: a loop on tokio that owns the [`BuildGraph`] and the state of every node.
//!
//! The loop never blocks on a build. Each build is a task that reports back through a channel;
//! the loop then releases the dependents whose inputs are now all realised. A node is only
//! ever in one state, and slots are counted by the loop itself, so a node that waits for
//! something (a lock, later a DAO's spliced subgraph) holds a slot only while its builder runs
//! or its outputs are being added.
//!
//! # Derivations as output
//!
//! When a DAO node is realised (built, or found in the store) the loop does not release its
//! dependents. A blocking task reads and validates its document ([`super::dao`]) without a
//! build slot; back in the loop the generated derivations are inserted (an identical one
//! already in the graph is the same node), every dependent of the DAO is redirected to the
//! result, and the new nodes are scheduled like any others. The DAO's own node ends
//! [`State::Spliced`]: a requested root that is a DAO reports its result's outputs. A
//! generated DAO is spliced the same way, one level deeper. The generated graph is compared
//! with the one `bramble.lock` recorded ([`BuildOptions::dao_graphs`]) before anything is
//! spliced.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::stable_graph::NodeIndex;

use crate::store::{DerivationError, Hash, OutputRef, StorePath};

use super::dao::{self, DaoError, Generated, Problem};
use super::graph::NodeMap;
use super::report::{Event, Reporter};
use super::{
    BuildGraph, BuildStart, BuildStore, Cancel, Error, ExecError, Executor, Job, StoreError,
};

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
    #[error("cannot splice the generated derivations: {0}")]
    Splice(Error),
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
    /// See [`dao::Generated::graph_hash`].
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
/// ([`expand`]).
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

/// Splice every DAO whose document is already in the store (recursively), build nothing,
/// and return the resulting graph.
pub async fn expand<S: BuildStore>(
    store: Arc<S>,
    graph: BuildGraph,
    options: &BuildOptions,
) -> Result<GraphView, Error> {
    let engine = Engine {
        store,
        executor: Arc::new(NoBuilds),
        reporter: Arc::new(super::NullReporter) as Arc<dyn Reporter>,
    };
    let options = BuildOptions {
        dry: true,
        keep_going: true,
        check: false,
        ..options.clone()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Finished>();
    let mut run = Run::new(&engine, graph, &options, tx);
    loop {
        run.settle()?;
        if run.generating == 0 {
            break;
        }
        let finished = rx.recv().await.expect("the loop holds a sender");
        run.finish(finished);
    }
    Ok(run.view())
}

/// The executor of [`expand`], which never builds.
struct NoBuilds;

impl Executor for NoBuilds {
    type Prepared = ();

    fn prepare(&self, _job: &Job) -> Result<(), ExecError> {
        Ok(())
    }

    async fn execute(&self, _job: Job, (): (), _cancel: Cancel) -> Result<super::Built, ExecError> {
        Err(ExecError::Setup {
            message: "nothing is built while expanding a graph".into(),
        })
    }
}

/// What a build would do (`--dry-run`).
#[derive(Debug, Default)]
pub struct Plan {
    /// Derivations that would be built, dependencies first: (hash, name).
    pub to_build: Vec<(Hash, String)>,
    /// Derivations already realised.
    pub cached: Vec<(Hash, String)>,
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
    let mut run = Run::new(engine, graph, options, tx);
    run.reporter.event(Event::Planned {
        total: run.graph.node_count(),
    });
    loop {
        run.settle()?;
        run.dispatch();
        if run.running == 0 && run.generating == 0 {
            break;
        }
        tokio::select! {
            finished = rx.recv() => {
                let finished = finished.expect("the loop holds a sender");
                run.finish(finished);
            }
            () = cancel.cancelled(), if !run.report.cancelled => {
                run.report.cancelled = true;
                run.stop_all();
            }
        }
    }
    Ok(run.into_report())
}

/// What `run` would build and what is already realised, without building (`--dry-run`).
/// A node with an unbuilt dependency counts as to be built (early cutoff may still spare it).
pub fn plan<S: BuildStore>(store: &S, graph: &BuildGraph) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    let mut realised: HashMap<NodeIndex, BTreeMap<String, StorePath>> = HashMap::new();
    let mut unknown: HashSet<NodeIndex> = HashSet::new();
    for index in topological(graph) {
        let node = graph.node(index);
        let entry = (node.hash, node.drv.name.clone());
        if graph
            .dependencies(index)
            .any(|(dep, _)| unknown.contains(&dep))
        {
            unknown.insert(index);
            plan.to_build.push(entry);
            continue;
        }
        let refs = resolution_map(graph, index, &realised);
        let key = node
            .drv
            .build_key_with(&node.templates, |r| refs.get(r))
            .map_err(Error::Derivation)?;
        match store.realised(key, &node.drv.outputs)? {
            Some(outputs) => {
                realised.insert(index, outputs);
                plan.cached.push(entry);
            }
            None => {
                unknown.insert(index);
                plan.to_build.push(entry);
            }
        }
    }
    Ok(plan)
}

/// Nodes, dependencies first.
fn topological(graph: &BuildGraph) -> Vec<NodeIndex> {
    let mut order = Vec::with_capacity(graph.node_count());
    let mut missing: HashMap<NodeIndex, usize> = graph
        .nodes()
        .map(|i| (i, graph.dependency_count(i)))
        .collect();
    let mut ready: Vec<NodeIndex> = graph.nodes().filter(|i| missing[i] == 0).collect();
    while let Some(index) = ready.pop() {
        order.push(index);
        for dependent in graph.dependents(index) {
            let m = missing.get_mut(&dependent).expect("every node is counted");
            *m -= 1;
            if *m == 0 {
                ready.push(dependent);
            }
        }
    }
    order
}

/// Template → realised path, for every dependency edge of `index` that is realised.
fn resolution_map(
    graph: &BuildGraph,
    index: NodeIndex,
    realised: &HashMap<NodeIndex, BTreeMap<String, StorePath>>,
) -> HashMap<OutputRef, StorePath> {
    graph
        .dependencies(index)
        .filter_map(|(dep, r)| {
            let path = realised.get(&dep)?.get(&r.output)?;
            Some((r.clone(), path.clone()))
        })
        .collect()
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

/// The path `refs` ([`Run::resolved_refs`]) has for template `r`.
fn lookup<'p>(refs: &[(&OutputRef, &'p StorePath)], r: &OutputRef) -> Option<&'p StorePath> {
    refs.binary_search_by(|(known, _)| (*known).cmp(r))
        .ok()
        .map(|i| refs[i].1)
}

struct Run<'a, S, E> {
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

impl<'a, S: BuildStore, E: Executor> Run<'a, S, E> {
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
        Run {
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
                report: Report {
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

    /// Read and validate the document of realised DAO `index` on a blocking thread.
    fn generate(&mut self, index: NodeIndex, outputs: BTreeMap<String, StorePath>) {
        let node = self.graph.node(index).clone();
        let document = outputs
            .get("out")
            .expect("a DAO has the output `out`")
            .clone();
        self.state.insert(index, State::Generating(outputs));
        self.generating += 1;
        // Its dependencies are realised (it was settled), so these are the inputs it ran with.
        let inputs = self.inputs(index);
        let level = self.level.get(&index).copied().unwrap_or(0) + 1;
        let limits = self.options.dao_limits;
        let store = self.store.clone();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let problem = |p: Problem| DaoError {
                dao: node.drv.name.clone(),
                entry: None,
                problem: p,
            };
            let generated = (|| {
                let text = store
                    .read_document(&document, limits.max_bytes)
                    .map_err(|e| problem(Problem::Document(e.to_string())))?;
                let mut wanted = inputs;
                wanted.insert(document.clone());
                let allowed = store
                    .closure(&wanted)
                    .map_err(|e| problem(Problem::Document(e.to_string())))?;
                let origin = dao::Origin {
                    name: &node.drv.name,
                    hash: node.hash,
                    platform: &node.drv.platform,
                    level,
                    allowed: &allowed,
                };
                dao::validate(&text, &origin, &limits)
            })();
            tracing::debug!(dao = %node.drv.name, elapsed = ?start.elapsed(), "document validated");
            let _ = tx.send(Finished {
                node: index,
                outcome: TaskOutcome::Generated(generated),
                elapsed: start.elapsed(),
            });
        });
    }

    /// Splice a validated document in place of DAO `index`.
    fn splice(&mut self, index: NodeIndex, generated: Generated) {
        let node = self.graph.node(index).clone();
        let Some(State::Generating(outputs)) = self.state.get(index) else {
            unreachable!("only generating DAOs are spliced");
        };
        let document = outputs["out"].clone();
        let locked = match self.options.dao_graphs.get(&node.hash) {
            Some(&recorded) if recorded != generated.graph_hash => Some(Problem::GraphChanged {
                recorded,
                generated: generated.graph_hash,
            }),
            None if self.options.dao_locked => Some(Problem::NotRecorded {
                generated: generated.graph_hash,
            }),
            _ => None,
        };
        if let Some(problem) = locked {
            let error = DaoError {
                dao: node.drv.name.clone(),
                entry: None,
                problem,
            };
            return self.fail(index, FailureKind::Dao(error));
        }
        let level = self.level.get(&index).copied().unwrap_or(0) + 1;
        let mut new = 0;
        let mut derivations = Vec::with_capacity(generated.derivations.len());
        for g in generated.derivations {
            let (i, is_new) = match self.graph.insert_generated(g.hash, g.drv.clone()) {
                Ok(inserted) => inserted,
                Err(e) => return self.fail(index, FailureKind::Splice(e)),
            };
            if !g.inputs.is_empty() {
                self.extra_inputs.entry(i).or_default().extend(g.inputs);
            }
            if is_new {
                new += 1;
                self.level.insert(i, level);
                self.generated_by.insert(i, index);
                if self.options.check && g.drv.dao {
                    self.check_roots.insert(i);
                }
                let missing = self.missing(i);
                self.state.insert(i, State::Waiting(missing));
                if missing == 0 {
                    self.ready.push(i);
                }
            }
            derivations.push((g.hash, g.drv.name.clone()));
        }
        let result = self
            .graph
            .index_of(&generated.result)
            .expect("the result was inserted");
        if self.graph.roots().contains(&index) || self.root_results.contains(&index) {
            self.root_results.insert(result);
            if self.options.check {
                self.check_roots.insert(result);
            }
        }
        let moved = self.graph.dependents(index);
        self.graph.redirect_dependents(index, result);
        for dependent in moved {
            if let Some(State::Waiting(_)) = self.state.get(dependent) {
                let missing = self.missing(dependent);
                self.state.insert(dependent, State::Waiting(missing));
                if missing == 0 {
                    self.ready.push(dependent);
                }
            }
        }
        self.state.insert(index, State::Spliced { result });
        self.reporter.event(Event::Spliced {
            drv: node.hash,
            name: node.drv.name.clone(),
            generated: derivations.len(),
            new,
        });
        self.reporter.event(Event::Planned {
            total: self.graph.node_count(),
        });
        self.report.splices.push(Splice {
            dao: node.hash,
            name: node.drv.name.clone(),
            document,
            result: generated.result,
            graph: generated.graph_hash,
            derivations,
            new,
        });
    }

    /// The graph as it stands, for [`expand`].
    fn view(&self) -> GraphView {
        let order: Vec<NodeIndex> = self.graph.nodes().collect();
        let position: HashMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let mut view = GraphView::default();
        for &index in &order {
            let node = self.graph.node(index);
            let realised = matches!(
                self.state.get(index),
                Some(State::Done(_) | State::Spliced { .. } | State::Generating(_))
            );
            view.nodes.push(ViewNode {
                hash: node.hash,
                name: node.drv.name.clone(),
                dao: node.drv.dao,
                realised,
                generated_by: self.generated_by.get(&index).map(|g| position[g]),
            });
            for (dep, r) in self.graph.dependencies(index) {
                view.edges
                    .push((position[&index], position[&dep], r.output.clone()));
            }
            if let Some(State::Spliced { result }) = self.state.get(index) {
                view.spliced.push((position[&index], position[result]));
            }
        }
        view.roots = self.graph.roots().iter().map(|r| position[r]).collect();
        view
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

/// What [`start`] hands a build's task: the build's locks (build lock, pins), the job with
/// its input closure and the executor's preparation; or the outputs another process built.
type Started<L, P> = Result<((L, Vec<L>), Job, P), BTreeMap<String, StorePath>>;

/// [`start`] running on a blocking thread.
type Starting<L, P> = tokio::task::JoinHandle<Result<Started<L, P>, FailureKind>>;

/// A build's first blocking section: take the build lock, then look again (another
/// process may have built it), pin the inputs, read their closure and prepare the build.
fn start<S: BuildStore, E: Executor>(
    store: &S,
    executor: &E,
    mut job: Job,
    recheck: bool,
) -> Result<Started<S::Lock, E::Prepared>, FailureKind> {
    let start = store.start_build(job.build_key, &job.drv.outputs, &job.inputs, recheck)?;
    let (lock, pins, closure) = match start {
        BuildStart::Realised(found) => return Ok(Err(found)),
        BuildStart::Build {
            lock,
            pins,
            closure,
        } => (lock, pins, closure),
    };
    job.inputs = closure;
    let prepared = executor.prepare(&job)?;
    Ok(Ok(((lock, pins), job, prepared)))
}

/// Where a build's task reports how it ended.
#[derive(Clone)]
struct Report {
    node: NodeIndex,
    tx: tokio::sync::mpsc::UnboundedSender<Finished>,
    since: Instant,
}

impl Report {
    fn send(&self, outcome: TaskOutcome) {
        let _ = self.tx.send(Finished {
            node: self.node,
            outcome,
            elapsed: self.since.elapsed(),
        });
    }
}

/// One build, run as a tokio task after its first blocking section was started.
struct Task<S, E> {
    store: Arc<S>,
    executor: Arc<E>,
    reporter: Arc<dyn Reporter>,
    name: String,
    /// `--check`: the registered outputs to compare with.
    expected: Option<BTreeMap<String, StorePath>>,
    stop: Cancel,
    report: Report,
}

impl<S: BuildStore, E: Executor> Task<S, E> {
    /// Run the build and report its outcome (a successful one straight from the blocking
    /// thread that registered it, without waking this task first).
    async fn run(self, started: Starting<S::Lock, E::Prepared>) {
        let report = self.report.clone();
        if let Err(kind) = self.run_inner(started).await {
            report.send(TaskOutcome::Failed(kind));
        }
    }

    /// A build crosses threads twice besides its builder's run: one blocking section
    /// before it ([`start`]: [`BuildStore::start_build`] then [`Executor::prepare`]) and
    /// one after ([`BuildStore::finish_build`]: outputs added, paths and realisations
    /// registered).
    async fn run_inner(self, started: Starting<S::Lock, E::Prepared>) -> Result<(), FailureKind> {
        let Task {
            store,
            executor,
            reporter,
            name,
            expected,
            stop,
            report,
        } = self;
        let started = tokio::select! {
            joined = started => joined.expect("the store does not panic")?,
            () = stop.cancelled() => return Err(ExecError::Cancelled.into()),
        };
        let (locks, job, prepared) = match started {
            Err(found) => {
                report.send(TaskOutcome::BuiltElsewhere(found));
                return Ok(());
            }
            Ok(started) => started,
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
            drop(locks);
            tracing::debug!(drv = %drv.name, elapsed = ?started.elapsed(), "outputs added");
            report.send(TaskOutcome::Built(paths, fetched));
            Ok(())
        });
        finish.await.expect("the store does not panic")
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod dao_tests;
