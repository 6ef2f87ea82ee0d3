//! Derivations as output in the loop: a realised DAO's document is read and validated
//! ([`crate::engine::dao`]) on a blocking thread without a build slot, then spliced into the graph.
//!
//! When a DAO node is realised (built, or found in the store) the loop does not release its
//! dependents. Back in the loop the generated derivations are inserted (an identical one
//! already in the graph is the same node), every dependent of the DAO is redirected to the
//! result, and the new nodes are scheduled like any others. The DAO's own node ends
//! [`State::Spliced`]: a requested root that is a DAO reports its result's outputs. A
//! generated DAO is spliced the same way, one level deeper. The generated graph is compared
//! with the one `bramble.lock` recorded ([`super::BuildOptions::dao_graphs`]) before
//! anything is spliced.

use std::collections::BTreeMap;
use std::time::Instant;

use petgraph::stable_graph::NodeIndex;

use crate::store::StorePath;

use super::{Finished, Loop, State, TaskOutcome};
use crate::engine::dao::{self, DaoError, Generated, Problem};
use crate::engine::report::{Event, FailureKind, Splice};
use crate::engine::{BuildStore, Executor};

impl<S: BuildStore, E: Executor> Loop<'_, S, E> {
    /// Read and validate the document of realised DAO `index` on a blocking thread.
    pub(super) fn generate(&mut self, index: NodeIndex, outputs: BTreeMap<String, StorePath>) {
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
                    .map_err(|e| problem(Problem::Document(crate::error::chain(&e))))?;
                let mut wanted = inputs;
                wanted.insert(document.clone());
                let allowed = store
                    .closure(&wanted)
                    .map_err(|e| problem(Problem::Document(crate::error::chain(&e))))?;
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
    pub(super) fn splice(&mut self, index: NodeIndex, generated: Generated) {
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
}
