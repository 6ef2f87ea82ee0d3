//! The one topological order of Bramble: dependencies first.
//!
//! Every graph Bramble orders (the build graph, a DAO document's entries, the derivations a
//! lock file pins) has its edges running from a dependent to each of its dependencies, and
//! every caller needs the dependencies first. This is petgraph's topological sort of the
//! reversed graph, so any petgraph graph (`StableDiGraph`, `DiGraph`, `DiGraphMap`) can be
//! ordered without copying it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use petgraph::algo::toposort;
use petgraph::visit::{
    IntoNeighbors, IntoNeighborsDirected, IntoNodeIdentifiers, Reversed, Visitable,
};

/// The nodes of `graph`, whose edges run from a dependent to its dependencies, ordered so
/// that every node comes after all of its dependencies. `Err` holds a node on a cycle (a
/// node depending on itself is one).
pub fn dependencies_first<G>(graph: G) -> Result<Vec<G::NodeId>, G::NodeId>
where
    G: IntoNeighborsDirected + IntoNodeIdentifiers + Visitable,
{
    toposort(Reversed(graph), None).map_err(|cycle| cycle.node_id())
}

/// A shortest cycle through `start` (a node [`dependencies_first`] found on a cycle), along
/// the edges: `start` first and again last (`[a, a]` for a node depending on itself). Just
/// `[start]` if `start` is on no cycle.
pub fn cycle_through<G>(graph: G, start: G::NodeId) -> Vec<G::NodeId>
where
    G: IntoNeighbors,
    G::NodeId: Eq + std::hash::Hash,
{
    let mut parent: HashMap<G::NodeId, G::NodeId> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for next in graph.neighbors(at) {
            if next == start {
                let mut path = vec![start, at];
                let mut node = at;
                while node != start {
                    node = parent[&node];
                    path.push(node);
                }
                path.reverse();
                return path;
            }
            if let Entry::Vacant(entry) = parent.entry(next) {
                entry.insert(at);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

#[cfg(test)]
mod tests {
    use petgraph::graph::{DiGraph, NodeIndex};

    use super::*;

    #[test]
    fn dependencies_come_first_and_a_cycle_is_named() {
        // top -> left -> base, top -> right -> base.
        let mut g = DiGraph::<&str, ()>::new();
        let [base, left, right, top] = ["base", "left", "right", "top"].map(|n| g.add_node(n));
        g.extend_with_edges([(top, left), (top, right), (left, base), (right, base)]);
        let order = dependencies_first(&g).unwrap();
        let at = |n: NodeIndex| order.iter().position(|&i| i == n).unwrap();
        assert_eq!(order.len(), 4);
        assert!(at(base) < at(left) && at(base) < at(right));
        assert!(at(left) < at(top) && at(right) < at(top));

        g.add_edge(base, top, ());
        let on_cycle = dependencies_first(&g).unwrap_err();
        let names: Vec<&str> = cycle_through(&g, on_cycle).iter().map(|&i| g[i]).collect();
        let path = names.join(" -> ");
        assert!(
            [
                "base -> top -> left -> base",
                "top -> left -> base -> top",
                "left -> base -> top -> left",
                "right -> base -> top -> right",
                "base -> top -> right -> base",
                "top -> right -> base -> top",
            ]
            .contains(&path.as_str()),
            "{path}"
        );
        assert_eq!(cycle_through(&g, right).len(), 4);

        let mut g = DiGraph::<&str, ()>::new();
        let alone = g.add_node("alone");
        let free = g.add_node("free");
        g.add_edge(alone, alone, ());
        assert_eq!(dependencies_first(&g), Err(alone));
        assert_eq!(cycle_through(&g, alone), [alone, alone]);
        assert_eq!(cycle_through(&g, free), [free]);
    }

    #[test]
    fn a_map_of_derivations_orders_by_hash_keyed_graph_map() {
        // The shape of `bramble.lock`'s pass: derivations keyed by hash, edges from their
        // templates, dependencies outside the map ignored.
        use petgraph::graphmap::DiGraphMap;

        use crate::store::{Derivation, Hash};

        let outside = Derivation::new("outside", "/bin/sh");
        let base = Derivation::new("base", "/bin/sh");
        let mut top = Derivation::new("top", "/bin/sh");
        top.args = vec![
            base.output_ref("out").template(),
            outside.output_ref("out").template(),
        ];
        let derivations: std::collections::BTreeMap<Hash, Derivation> =
            [(top.hash(), top), (base.hash(), base)].into();
        let mut graph = DiGraphMap::<Hash, ()>::new();
        for (&hash, drv) in &derivations {
            graph.add_node(hash);
            for dep in drv.dependencies().unwrap() {
                if derivations.contains_key(&dep.drv) {
                    graph.add_edge(hash, dep.drv, ());
                }
            }
        }
        let order: Vec<&str> = dependencies_first(&graph)
            .unwrap()
            .iter()
            .map(|h| derivations[h].name.as_str())
            .collect();
        assert_eq!(order, ["base", "top"]);
    }
}
