//! Derivations as output (DAO, DESIGN §6): the document a DAO writes, and its validation.
//!
//! A derivation declared with `dao=True` runs like any sandboxed build (no network). Its
//! single output `out` is either the document itself (a file) or a directory holding the
//! document as `derivations.json` next to anything else the generated steps may use. When the
//! DAO is realised (built now, or found in the store) the scheduler reads the document,
//! validates it here, and splices the derivations into the running graph: every dependent of
//! the DAO then waits for the document's `result`, whose `out` stands in for the DAO's `out`.
//!
//! # The document, version 1
//!
//! ```json
//! {
//!   "version": 1,
//!   "result": "x",
//!   "derivations": {
//!     "y": {"name": "y", "builder": "/bramble/store/<hash>-busybox/bin/sh",
//!           "args": ["-c", "echo y > $out"]},
//!     "x": {"name": "x", "builder": "/bramble/store/<hash>-busybox/bin/sh",
//!           "args": ["-c", "cat {{ y:out }} > $out"], "env": {"A": "1"}},
//!     "src": {"name": "src.tar.gz", "builder": "builtin:fetch_url",
//!             "env": {"url": "https://example.org/src.tar.gz", "sha256": "<64 hex>"}}
//!   }
//! }
//! ```
//!
//! - `derivations` maps document-local ids (1 to 64 characters of `A-Za-z0-9_.-`, unique) to
//!   derivations with the fields of [`Derivation`] except `sources`: `name` and `builder`
//!   are required; `args` (default `[]`), `env` (`{}`), `outputs` (`["out"]`), `platform`
//!   (the DAO's) and `dao` (`false`) are optional. Unknown fields are errors.
//! - `result` is the id whose `out` replaces the DAO's `out`. It has exactly the one output
//!   `out`, as the DAO has.
//! - Inside builder, args and env values, `{{ <id>:<output> }}` names an output of another
//!   derivation of the same document (the grammar of store templates, with an id in place of
//!   the hash). Bramble replaces it by the real template once that derivation's hash is
//!   known, so generated derivations are ordinary derivations with content hashes: one equal
//!   to a derivation already in the graph or the store is shared, not rebuilt.
//!
//! # Rules (hermeticity)
//!
//! - Generated derivations carry **no sources** (`sources` is refused by name).
//! - They refer to nothing but (a) other derivations of the document, through templates;
//!   (b) store objects named literally as `/bramble/store/<hash>-<name>` that are in the
//!   DAO's input closure or are the DAO's own output. Such a path becomes an input of the
//!   generated derivation (mounted in its sandbox); any other store path is an error.
//! - Fetches (`builtin:fetch_url`, `builtin:fetch_git`) must carry their pin (`hash`,
//!   `sha256` or `h1`): a generated fetch is pinned nowhere else. They are the only generated
//!   nodes that reach the network. `builtin:bramble-debian@N` and `builtin:bramble-go@N`
//!   (bramble tools, see [`super::tool`]) run in the sandbox like any builder. Other `builtin:` builders are
//!   refused.
//! - No cycles; at most [`Limits::max_bytes`] of JSON and [`Limits::max_derivations`]
//!   derivations. A generated derivation may itself be a DAO while the nesting level stays
//!   within [`Limits::max_depth`] (a DAO written in Starlark is level 1).
//!
//! Every error names the DAO and, where there is one, the offending entry.
//!
//! # The graph hash
//!
//! What a DAO generated is summarised by [`Generated::graph_hash`]: the hash of the result's
//! derivation hash and the sorted set of generated derivation hashes. `bramble.lock` records
//! it per DAO so another machine, or `--locked`, detects a generator that produced a
//! different graph.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Deserialize;

use crate::store::order::{cycle_through, dependencies_first};
use crate::store::template;
use crate::store::{Derivation, DerivationError, Hash, STORE_DIR, StorePath};

use super::fetch::{FETCH_GIT, FETCH_URL, FetchRequest};
use super::tool::{DEBIAN_BUILDER, GO_BUILDER};

/// The file a directory-shaped DAO output holds its document in.
pub const DOCUMENT_FILE: &str = "derivations.json";
/// The document version this bramble reads.
pub const DOCUMENT_VERSION: u32 = 1;
/// Longest document-local id.
pub const MAX_ID_LEN: usize = 64;

