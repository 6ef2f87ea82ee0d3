//! The build graph: one node per derivation, one edge per (dependent, dependency output).
//!
//! Nodes are derivations keyed by their hash; an edge `a → b` carries the template (an
//! [`OutputRef`]) through which `a` names an output of `b`. Resolution follows edges, not
//! hashes, so redirecting an edge (DAO splicing) changes what a template resolves to without
//! touching the derivation. Several requested roots share one graph, so a
//! dependency shared by many of them is one node and is built once.
//!
//! The graph is a `StableDiGraph` owned by the scheduler loop rather than a topological order
//! computed up front: node indices stay valid when nodes are added or removed, which is what
//! derivations-as-output (DAO, DESIGN §6) needs to splice generated derivations in while a
//! build runs ([`BuildGraph::insert`] and [`BuildGraph::redirect_dependents`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

use crate::store::order::{cycle_through, dependencies_first};
use crate::store::{Derivation, Hash, OutputRef, Templates};

use super::Error;

/// A derivation in the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// The derivation's hash (its key).
    pub hash: Hash,
    pub drv: Arc<Derivation>,
    /// Its templates, found once: the edges, and how it is resolved.
    pub templates: Arc<Templates>,
}

/// The derivations to build and their dependencies.
#[derive(Debug, Default)]
pub struct BuildGraph {
    graph: StableDiGraph<Node, OutputRef>,
    index: HashMap<Hash, NodeIndex>,
    roots: Vec<NodeIndex>,
}

impl BuildGraph {
    /// The graph of everything `roots` need. `known` holds every derivation a template may
    /// name (more is fine: only what the roots reach is added), keyed by hash.
    pub fn new(
        known: &HashMap<Hash, Arc<Derivation>>,
        roots: &[Hash],
    ) -> Result<BuildGraph, Error> {
        BuildGraph::with_templates(known, &HashMap::new(), roots)
    }

    /// [`BuildGraph::new`], taking the templates of the derivations in `parsed` from there
    /// (the caller vouches that they are [`Derivation::templates`]) instead of parsing them
    /// again.
    pub fn with_templates(
        known: &HashMap<Hash, Arc<Derivation>>,
        parsed: &HashMap<Hash, Arc<Templates>>,
        roots: &[Hash],
    ) -> Result<BuildGraph, Error> {
        let mut graph = BuildGraph::default();
        for root in roots {
            let drv = known
                .get(root)
                .ok_or_else(|| Error::UnknownRoot { drv: *root })?;
            let index = graph.add_reachable(*root, drv, known, parsed)?;
            if !graph.roots.contains(&index) {
                graph.roots.push(index);
            }
        }
        graph.check_acyclic()?;
        Ok(graph)
    }

    /// Build a graph from a list of derivations, keyed by their computed hashes.
    pub fn from_derivations(
        derivations: impl IntoIterator<Item = Derivation>,
        roots: &[Hash],
    ) -> Result<BuildGraph, Error> {
        let known: HashMap<Hash, Arc<Derivation>> = derivations
            .into_iter()
            .map(|d| (d.hash(), Arc::new(d)))
            .collect();
        BuildGraph::new(&known, roots)
    }

    /// Add `drv` under key `hash` and, transitively, every dependency found in `known`.
    fn add_reachable(
        &mut self,
        hash: Hash,
        drv: &Arc<Derivation>,
        known: &HashMap<Hash, Arc<Derivation>>,
        parsed: &HashMap<Hash, Arc<Templates>>,
    ) -> Result<NodeIndex, Error> {
        if let Some(&index) = self.index.get(&hash) {
            return Ok(index);
        }
        let templates_of = |hash: &Hash, drv: &Derivation| match parsed.get(hash) {
            Some(t) => Ok(t.clone()),
            None => templates(drv),
        };
        let first = self.insert(hash, drv.clone(), templates_of(&hash, drv)?);
        let mut stack = vec![first];
        while let Some(index) = stack.pop() {
            let node = self.graph[index].clone();
            for dep in node.templates.dependencies() {
                let dep_index = match self.index.get(&dep.drv) {
                    Some(&i) => i,
                    None => {
                        let dep_drv =
                            known
                                .get(&dep.drv)
                                .ok_or_else(|| Error::UnknownDerivation {
                                    dependent: node.drv.name.clone(),
                                    template: dep.template(),
                                })?;
                        let i =
                            self.insert(dep.drv, dep_drv.clone(), templates_of(&dep.drv, dep_drv)?);
                        stack.push(i);
                        i
                    }
                };
                let dep_node = &self.graph[dep_index];
                if !dep_node.drv.outputs.contains(&dep.output) {
                    return Err(Error::UnknownOutput {
                        dependent: node.drv.name.clone(),
                        dependency: dep_node.drv.name.clone(),
                        output: dep.output.clone(),
                    });
                }
                self.graph.add_edge(index, dep_index, dep.clone());
            }
        }
        Ok(first)
    }

