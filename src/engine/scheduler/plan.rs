//! What a build would do, without building: [`expand`] (the graph with every DAO already in
//! the store spliced in, for `bramble graph`) and [`plan()`] (`--dry-run`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use petgraph::stable_graph::NodeIndex;

use crate::store::{Hash, OutputRef, StorePath};

use super::super::report::{GraphView, NullReporter, Reporter, ViewNode};
use super::super::{BuildGraph, BuildStore, Built, Cancel, Error, ExecError, Executor, Job};
use super::{BuildOptions, Engine, Finished, Loop, State};

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
        reporter: Arc::new(NullReporter) as Arc<dyn Reporter>,
    };
    let options = BuildOptions {
        dry: true,
        keep_going: true,
        check: false,
        ..options.clone()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Finished>();
    let mut run = Loop::new(&engine, graph, &options, tx);
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

    async fn execute(&self, _job: Job, (): (), _cancel: Cancel) -> Result<Built, ExecError> {
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

impl<S: BuildStore, E: Executor> Loop<'_, S, E> {
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
}
