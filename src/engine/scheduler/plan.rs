//! What a build would do, without building: [`expand`] (the graph with every DAO already in
//! the store spliced in, for `bramble graph`) and [`plan()`] (`--dry-run`).

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::stable_graph::NodeIndex;

use crate::store::Hash;

use super::{BuildOptions, Engine, Finished, Loop, State};
use crate::engine::report::{GraphView, NullReporter, Reporter, ViewNode};
use crate::engine::{BuildGraph, BuildStore, Built, Cancel, Error, ExecError, Executor, Job};

/// Splice every DAO whose document is already in the store (recursively), build nothing,
/// and return the resulting graph.
pub async fn expand<S: BuildStore>(
    store: Arc<S>,
    graph: BuildGraph,
    options: &BuildOptions,
) -> Result<GraphView, Error> {
    expanded(store, graph, options, |l| l.view()).await
}

/// What a build would do (`--dry-run`).
#[derive(Debug, Default)]
pub struct Plan {
    /// Derivations that would be built, dependencies first: (hash, name).
    pub to_build: Vec<(Hash, String)>,
    /// Derivations already realised.
    pub cached: Vec<(Hash, String)>,
    /// The DAOs of `to_build`: what they generate is not known until they run.
    pub not_generated: Vec<(Hash, String)>,
}

/// What [`super::run`] would build and what is already realised, building nothing
/// (`--dry-run`): the graph as [`expand`] leaves it, every DAO realised in the store spliced
/// in, dependencies first. A node with an unbuilt dependency counts as to be built (early
/// cutoff may still spare it).
pub async fn plan<S: BuildStore>(
    store: Arc<S>,
    graph: BuildGraph,
    options: &BuildOptions,
) -> Result<Plan, Error> {
    expanded(store, graph, options, |l| l.plan()).await?
}

/// Run the loop without building until every DAO realised in the store is spliced, then
/// read the result with `read`.
async fn expanded<S: BuildStore, R>(
    store: Arc<S>,
    graph: BuildGraph,
    options: &BuildOptions,
    read: impl FnOnce(&Loop<'_, S, NoBuilds>) -> R,
) -> Result<R, Error> {
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
    let mut expanding = Loop::new(&engine, graph, &options, tx);
    loop {
        expanding.settle()?;
        if expanding.generating == 0 {
            break;
        }
        let finished = rx.recv().await.expect("the loop holds a sender");
        expanding.finish(finished);
    }
    Ok(read(&expanding))
}

/// The executor of [`expand`] and [`plan()`], which never builds (with
/// [`BuildOptions::dry`] the loop never starts a build).
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

impl<S: BuildStore, E: Executor> Loop<'_, S, E> {
    /// Realised in the store (for a spliced DAO: its document).
    fn realised(&self, index: NodeIndex) -> bool {
        matches!(
            self.state.get(index),
            Some(State::Done(_) | State::Spliced { .. } | State::Generating(_))
        )
    }

    /// The plan of the graph as it stands, for [`plan()`].
    fn plan(&self) -> Result<Plan, Error> {
        let mut plan = Plan::default();
        for index in self.graph.dependencies_first()? {
            let node = self.graph.node(index);
            let entry = (node.hash, node.drv.name.clone());
            if self.realised(index) {
                plan.cached.push(entry);
                continue;
            }
            if node.drv.dao {
                plan.not_generated.push(entry.clone());
            }
            plan.to_build.push(entry);
        }
        Ok(plan)
    }

    /// The graph as it stands, for [`expand`].
    fn view(&self) -> GraphView {
        let order: Vec<NodeIndex> = self.graph.nodes().collect();
        let position: HashMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let mut view = GraphView::default();
        for &index in &order {
            let node = self.graph.node(index);
            let realised = self.realised(index);
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