    /// Add one node without edges; the caller vouches that `hash` identifies `drv` and
    /// that `templates` are its. Returns the existing node if the key is already present.
    pub fn insert(
        &mut self,
        hash: Hash,
        drv: Arc<Derivation>,
        templates: Arc<Templates>,
    ) -> NodeIndex {
        if let Some(&index) = self.index.get(&hash) {
            return index;
        }
        let index = self.graph.add_node(Node {
            hash,
            drv,
            templates,
        });
        self.index.insert(hash, index);
        index
    }

    /// Add a generated derivation whose dependencies are already in the graph, with its
    /// edges. Returns its node and whether it is new (an identical derivation already in the
    /// graph is shared: same hash, same node).
    pub fn insert_generated(
        &mut self,
        hash: Hash,
        drv: Arc<Derivation>,
    ) -> Result<(NodeIndex, bool), Error> {
        if let Some(&index) = self.index.get(&hash) {
            return Ok((index, false));
        }
        let templates = templates(&drv)?;
        let mut edges = Vec::with_capacity(templates.dependencies().len());
        for dep in templates.dependencies() {
            let Some(&dep_index) = self.index.get(&dep.drv) else {
                return Err(Error::UnknownDerivation {
                    dependent: drv.name.clone(),
                    template: dep.template(),
                });
            };
            if !self.graph[dep_index].drv.outputs.contains(&dep.output) {
                return Err(Error::UnknownOutput {
                    dependent: drv.name.clone(),
                    dependency: self.graph[dep_index].drv.name.clone(),
                    output: dep.output.clone(),
                });
            }
            edges.push((dep_index, dep.clone()));
        }
        let index = self.insert(hash, drv, templates.clone());
        for (dep_index, dep) in edges {
            self.graph.add_edge(index, dep_index, dep);
        }
        Ok((index, true))
    }

    /// Make every dependent of `from` depend on `to` instead: their templates naming `from`
    /// now resolve to the same output of `to`. The hook DAO splicing uses once a generator's
    /// result derivation is in the graph.
    pub fn redirect_dependents(&mut self, from: NodeIndex, to: NodeIndex) {
        let incoming: Vec<_> = self
            .graph
            .edges_directed(from, Direction::Incoming)
            .map(|e| (e.id(), e.source(), e.weight().clone()))
            .collect();
        for (edge, source, output) in incoming {
            self.graph.remove_edge(edge);
            self.graph.add_edge(source, to, output);
        }
    }

    /// Every node, dependencies first ([`dependencies_first`]); a cycle is an error naming
    /// it.
    pub fn dependencies_first(&self) -> Result<Vec<NodeIndex>, Error> {
        dependencies_first(&self.graph).map_err(|on_cycle| {
            let names: Vec<&str> = cycle_through(&self.graph, on_cycle)
                .into_iter()
                .map(|i| self.graph[i].drv.name.as_str())
                .collect();
            Error::Cycle {
                path: names.join(" -> "),
            }
        })
    }