/// Bounds on what one DAO may generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, in bytes.
    pub max_bytes: usize,
    /// Most derivations in one document.
    pub max_derivations: usize,
    /// Deepest DAO nesting level (a DAO written in Starlark is level 1).
    pub max_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 20,
            max_derivations: 100_000,
            max_depth: 4,
        }
    }
}

/// The DAO whose document is being validated.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub name: &'a str,
    /// Its derivation hash (a generated derivation may not be the DAO itself).
    pub hash: Hash,
    /// The default platform of generated derivations.
    pub platform: &'a str,
    /// Its nesting level: 1 for a DAO written in Starlark, n + 1 for one generated by a DAO
    /// of level n.
    pub level: u32,
    /// The store paths generated derivations may name literally: the DAO's input closure
    /// and its own output.
    pub allowed: &'a BTreeSet<StorePath>,
}

/// One generated derivation, ready for the graph.
#[derive(Debug, Clone)]
pub struct GeneratedDrv {
    /// Its id in the document.
    pub id: String,
    pub hash: Hash,
    pub drv: Arc<Derivation>,
    /// Store paths it names literally (inputs of its sandbox besides its dependencies).
    pub inputs: BTreeSet<StorePath>,
}

/// A validated document.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Dependencies before dependents; one entry per distinct derivation.
    pub derivations: Vec<GeneratedDrv>,
    /// The hash of the result derivation.
    pub result: Hash,
    /// See the module doc.
    pub graph_hash: Hash,
}

/// Why a DAO's document was refused: the DAO, the entry if one is at fault, and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaoError {
    pub dao: String,
    pub entry: Option<String>,
    pub problem: Problem,
}

impl fmt::Display for DaoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DAO `{}`", self.dao)?;
        if let Some(entry) = &self.entry {
            write!(f, ", derivation `{entry}`")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for DaoError {}

impl crate::error::Diagnose for DaoError {
    /// A DAO's document is written by the user's generator.
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }

    /// Advice for the user, when there is some beyond the message.
    fn hint(&self) -> Option<String> {
        match &self.problem {
            Problem::Sources => Some(
                "generated derivations cannot carry files: put them in the DAO's output and \
                 name them as /bramble/store/<hash>-<name>/... paths"
                    .into(),
            ),
            Problem::ForeignPath { .. } => Some(
                "a generated derivation may name only store paths of the DAO's inputs or its \
                 own output; give the DAO the derivation as an input"
                    .into(),
            ),
            Problem::Unpinned => Some(
                "add `hash` (the content hash `bramble fetch` prints), `sha256` or `h1` to the fetch"
                    .into(),
            ),
            Problem::TooDeep { .. } => Some(
                "a generated DAO adds a level; raise the limit with `--max-dao-depth` if the \
                 nesting is intended"
                    .into(),
            ),
            Problem::GraphChanged { .. } => Some(
                "the generator is not reproducible, or `bramble.lock` is stale: compare with \
                 `bramble build --check`, or delete the DAO's `[[dao]]` entry to record the new \
                 graph"
                    .into(),
            ),
            Problem::NotRecorded { .. } => Some(
                "build once without `--locked` (and without CI=true) to record it, then commit \
                 `bramble.lock`"
                    .into(),
            ),
            Problem::Document(_) => Some(format!(
                "a DAO writes its document to `$out` (a file) or `$out/{DOCUMENT_FILE}`"
            )),
            _ => None,
        }
    }
}

/// What is wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("cannot read the document: {0}")]
    Document(String),
    #[error("the document is {bytes} bytes, over the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("malformed document: {0}")]
    Json(String),
    #[error(
        "document version {0} is not supported (this bramble reads version {DOCUMENT_VERSION})"
    )]
    Version(u32),
    #[error("the document has no derivations")]
    Empty,
    #[error("the document has {count} derivations, over the limit of {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("`{0}` is not a valid id (1 to 64 characters of `A-Za-z0-9_.-`)")]
    BadId(String),
    #[error("the result `{0}` is not a derivation of the document")]
    UnknownResult(String),
    #[error("the result must have exactly one output, `out` (it has {0})")]
    ResultOutputs(String),
    #[error("generated derivations carry no sources")]
    Sources,
    #[error("{0}")]
    Derivation(String),
    #[error("malformed template at byte {offset} of `{text}`: expected `{{{{ <id>:<output> }}}}`")]
    Template { text: String, offset: usize },
    #[error("`{template}` names no derivation of the document")]
    UnknownReference { template: String },
    #[error("`{template}` names output `{output}`, which `{id}` does not have")]
    UnknownOutput {
        template: String,
        id: String,
        output: String,
    },
    #[error("`{path}` is not a store path")]
    MalformedPath { path: String },
    #[error("`{path}` is neither in the DAO's input closure nor its own output")]
    ForeignPath { path: String },
    #[error(
        "unknown builtin builder `{0}` (the builtins are `{FETCH_URL}`, `{FETCH_GIT}`, `{DEBIAN_BUILDER}` and `{GO_BUILDER}`)"
    )]
    UnknownBuiltin(String),
    #[error("{0}")]
    Fetch(String),
    #[error("the fetch is not pinned: a generated fetch needs `hash`, `sha256` or `h1`")]
    Unpinned,
    #[error("dependency cycle: {0}")]
    Cycle(String),
    #[error("is a DAO of level {level}, over the nesting limit of {limit}")]
    TooDeep { level: u32, limit: u32 },
    #[error("is the DAO itself")]
    IsTheDao,
    #[error("generated graph `{generated}`, but `bramble.lock` records `{recorded}` for this DAO")]
    GraphChanged { recorded: Hash, generated: Hash },
    #[error("its graph `{generated}` is not recorded in `bramble.lock` (--locked)")]
    NotRecorded { generated: Hash },
}

impl Problem {
    fn at(self, origin: &Origin<'_>, entry: Option<&str>) -> DaoError {
        DaoError {
            dao: origin.name.to_owned(),
            entry: entry.map(str::to_owned),
            problem: self,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    result: String,
    derivations: UniqueMap,
}

/// A JSON object whose keys must be unique (serde's maps keep the last duplicate silently).
#[derive(Debug)]
struct UniqueMap(Vec<(String, Entry)>);

impl<'de> Deserialize<'de> for UniqueMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of derivations keyed by id")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueMap, A::Error> {
                let mut seen = BTreeSet::new();
                let mut entries = Vec::new();
                while let Some(id) = map.next_key::<String>()? {
                    if !seen.insert(id.clone()) {
                        return Err(serde::de::Error::custom(format!("id `{id}` appears twice")));
                    }
                    entries.push((id, map.next_value()?));
                }
                Ok(UniqueMap(entries))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// One derivation of the document, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    builder: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    outputs: Option<Vec<String>>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    dao: bool,
    /// Resource limits, as in a derivation's JSON.
    #[serde(default)]
    limits: crate::store::BuildLimits,
    /// Only to refuse it by name.
    #[serde(default)]
    sources: Option<serde_json::Value>,
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(is_id_byte)
}

/// Every document template in `text` (the store template grammar with an id as the key).
fn find_local(text: &str) -> Result<Vec<template::Found<'_>>, Problem> {
    let id_key = |rest: &[u8]| Some(rest.iter().take_while(|&&b| is_id_byte(b)).count());
    let found = template::scan(text, id_key).map_err(|e| match e {
        template::TemplateError::Unterminated { offset } => Problem::Template {
            text: text.chars().take(200).collect(),
            offset,
        },
        other => Problem::Derivation(other.to_string()),
    })?;
    match found.iter().find(|t| t.key.len() > MAX_ID_LEN) {
        Some(t) => Err(Problem::BadId(t.key.chars().take(80).collect())),
        None => Ok(found),
    }
}

/// Store paths named literally in `text` (`/bramble/store/<hash>-<name>`).
fn literal_paths(text: &str, into: &mut BTreeSet<StorePath>) -> Result<(), Problem> {
    let mut from = 0;
    while let Some(pos) = text[from..].find(STORE_DIR) {
        let start = from + pos + STORE_DIR.len();
        let Some(start) = text[start..].starts_with('/').then_some(start + 1) else {
            from = start;
            continue;
        };
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c)))
            .map_or(text.len(), |n| start + n);
        let base = &text[start..end];
        let path: StorePath = base.parse().map_err(|_| Problem::MalformedPath {
            path: format!("{STORE_DIR}/{}", base.chars().take(240).collect::<String>()),
        })?;
        into.insert(path);
        from = end;
    }
    Ok(())
}