    /// Fail with the names along a cycle if there is one.
    pub fn check_acyclic(&self) -> Result<(), Error> {
        self.dependencies_first().map(drop)
    }

    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.graph[index]
    }

    pub fn index_of(&self, hash: &Hash) -> Option<NodeIndex> {
        self.index.get(hash).copied()
    }

    /// The requested roots, in request order, without duplicates.
    pub fn roots(&self) -> &[NodeIndex] {
        &self.roots
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.node_indices()
    }

    /// What `index` needs: per edge, the dependency node and the template naming it.
    pub fn dependencies(
        &self,
        index: NodeIndex,
    ) -> impl Iterator<Item = (NodeIndex, &OutputRef)> + '_ {
        self.graph
            .edges_directed(index, Direction::Outgoing)
            .map(|e| (e.target(), e.weight()))
    }

    /// The distinct derivations that depend on `index`.
    pub fn dependents(&self, index: NodeIndex) -> BTreeSet<NodeIndex> {
        self.graph
            .neighbors_directed(index, Direction::Incoming)
            .collect()
    }

    /// The number of distinct derivations `index` depends on.
    pub fn dependency_count(&self, index: NodeIndex) -> usize {
        self.graph
            .neighbors_directed(index, Direction::Outgoing)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// A value per node, kept by node index: a graph of 10,000 derivations is looked up
/// per node many times while it is scheduled, and indices of a graph that never loses a
/// node are dense.
#[derive(Debug)]
pub struct NodeMap<T>(Vec<Option<T>>);

impl<T> Default for NodeMap<T> {
    fn default() -> Self {
        NodeMap(Vec::new())
    }
}

impl<T> NodeMap<T> {
    pub fn with_capacity(n: usize) -> NodeMap<T> {
        NodeMap(Vec::with_capacity(n))
    }

    /// Set the value of `index`; returns the one it replaces.
    pub fn insert(&mut self, index: NodeIndex, value: T) -> Option<T> {
        let i = index.index();
        if i >= self.0.len() {
            self.0.resize_with(i + 1, || None);
        }
        self.0[i].replace(value)
    }

    pub fn get(&self, index: NodeIndex) -> Option<&T> {
        self.0.get(index.index())?.as_ref()
    }

    pub fn get_mut(&mut self, index: NodeIndex) -> Option<&mut T> {
        self.0.get_mut(index.index())?.as_mut()
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flatten()
    }
}

fn templates(drv: &Derivation) -> Result<Arc<Templates>, Error> {
    drv.templates().map(Arc::new).map_err(Error::Derivation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drv(name: &str, deps: &[(&Derivation, &str)]) -> Derivation {
        let mut d = Derivation::new(name, "/bin/sh");
        d.args = deps
            .iter()
            .map(|(dep, output)| dep.output_ref(output).template())
            .collect();
        d
    }

    #[test]
    fn shared_dependencies_are_one_node() {
        let base = drv("base", &[]);
        let left = drv("left", &[(&base, "out")]);
        let right = drv("right", &[(&base, "out")]);
        let top = drv("top", &[(&left, "out"), (&right, "out")]);
        let roots = [top.hash(), left.hash()];
        let g = BuildGraph::from_derivations([base, left, right, top], &roots).unwrap();
        assert_eq!(g.node_count(), 4);
        assert_eq!(g.roots().len(), 2);
    }

    #[test]
    fn given_templates_are_used_and_checked_like_parsed_ones() {
        let base = drv("base", &[]);
        let top = drv("top", &[(&base, "out")]);
        let known: HashMap<Hash, Arc<Derivation>> = [&base, &top]
            .into_iter()
            .map(|d| (d.hash(), Arc::new(d.clone())))
            .collect();
        let parsed: HashMap<Hash, Arc<Templates>> =
            [(top.hash(), Arc::new(top.templates().unwrap()))].into();
        let g = BuildGraph::with_templates(&known, &parsed, &[top.hash()]).unwrap();
        let t = g.index_of(&top.hash()).unwrap();
        let deps: Vec<_> = g.dependencies(t).map(|(i, r)| (i, r.clone())).collect();
        assert_eq!(
            deps,
            vec![(g.index_of(&base.hash()).unwrap(), base.output_ref("out"))]
        );
        // Given templates go through the same checks.
        let wrong_top = drv("top", &[(&base, "dev")]);
        let wrong: HashMap<Hash, Arc<Templates>> =
            [(top.hash(), Arc::new(wrong_top.templates().unwrap()))].into();
        let err = BuildGraph::with_templates(&known, &wrong, &[top.hash()]).unwrap_err();
        assert!(matches!(err, Error::UnknownOutput { .. }), "{err}");
    }

    #[test]
    fn unknown_dependency_is_named() {
        let base = drv("base", &[]);
        let top = drv("top", &[(&base, "out")]);
        let err = BuildGraph::from_derivations([top.clone()], &[top.hash()]).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownDerivation { dependent, template }
                if dependent == "top" && template.contains(&base.hash().to_string())),
            "{err}"
        );
        let err = BuildGraph::from_derivations([base.clone()], &[top.hash()]).unwrap_err();
        assert!(matches!(err, Error::UnknownRoot { .. }));
    }

    #[test]
    fn unknown_output_is_named() {
        let base = drv("base", &[]);
        let top = drv("top", &[(&base, "dev")]);
        let err = BuildGraph::from_derivations([base, top.clone()], &[top.hash()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "derivation `top` uses output `dev` of `base`, which has no such output"
        );
    }

    #[test]
    fn cycle_is_an_error_naming_it() {
        // Content hashes make real cycles impossible; keys given by a caller (stored or
        // generated derivations) are checked anyway.
        let (ka, kb) = (Hash::digest(b"a"), Hash::digest(b"b"));
        let mut a = Derivation::new("a", "/bin/sh");
        a.args = vec![
            OutputRef {
                drv: kb,
                output: "out".into(),
            }
            .template(),
        ];
        let mut b = Derivation::new("b", "/bin/sh");
        b.args = vec![
            OutputRef {
                drv: ka,
                output: "out".into(),
            }
            .template(),
        ];
        let known = HashMap::from([(ka, Arc::new(a)), (kb, Arc::new(b))]);
        let err = BuildGraph::new(&known, &[ka]).unwrap_err();
        let Error::Cycle { path } = &err else {
            panic!("{err}")
        };
        assert!(path == "a -> b -> a" || path == "b -> a -> b", "{path}");
        assert!(err.to_string().contains("dependency cycle"));
    }

    #[test]
    fn redirect_moves_dependents() {
        let base = drv("base", &[]);
        let top = drv("top", &[(&base, "out")]);
        let mut g =
            BuildGraph::from_derivations([base.clone(), top.clone()], &[top.hash()]).unwrap();
        let other = g.insert(
            Hash::digest(b"other"),
            Arc::new(drv("other", &[])),
            Arc::default(),
        );
        let b = g.index_of(&base.hash()).unwrap();
        let t = g.index_of(&top.hash()).unwrap();
        g.redirect_dependents(b, other);
        assert!(g.dependents(b).is_empty());
        let deps: Vec<_> = g.dependencies(t).collect();
        assert_eq!(deps, vec![(other, &base.output_ref("out"))]);
    }
}