/// Parse and validate a DAO's document (at most `limits.max_bytes`; pass up to one byte more
/// to have an oversized document reported as such) and compute the generated derivations.
pub fn validate(text: &[u8], origin: &Origin<'_>, limits: &Limits) -> Result<Generated, DaoError> {
    let top = |p: Problem| p.at(origin, None);
    if text.len() > limits.max_bytes {
        return Err(top(Problem::TooLarge {
            bytes: text.len(),
            limit: limits.max_bytes,
        }));
    }
    let doc: Document =
        serde_json::from_slice(text).map_err(|e| top(Problem::Json(e.to_string())))?;
    if doc.version != DOCUMENT_VERSION {
        return Err(top(Problem::Version(doc.version)));
    }
    let entries = doc.derivations.0;
    if entries.is_empty() {
        return Err(top(Problem::Empty));
    }
    if entries.len() > limits.max_derivations {
        return Err(top(Problem::TooMany {
            count: entries.len(),
            limit: limits.max_derivations,
        }));
    }
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (i, (id, _)) in entries.iter().enumerate() {
        if !valid_id(id) {
            return Err(top(Problem::BadId(id.chars().take(80).collect())));
        }
        ids.insert(id.as_str(), i);
    }
    let Some(&result_index) = ids.get(doc.result.as_str()) else {
        return Err(top(Problem::UnknownResult(
            doc.result.chars().take(80).collect(),
        )));
    };

    // Check every entry on its own and find its dependencies (indices into `entries`).
    let mut deps: Vec<BTreeSet<usize>> = Vec::with_capacity(entries.len());
    let mut inputs: Vec<BTreeSet<StorePath>> = Vec::with_capacity(entries.len());
    for (id, entry) in &entries {
        let at = |p: Problem| p.at(origin, Some(id));
        if entry.sources.is_some() {
            return Err(at(Problem::Sources));
        }
        let outputs = entry.outputs.as_deref().unwrap_or(&[]);
        if id == &doc.result && entry.outputs.is_some() && outputs != ["out"] {
            let list = outputs.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>();
            return Err(at(Problem::ResultOutputs(list.join(", "))));
        }
        if entry.dao && origin.level + 1 > limits.max_depth {
            return Err(at(Problem::TooDeep {
                level: origin.level + 1,
                limit: limits.max_depth,
            }));
        }
        if let Some(builtin) = entry.builder.strip_prefix("builtin:")
            && entry.builder != FETCH_URL
            && entry.builder != FETCH_GIT
            && entry.builder != DEBIAN_BUILDER
            && entry.builder != GO_BUILDER
        {
            return Err(at(Problem::UnknownBuiltin(format!("builtin:{builtin}"))));
        }
        let mut mine = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for text in entry_strings(entry) {
            for r in find_local(text).map_err(at)? {
                let template = &text[r.range.clone()];
                let Some(&target) = ids.get(r.key) else {
                    return Err(at(Problem::UnknownReference {
                        template: template.to_owned(),
                    }));
                };
                let target_outputs = entries[target].1.outputs.as_deref();
                let has = match target_outputs {
                    None => r.output == "out",
                    Some(list) => list.iter().any(|o| o == r.output),
                };
                if !has {
                    return Err(at(Problem::UnknownOutput {
                        template: template.to_owned(),
                        id: r.key.to_owned(),
                        output: r.output.to_owned(),
                    }));
                }
                mine.insert(target);
            }
            literal_paths(text, &mut paths).map_err(at)?;
        }
        if let Some(path) = paths.iter().find(|p| !origin.allowed.contains(p)) {
            return Err(at(Problem::ForeignPath {
                path: path.in_store_dir(),
            }));
        }
        deps.push(mine);
        inputs.push(paths);
    }

    let order = topological(&entries, &deps).map_err(top)?;

    // Compute real hashes, dependencies first.
    let mut hashes: Vec<Option<Hash>> = vec![None; entries.len()];
    let mut derivations = Vec::with_capacity(entries.len());
    let mut seen = BTreeSet::new();
    for i in order {
        let (id, entry) = &entries[i];
        let at = |p: Problem| p.at(origin, Some(id));
        let sub = |text: &str| -> Result<String, DaoError> {
            let refs = find_local(text).map_err(at)?;
            if refs.is_empty() {
                return Ok(text.to_owned());
            }
            let mut out = String::with_capacity(text.len() + 16 * refs.len());
            let mut last = 0;
            for r in refs {
                out.push_str(&text[last..r.range.start]);
                let hash = hashes[ids[r.key]].expect("dependencies come first");
                out.push_str(&format!("{{{{ {hash}:{} }}}}", r.output));
                last = r.range.end;
            }
            out.push_str(&text[last..]);
            Ok(out)
        };
        let drv = Derivation {
            args: entry
                .args
                .iter()
                .map(|a| sub(a))
                .collect::<Result<_, _>>()?,
            builder: sub(&entry.builder)?,
            dao: entry.dao,
            env: entry
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), sub(v)?)))
                .collect::<Result<_, DaoError>>()?,
            limits: entry.limits,
            name: entry.name.clone(),
            outputs: entry.outputs.clone().unwrap_or_else(|| vec!["out".into()]),
            platform: entry
                .platform
                .clone()
                .unwrap_or_else(|| origin.platform.to_owned()),
            root: None,
            sources: None,
        };
        check_derivation(&drv).map_err(at)?;
        let hash = drv.hash();
        if hash == origin.hash {
            return Err(at(Problem::IsTheDao));
        }
        hashes[i] = Some(hash);
        if seen.insert(hash) {
            derivations.push(GeneratedDrv {
                id: id.clone(),
                hash,
                drv: Arc::new(drv),
                inputs: std::mem::take(&mut inputs[i]),
            });
        }
    }
    let result = hashes[result_index].expect("every entry was hashed");
    let mut fields: Vec<&[u8]> = vec![result.as_bytes()];
    fields.extend(seen.iter().map(|h| &h.as_bytes()[..]));
    let graph_hash = Hash::of_fields("bramble-dao-graph-v1", &fields);
    Ok(Generated {
        derivations,
        result,
        graph_hash,
    })
}

fn entry_strings(entry: &Entry) -> impl Iterator<Item = &str> {
    std::iter::once(entry.builder.as_str())
        .chain(entry.args.iter().map(String::as_str))
        .chain(entry.env.values().map(String::as_str))
}

/// The checks of an ordinary derivation, plus those of generated fetches.
fn check_derivation(drv: &Derivation) -> Result<(), Problem> {
    drv.validate().map_err(|e| match e {
        DerivationError::Invalid { problem, .. } => Problem::Derivation(problem),
        DerivationError::Name { problem, .. } => Problem::Derivation(problem.to_string()),
        DerivationError::Template { problem, .. } => Problem::Derivation(problem.to_string()),
        DerivationError::Json(m) => Problem::Derivation(m),
    })?;
    match FetchRequest::from_derivation(drv) {
        Ok(None) => Ok(()),
        Ok(Some(fetch)) if fetch.pin.is_empty() => Err(Problem::Unpinned),
        Ok(Some(_)) => Ok(()),
        Err(e) => Err(Problem::Fetch(e.to_string())),
    }
}

/// Entry indices, dependencies first ([`dependencies_first`]); a cycle is an error naming
/// its ids.
fn topological(
    entries: &[(String, Entry)],
    deps: &[BTreeSet<usize>],
) -> Result<Vec<usize>, Problem> {
    let mut graph = DiGraph::<(), (), usize>::with_capacity(entries.len(), deps.len());
    for _ in entries {
        graph.add_node(());
    }
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            graph.add_edge(NodeIndex::new(i), NodeIndex::new(d), ());
        }
    }
    match dependencies_first(&graph) {
        Ok(order) => Ok(order.into_iter().map(NodeIndex::index).collect()),
        Err(on_cycle) => {
            let ids: Vec<&str> = cycle_through(&graph, on_cycle)
                .into_iter()
                .map(|i| entries[i.index()].0.as_str())
                .collect();
            Err(Problem::Cycle(ids.join(" -> ")))
        }
    }
}

#[cfg(test)]
mod tests;
