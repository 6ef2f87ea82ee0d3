//! `bramble.lock`: the content hash of every fetch of a project (DESIGN §5), and the graph
//! each derivation-as-output generated (DESIGN §6).
//!
//! ```toml
//! # bramble.lock: the content hash of every fetch. Written by bramble; commit it.
//! version = 1
//!
//! [[url]]
//! url = "mirror://debian/pool/main/b/busybox/busybox-static_…_amd64.deb"
//! unpack = "deb"
//! hash = "…"        # content hash of the result (what the store verifies)
//! sha256 = "…"      # sha256 of the downloaded file
//!
//! [[git]]
//! url = "https://example.org/repo.git"
//! rev = "<40 hex>"
//! hash = "…"
//!
//! [[dao]]
//! drv = "…"         # the DAO's derivation hash
//! name = "deps"     # for the reader
//! graph = "…"       # hash of the graph it generated (`engine::dao::Generated::graph_hash`)
//! ```
//!
//! A fetch pinned by `h1` (a Go module file, `engine::fetch::h1`) has no table: its pin,
//! checked on every download, is in the derivation itself.
//!
//! One table per fetch, keyed by what was fetched: a URL with its unpack format, or a git
//! URL with its commit. The derivation's name is not part of the key (it changes the store
//! path, not the content). Tables are written sorted by key, one field per line, so the file
//! diffs well and two machines write identical bytes.
//!
//! A DAO is keyed by its derivation hash, which the same sources and lock give on every
//! machine: a build that generates another graph for a recorded DAO fails, so a generator
//! that is not reproducible, or behaves differently elsewhere, is caught before its graph is
//! built. Entries are only added (an edited DAO gets a new hash and a new entry). A DAO
//! run by one of bramble's own tools (a Debian package set) names the tool by builder,
//! `builtin:bramble-debian@N`, not by its bytes (`engine::tool`), so its entry is the same
//! for every build of bramble.
//!
//! # Concurrency
//!
//! Several bramble processes may record fetches of the same project at once. [`update`]
//! takes an exclusive `flock` on the project directory itself (no lock file to clutter the
//! project), re-reads the file, applies the change, writes a temporary sibling, fsyncs it,
//! renames it over `bramble.lock` and fsyncs the directory. Every writer's entries survive.
//!
//! What a fetch is ([`FetchSpec`], [`Pin`], [`FetchRequest`]) is the pure description in
//! [`crate::store::fetch`]; the engine runs it and reports what it fetched in the build
//! report, which [`record`] writes here.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::project::Evaluation;
use crate::store::fetch::{
    FetchRecord, FetchRequest, FetchSpec, Format, InvalidFetch, Pin, parse_sha256, sha256_hex,
};
use crate::store::local::LocalStore;
use crate::store::template::{self, OutputRef};
use crate::store::{Derivation, Hash};

/// The lock file's name, next to `bramble.toml`.
pub const LOCK_FILE: &str = "bramble.lock";
/// The format version written and read.
pub const LOCK_VERSION: u32 = 1;

const HEADER: &str =
    "# bramble.lock: the content hash of every fetch. Written by bramble; commit it.\n";

/// Errors reading or writing the lock file.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot {op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("`{path}` has version {found}; this bramble reads version {LOCK_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("`{path}` pins `{key}` twice: on line {first} and on line {second}")]
    Duplicate {
        path: PathBuf,
        key: String,
        first: usize,
        second: usize,
    },
}

impl crate::error::Diagnose for LockError {
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }

    fn hint(&self) -> Option<String> {
        Some("fix or delete `bramble.lock`; a build records it again".into())
    }
}

/// What is recorded for one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockEntry {
    /// Content hash of the result.
    pub hash: Hash,
    /// sha256 of the downloaded file (URL fetches).
    pub sha256: Option<[u8; 32]>,
}

impl LockEntry {
    pub fn pin(&self) -> Pin {
        Pin {
            hash: Some(self.hash),
            sha256: self.sha256,
            h1: None,
        }
    }
}

/// What is recorded for one DAO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaoEntry {
    pub name: String,
    pub graph: Hash,
}

/// The parsed lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    entries: BTreeMap<FetchSpec, LockEntry>,
    daos: BTreeMap<Hash, DaoEntry>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    url: Vec<toml::Spanned<UrlEntry>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    git: Vec<toml::Spanned<GitEntry>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dao: Vec<toml::Spanned<DaoFileEntry>>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DaoFileEntry {
    drv: Hash,
    name: String,
    graph: Hash,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlEntry {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unpack: Option<String>,
    hash: Hash,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GitEntry {
    url: String,
    rev: String,
    hash: Hash,
}

impl Lock {
    /// Parse the text of a lock file (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Lock, LockError> {
        let bad = |message: String| LockError::Parse {
            path: path.to_owned(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
        if file.version != LOCK_VERSION {
            return Err(LockError::Version {
                path: path.to_owned(),
                found: file.version,
            });
        }
        let line = |span: std::ops::Range<usize>| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        };
        // The line of each key's first entry: a second one is refused, never merged.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut once = |key: String, at: usize| match seen.insert(key.clone(), at) {
            Some(first) => Err(LockError::Duplicate {
                path: path.to_owned(),
                key,
                first,
                second: at,
            }),
            None => Ok(()),
        };
        let mut lock = Lock::default();
        for e in file.url {
            let at = line(e.span());
            let e = e.into_inner();
            let unpack = e
                .unpack
                .map(|u| {
                    Format::from_name(&u).ok_or_else(|| bad(format!("unknown unpack format `{u}`")))
                })
                .transpose()?;
            let sha256 = e
                .sha256
                .map(|s| parse_sha256(&s).ok_or_else(|| bad(format!("`{s}` is not a sha256"))))
                .transpose()?;
            let spec = FetchSpec::Url { url: e.url, unpack };
            once(spec.to_string(), at)?;
            lock.entries.insert(
                spec,
                LockEntry {
                    hash: e.hash,
                    sha256,
                },
            );
        }
        for e in file.git {
            let at = line(e.span());
            let e = e.into_inner();
            let spec = FetchSpec::Git {
                url: e.url,
                rev: e.rev,
            };
            once(spec.to_string(), at)?;
            lock.entries.insert(
                spec,
                LockEntry {
                    hash: e.hash,
                    sha256: None,
                },
            );
        }
        for e in file.dao {
            let at = line(e.span());
            let e = e.into_inner();
            once(format!("dao {}", e.drv), at)?;
            lock.daos.insert(
                e.drv,
                DaoEntry {
                    name: e.name,
                    graph: e.graph,
                },
            );
        }
        Ok(lock)
    }

    /// Read `path`; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<Lock, LockError> {
        match super::read_config(path) {
            Ok(text) => Lock::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock::default()),
            Err(source) => Err(LockError::Io {
                op: "read",
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn get(&self, spec: &FetchSpec) -> Option<&LockEntry> {
        self.entries.get(spec)
    }

    /// Record `entry` for `spec`; returns whether anything changed.
    pub fn insert(&mut self, spec: FetchSpec, entry: LockEntry) -> bool {
        self.entries.insert(spec, entry) != Some(entry)
    }

    /// The graph recorded for each DAO, by derivation hash.
    pub fn dao_graphs(&self) -> std::collections::HashMap<Hash, Hash> {
        self.daos.iter().map(|(drv, e)| (*drv, e.graph)).collect()
    }

    pub fn dao(&self, drv: &Hash) -> Option<&DaoEntry> {
        self.daos.get(drv)
    }

    /// Record the graph of DAO `drv` unless one is recorded; returns whether it was added.
    pub fn insert_dao(&mut self, drv: Hash, entry: DaoEntry) -> bool {
        if self.daos.contains_key(&drv) {
            return false;
        }
        self.daos.insert(drv, entry);
        true
    }

    /// Fetch and DAO entries together.
    pub fn len(&self) -> usize {
        self.entries.len() + self.daos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's text: header, version, then the tables sorted by key.
    pub fn to_toml(&self) -> String {
        let mut file = File {
            version: LOCK_VERSION,
            ..File::default()
        };
        for (spec, e) in &self.entries {
            match spec {
                FetchSpec::Url { url, unpack } => file.url.push(spanless(UrlEntry {
                    url: url.clone(),
                    unpack: unpack.map(|f| f.name().to_owned()),
                    hash: e.hash,
                    sha256: e.sha256.as_ref().map(sha256_hex),
                })),
                FetchSpec::Git { url, rev } => file.git.push(spanless(GitEntry {
                    url: url.clone(),
                    rev: rev.clone(),
                    hash: e.hash,
                })),
            }
        }
        for (drv, e) in &self.daos {
            file.dao.push(spanless(DaoFileEntry {
                drv: *drv,
                name: e.name.clone(),
                graph: e.graph,
            }));
        }
        let body = toml::to_string(&file).expect("a lock always serialises");
        format!("{HEADER}{body}")
    }
}

/// A table to serialise (spans are only read).
fn spanless<T>(value: T) -> toml::Spanned<T> {
    toml::Spanned::new(0..0, value)
}

/// Change the lock file at `path` under an exclusive lock on its directory: re-read it,
/// apply `change`, and write it atomically if anything changed. Returns the new lock.
pub fn update(path: &Path, change: impl FnOnce(&mut Lock)) -> Result<Lock, LockError> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| LockError::Io {
            op,
            path: p,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir_fd = std::fs::File::open(dir).map_err(io("open", dir))?;
    loop {
        match rustix::fs::flock(&dir_fd, rustix::fs::FlockOperation::LockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io("lock", dir)(e.into())),
        }
    }
    let mut lock = Lock::read(path)?;
    let before = lock.clone();
    change(&mut lock);
    if lock != before || !path.exists() && !lock.is_empty() {
        // A fresh name, created with `O_CREAT | O_EXCL | O_NOFOLLOW` (never through a
        // planted file or symlink), removed again if anything fails before the rename.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{LOCK_FILE}.tmp-"))
            .permissions(std::fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(io("create a temporary file in", dir))?;
        let write = |f: &mut std::fs::File| -> std::io::Result<()> {
            f.write_all(lock.to_toml().as_bytes())?;
            f.sync_all()
        };
        let shown = tmp.path().to_owned();
        write(tmp.as_file_mut()).map_err(io("write", &shown))?;
        tmp.persist(path)
            .map_err(|e| io("replace", path)(e.error))?;
        dir_fd.sync_all().map_err(io("fsync", dir))?;
    }
    // The flock is released when `dir_fd` closes.
    Ok(lock)
}

/// What applying the lock changed in a derivation graph.
#[derive(Debug, Clone, Default)]
pub struct Pinned {
    /// Old hash → new hash of every derivation that changed (fetches that got a pin and
    /// everything depending on them).
    pub renamed: BTreeMap<Hash, Hash>,
    /// Fetches pinned neither in their derivation nor by the lock, with their derivation's
    /// hash (which is also their build key: a fetch has no inputs).
    pub unpinned: Vec<(Hash, FetchRequest)>,
}

impl Pinned {
    /// The new hash of `old`.
    pub fn rename(&self, old: Hash) -> Hash {
        self.renamed.get(&old).copied().unwrap_or(old)
    }
}

/// Write the lock's pins into the fetch derivations of `derivations` that have no content
/// hash of their own, and rewrite every dependent's templates to the new hashes, in place:
/// a derivation that does not change is neither copied nor hashed again.
///
/// The pin becomes part of the fetch derivation (as in Nix's fixed-output derivations), so
/// changing `bramble.lock` changes the build key and can never be hidden by a cached
/// realisation. A lock entry whose `sha256` disagrees with the derivation's own `sha256` is
/// stale and ignored (the fetch runs again and is re-recorded).
pub fn apply(
    derivations: &mut BTreeMap<Hash, Derivation>,
    lock: &Lock,
) -> Result<Pinned, InvalidFetch> {
    let mut out = Pinned::default();
    // The fetches first: only a pin written into a fetch renames anything, so when the lock
    // pins none of them the graph is neither ordered nor its templates parsed. A fetch
    // depends on nothing, and an `h1` pin (a Go module's, from `go.sum`) pins it alone: it
    // is checked on every download, and the lock records nothing for it.
    let mut pins: BTreeMap<Hash, Hash> = BTreeMap::new();
    for (&hash, drv) in derivations.iter() {
        let Some(req) = FetchRequest::from_derivation(drv)? else {
            continue;
        };
        if req.pin.hash.is_some() || req.pin.h1.is_some() {
            continue;
        }
        match lock.get(&req.spec) {
            Some(e) if req.pin.sha256.is_none() || req.pin.sha256 == e.sha256 => {
                pins.insert(hash, e.hash);
            }
            _ => out.unpinned.push((hash, req)),
        }
    }
    if pins.is_empty() {
        return Ok(out);
    }
    for old in dependencies_first(derivations) {
        // The content hash to write into a fetch, or `None` to rename a dependent.
        let pin = pins.get(&old).copied();
        if pin.is_none() {
            let renamed = &out.renamed;
            let stale = !renamed.is_empty()
                && derivations[&old]
                    .dependencies()
                    .unwrap_or_default()
                    .iter()
                    .any(|d| renamed.contains_key(&d.drv));
            if !stale {
                continue;
            }
        }
        let mut new = derivations
            .remove(&old)
            .expect("every visited hash is in the map");
        match pin {
            Some(hash) => {
                new.env.insert("hash".to_owned(), hash.to_string());
            }
            None => {
                let renamed = &out.renamed;
                let sub = |s: &String| {
                    template::substitute(s, |r| {
                        Some(
                            OutputRef {
                                drv: renamed.get(&r.drv).copied().unwrap_or(r.drv),
                                output: r.output.clone(),
                            }
                            .template(),
                        )
                    })
                    .unwrap_or_else(|_| s.clone())
                };
                new.builder = sub(&new.builder);
                new.args = new.args.iter().map(sub).collect();
                new.env = new.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
                new.root = new.root.as_ref().map(sub);
            }
        }
        let hash = new.hash();
        if hash != old {
            out.renamed.insert(old, hash);
        }
        derivations.insert(hash, new);
    }
    Ok(out)
}

/// Every hash of `derivations`, each after the derivations it depends on (the one
/// topological order, [`crate::store::order::dependencies_first`]).
fn dependencies_first(derivations: &BTreeMap<Hash, Derivation>) -> Vec<Hash> {
    let mut graph = petgraph::graphmap::DiGraphMap::<Hash, ()>::with_capacity(
        derivations.len(),
        derivations.len(),
    );
    for (&hash, drv) in derivations {
        graph.add_node(hash);
        for dep in drv.dependencies().unwrap_or_default() {
            if derivations.contains_key(&dep.drv) {
                graph.add_edge(hash, dep.drv, ());
            }
        }
    }
    crate::store::order::dependencies_first(&graph)
        .expect("derivation hashes form no cycle: a derivation names its dependencies' hashes")
}

/// The lock applied to one evaluation: what a build of it checks (`--locked`) and records.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    /// `bramble.lock` of the project.
    pub lock_path: PathBuf,
    /// Fetches pinned nowhere, with their derivation's hash.
    pub unpinned: Vec<(Hash, FetchRequest)>,
    /// The graph recorded for each DAO, by derivation hash.
    pub dao_graphs: Arc<HashMap<Hash, Hash>>,
}

/// Why the lock could not be applied or recorded.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Invalid(#[from] InvalidFetch),
}

impl crate::error::Diagnose for PinError {
    fn class(&self) -> crate::error::Class {
        match self {
            PinError::Lock(e) => e.class(),
            PinError::Invalid(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            PinError::Lock(e) => e.hint(),
            PinError::Invalid(e) => e.hint(),
        }
    }
}

/// Apply `<project_root>/bramble.lock` to an evaluation: fetch derivations get their pins,
/// and every derivation, root, `run()` value and test is renamed accordingly.
pub fn pin(evaluation: &mut Evaluation, project_root: &Path) -> Result<Pins, PinError> {
    let lock_path = project_root.join(LOCK_FILE);
    let lock = Lock::read(&lock_path)?;
    let pinned = apply(&mut evaluation.derivations, &lock)?;
    if !pinned.renamed.is_empty() {
        for root in &mut evaluation.roots {
            for d in &mut root.derivations {
                *d = pinned.rename(*d);
            }
            if let Some(run) = &mut root.run {
                run.derivation = pinned.rename(run.derivation);
            }
        }
        for test in &mut evaluation.tests {
            test.derivation = pinned.rename(test.derivation);
        }
    }
    Ok(Pins {
        lock_path,
        unpinned: pinned.unpinned,
        dao_graphs: Arc::new(lock.dao_graphs()),
    })
}

/// Fetches that are not pinned anywhere, refused under `--locked`.
#[derive(Debug, thiserror::Error)]
#[error("{} not pinned in `bramble.lock`: {}", if .specs.len() == 1 { "a fetch is" } else { "fetches are" }, .specs.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))]
pub struct Unpinned {
    pub specs: Vec<FetchSpec>,
}

impl crate::error::Diagnose for Unpinned {
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }

    fn hint(&self) -> Option<String> {
        Some("build once without `--locked` (and without CI=true) to record their hashes, then commit `bramble.lock`".into())
    }
}

/// Refuse unpinned fetches (for `--locked`).
pub fn require_pinned(pinned: &Pins) -> Result<(), Unpinned> {
    if pinned.unpinned.is_empty() {
        return Ok(());
    }
    Err(Unpinned {
        specs: pinned
            .unpinned
            .iter()
            .map(|(_, r)| r.spec.clone())
            .collect(),
    })
}

/// What a build added to the lock file, for the messages on stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Fetches whose hash was recorded.
    pub fetches: Vec<FetchSpec>,
    /// DAOs whose graph was recorded, by name.
    pub daos: Vec<String>,
}

/// After a build of an evaluation pinned by `pins`: record every fetch that was pinned
/// nowhere (from `fetched`, what the build downloaded, or from the store when it was
/// cached) and the graph of every DAO in `spliced` (derivation hash, name, graph hash) that
/// has none recorded. When fetches were recorded, they rename every derivation depending on
/// them, DAOs included: each DAO is recorded under the hash the next evaluation will give
/// it, computed from `graph` (the build's derivations, asked for only then) and the lock as
/// just written.
pub fn record(
    pins: &Pins,
    fetched: &[FetchRecord],
    spliced: &[(Hash, String, Hash)],
    graph: impl FnOnce() -> BTreeMap<Hash, Derivation>,
    store: &LocalStore,
) -> Result<Recorded, PinError> {
    let (fetches, lock) = record_fetches(&pins.lock_path, &pins.unpinned, fetched, store)?;
    let mut daos: Vec<(Hash, String, Hash)> = spliced
        .iter()
        .filter(|(drv, _, _)| !pins.dao_graphs.contains_key(drv))
        .cloned()
        .collect();
    if let (Some(lock), false) = (lock, daos.is_empty() || fetches.is_empty()) {
        let renamed = apply(&mut graph(), &lock)?;
        for (drv, _, _) in &mut daos {
            *drv = renamed.rename(*drv);
        }
    }
    let daos = record_daos(&pins.lock_path, &daos)?;
    Ok(Recorded { fetches, daos })
}

/// Record in the lock file at `path` every fetch of `unpinned`: from `records` (the fetches
/// that ran, with the downloaded file's sha256) or, for one that was already realised
/// (cached), from the store. Returns the specs newly recorded and, when it was written, the
/// new lock.
pub fn record_fetches(
    path: &Path,
    unpinned: &[(Hash, FetchRequest)],
    records: &[FetchRecord],
    store: &LocalStore,
) -> Result<(Vec<FetchSpec>, Option<Lock>), LockError> {
    let mut entries: Vec<(FetchSpec, LockEntry)> = Vec::new();
    for (drv, req) in unpinned {
        let ran = records.iter().rev().find(|r| r.spec == req.spec);
        let entry = match ran {
            Some(r) => Some(LockEntry {
                hash: r.hash,
                sha256: r.sha256,
            }),
            None => store
                .realisation(*drv, "out")
                .ok()
                .flatten()
                .and_then(|p| store.path_info(&p).ok().flatten())
                .map(|info| LockEntry {
                    hash: info.archive_hash,
                    sha256: req.pin.sha256,
                }),
        };
        if let Some(e) = entry {
            entries.push((req.spec.clone(), e));
        }
    }
    if entries.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut recorded = Vec::new();
    let lock = update(path, |lock| {
        for (spec, entry) in entries {
            if lock.insert(spec.clone(), entry) {
                recorded.push(spec);
            }
        }
    })?;
    Ok((recorded, Some(lock)))
}

/// Record the graph of each DAO in `daos` (derivation hash, name, graph hash) that has none
/// in the lock file at `path`. Returns the names newly recorded.
pub fn record_daos(path: &Path, daos: &[(Hash, String, Hash)]) -> Result<Vec<String>, LockError> {
    if daos.is_empty() {
        return Ok(Vec::new());
    }
    let mut recorded = Vec::new();
    update(path, |lock| {
        for (drv, name, graph) in daos {
            let entry = DaoEntry {
                name: name.clone(),
                graph: *graph,
            };
            if lock.insert_dao(*drv, entry) {
                recorded.push(name.clone());
            }
        }
    })?;
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dao_entries_round_trip_and_are_never_overwritten() {
        let mut lock = Lock::default();
        let (drv, g1, g2) = (Hash::digest("d"), Hash::digest("g1"), Hash::digest("g2"));
        let entry = |graph| DaoEntry {
            name: "deps".into(),
            graph,
        };
        assert!(lock.insert_dao(drv, entry(g1)));
        assert!(!lock.insert_dao(drv, entry(g2)));
        let text = lock.to_toml();
        assert!(
            text.contains(&format!(
                "[[dao]]\ndrv = \"{drv}\"\nname = \"deps\"\ngraph = \"{g1}\""
            )),
            "{text}"
        );
        let back = Lock::parse(&text, Path::new("bramble.lock")).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.dao_graphs()[&drv], g1);
    }

    fn url(u: &str) -> FetchSpec {
        FetchSpec::Url {
            url: u.into(),
            unpack: None,
        }
    }

    fn entry(seed: &str) -> LockEntry {
        LockEntry {
            hash: Hash::digest(seed),
            sha256: Some([1; 32]),
        }
    }

    #[test]
    fn round_trips_in_sorted_order() {
        let mut lock = Lock::default();
        lock.insert(url("https://b.example/x"), entry("b"));
        lock.insert(
            FetchSpec::Url {
                url: "https://a.example/x.deb".into(),
                unpack: Some(Format::Deb),
            },
            entry("a"),
        );
        lock.insert(
            FetchSpec::Git {
                url: "/repo".into(),
                rev: "a".repeat(40),
            },
            LockEntry {
                hash: Hash::digest("g"),
                sha256: None,
            },
        );
        let text = lock.to_toml();
        assert!(text.starts_with("# bramble.lock"));
        let a = text.find("a.example").unwrap();
        let b = text.find("b.example").unwrap();
        assert!(a < b, "{text}");
        assert!(text.contains("unpack = \"deb\""), "{text}");
        assert!(text.contains("[[git]]"), "{text}");
        let back = Lock::parse(&text, Path::new("bramble.lock")).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.to_toml(), text);
    }

    #[test]
    fn rejects_bad_files() {
        let p = Path::new("bramble.lock");
        assert!(matches!(
            Lock::parse("version = 2\n", p),
            Err(LockError::Version { found: 2, .. })
        ));
        assert!(matches!(
            Lock::parse("version = 1\nfoo = 1\n", p),
            Err(LockError::Parse { .. })
        ));
        assert!(matches!(
            Lock::parse("version = 1\n[[url]]\nurl = \"x\"\nhash = \"nope\"\n", p),
            Err(LockError::Parse { .. })
        ));
    }

    #[test]
    fn concurrent_writers_all_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..10 {
                        update(path, |lock| {
                            lock.insert(
                                url(&format!("https://x/{t}/{i}")),
                                entry(&format!("{t}{i}")),
                            );
                        })
                        .unwrap();
                    }
                });
            }
        });
        let lock = Lock::read(&path).unwrap();
        assert_eq!(lock.len(), 40);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn apply_pins_fetches_and_renames_dependents() {
        let fetch = FetchRequest {
            spec: url("https://x/busybox.deb"),
            name: "busybox".into(),
            pin: Pin::default(),
        }
        .to_derivation();
        let other = FetchRequest {
            spec: url("https://x/other"),
            name: "other".into(),
            pin: Pin::default(),
        }
        .to_derivation();
        let fh = fetch.hash();
        let mut user = Derivation::new("hello", format!("{{{{ {fh}:out }}}}/bin/busybox"));
        user.args = vec!["sh".into(), format!("{{{{{fh}:out}}}}")];
        let mut top = Derivation::new("top", "/bin/sh");
        top.env
            .insert("dep".into(), format!("{{{{ {}:out }}}}", user.hash()));
        let graph: BTreeMap<Hash, Derivation> =
            [fetch.clone(), other.clone(), user.clone(), top.clone()]
                .into_iter()
                .map(|d| (d.hash(), d))
                .collect();
        let mut lock = Lock::default();
        lock.insert(url("https://x/busybox.deb"), entry("bb"));
        let mut pinned_graph = graph.clone();
        let pinned = apply(&mut pinned_graph, &lock).unwrap();
        assert_eq!(pinned.unpinned.len(), 1);
        assert_eq!(pinned.unpinned[0].1.spec, url("https://x/other"));
        assert_eq!(pinned.unpinned[0].0, other.hash());
        let pins = Pins {
            unpinned: pinned.unpinned.clone(),
            ..Pins::default()
        };
        let err = require_pinned(&pins).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a fetch is not pinned in `bramble.lock`: `https://x/other`"
        );
        // fetch, user and top changed; other did not.
        assert_eq!(pinned.renamed.len(), 3);
        assert_eq!(pinned.rename(other.hash()), other.hash());
        let new_fetch = &pinned_graph[&pinned.rename(fh)];
        assert_eq!(new_fetch.env["hash"], Hash::digest("bb").to_string());
        let new_user = &pinned_graph[&pinned.rename(user.hash())];
        let nf = pinned.rename(fh);
        assert_eq!(new_user.builder, format!("{{{{ {nf}:out }}}}/bin/busybox"));
        assert_eq!(new_user.args[1], format!("{{{{ {nf}:out }}}}"));
        let new_top = &pinned_graph[&pinned.rename(top.hash())];
        assert!(new_top.env["dep"].contains(&pinned.rename(user.hash()).to_string()));
        // Every template of the result names a derivation of the result.
        for d in pinned_graph.values() {
            for dep in d.dependencies().unwrap() {
                assert!(pinned_graph.contains_key(&dep.drv));
            }
        }
        // An empty lock changes nothing.
        let mut same_graph = graph.clone();
        let same = apply(&mut same_graph, &Lock::default()).unwrap();
        assert!(same.renamed.is_empty());
        assert_eq!(same_graph, graph);
        assert_eq!(same.unpinned.len(), 2);
    }

    /// A Go module file pinned by `h1` is pinned by it alone: neither unpinned (so
    /// `--locked` passes) nor given the lock's content hash for its URL.
    #[test]
    fn an_h1_pin_needs_no_lock_entry() {
        let spec = url("https://x/example.com/a/@v/v1.0.0.zip");
        let fetch = FetchRequest {
            spec: spec.clone(),
            name: "a.zip".into(),
            pin: Pin::parse("h1:OA7LnY1oYP1T3IvELMcxEsinjuvi0jU+H+9bS2wl0j4=").unwrap(),
        }
        .to_derivation();
        let graph: BTreeMap<Hash, Derivation> = [(fetch.hash(), fetch.clone())].into();
        let mut lock = Lock::default();
        lock.insert(spec, entry("stale"));
        for lock in [Lock::default(), lock] {
            let pinned = apply(&mut graph.clone(), &lock).unwrap();
            assert!(pinned.unpinned.is_empty());
            assert!(pinned.renamed.is_empty());
        }
    }

    /// The first build of a DAO that reads an unpinned fetch: the fetch is recorded, which
    /// renames the DAO, and the DAO's graph is recorded under the hash the next evaluation
    /// (with the lock as written) gives it, so that evaluation finds it.
    #[test]
    fn a_dao_is_recorded_under_the_hash_its_new_pins_give_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("home")).unwrap();
        let fetch = FetchRequest {
            spec: url("https://x/manifest"),
            name: "manifest".into(),
            pin: Pin::default(),
        }
        .to_derivation();
        let mut dao = Derivation::new("gen", "/bin/sh");
        dao.dao = true;
        dao.env
            .insert("manifest".into(), format!("{{{{ {}:out }}}}", fetch.hash()));
        let evaluation = || Evaluation {
            derivations: [fetch.clone(), dao.clone()]
                .into_iter()
                .map(|d| (d.hash(), d))
                .collect(),
            roots: Vec::new(),
            tests: Vec::new(),
        };
        let mut first = evaluation();
        let pins = pin(&mut first, dir.path()).unwrap();
        assert_eq!(pins.unpinned.len(), 1);
        assert_eq!(first, evaluation(), "an empty lock changes nothing");
        let fetched = [FetchRecord {
            spec: url("https://x/manifest"),
            hash: Hash::digest("manifest content"),
            sha256: None,
        }];
        let graph = Hash::digest("the generated graph");
        let spliced = [(dao.hash(), "gen".to_owned(), graph)];
        let recorded = record(
            &pins,
            &fetched,
            &spliced,
            || first.derivations.clone(),
            &store,
        )
        .unwrap();
        assert_eq!(recorded.fetches, [url("https://x/manifest")]);
        assert_eq!(recorded.daos, ["gen"]);
        // The next evaluation pins the fetch, renames the DAO, and finds its graph.
        let mut second = evaluation();
        let pins = pin(&mut second, dir.path()).unwrap();
        assert!(pins.unpinned.is_empty());
        let renamed = second
            .derivations
            .values()
            .find(|d| d.dao)
            .map(Derivation::hash)
            .unwrap();
        assert_ne!(renamed, dao.hash());
        assert_eq!(*pins.dao_graphs, HashMap::from([(renamed, graph)]));
        // Recording again adds nothing.
        let again = record(
            &pins,
            &[],
            &[(renamed, "gen".to_owned(), graph)],
            BTreeMap::new,
            &store,
        );
        assert_eq!(again.unwrap(), Recorded::default());
    }

    #[test]
    fn records_what_ran_and_what_was_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("home")).unwrap();
        let lock_path = dir.path().join(LOCK_FILE);
        let ran = FetchRequest {
            spec: url("https://x/ran"),
            name: "ran".into(),
            pin: Pin::default(),
        }
        .to_derivation();
        let cached = FetchRequest {
            spec: url("https://x/cached"),
            name: "cached".into(),
            pin: Pin::default(),
        }
        .to_derivation();
        // `cached` was realised by an earlier build.
        std::fs::write(dir.path().join("content"), "cached\n").unwrap();
        let path = store
            .add_dir(&dir.path().join("content"), "cached")
            .unwrap();
        store
            .register_realisation(cached.hash(), "out", &path)
            .unwrap();
        let graph: BTreeMap<Hash, Derivation> =
            [ran, cached].into_iter().map(|d| (d.hash(), d)).collect();
        let pinned = apply(&mut graph.clone(), &Lock::default()).unwrap();
        let records = [FetchRecord {
            spec: url("https://x/ran"),
            hash: Hash::digest("ran"),
            sha256: Some([9; 32]),
        }];
        let (recorded, written) =
            record_fetches(&lock_path, &pinned.unpinned, &records, &store).unwrap();
        assert_eq!(recorded.len(), 2);
        assert_eq!(
            written.unwrap().to_toml(),
            Lock::read(&lock_path).unwrap().to_toml()
        );
        let lock = Lock::read(&lock_path).unwrap();
        assert_eq!(
            lock.get(&url("https://x/ran")).unwrap().hash,
            Hash::digest("ran")
        );
        let info = store.path_info(&path).unwrap().unwrap();
        assert_eq!(
            lock.get(&url("https://x/cached")).unwrap().hash,
            info.archive_hash
        );
        // Applying the lock now pins both; recording again changes nothing.
        let again = apply(&mut graph.clone(), &lock).unwrap();
        assert!(again.unpinned.is_empty());
        assert_eq!(
            record_fetches(&lock_path, &again.unpinned, &records, &store).unwrap(),
            (Vec::new(), None)
        );
    }

    /// The temporary file used to be `.bramble.lock.tmp-<pid>`, opened with `O_TRUNC` and
    /// followed if it was a symlink: a planted one overwrote its target.
    #[test]
    fn writes_never_follow_a_planted_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let planted = dir
            .path()
            .join(format!(".{LOCK_FILE}.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let path = dir.path().join(LOCK_FILE);
        update(&path, |l| {
            l.insert(url("http://127.0.0.1/a"), entry("a"));
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(
            Lock::read(&path)
                .unwrap()
                .get(&url("http://127.0.0.1/a"))
                .is_some()
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-") && *n != planted.file_name().unwrap().to_str().unwrap())
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn duplicated_entries_are_refused_with_both_lines() {
        let mut lock = Lock::default();
        lock.insert(url("http://127.0.0.1/a"), entry("a"));
        let one = lock.to_toml();
        let table = &one[one.find("[[url]]").unwrap()..];
        let mut other = Lock::default();
        other.insert(url("http://127.0.0.1/a"), entry("b"));
        let other = other.to_toml();
        let twice = format!("{one}\n{}", &other[other.find("[[url]]").unwrap()..]);
        let err = Lock::parse(&twice, Path::new("bramble.lock")).unwrap_err();
        let first = one[..one.find("[[url]]").unwrap()].matches('\n').count() + 1;
        let second = first + table.matches('\n').count() + 1;
        assert_eq!(
            err.to_string(),
            format!(
                "`bramble.lock` pins `http://127.0.0.1/a` twice: on line {first} and on line {second}"
            )
        );
    }

    #[test]
    fn unchanged_locks_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        update(&path, |_| {}).unwrap();
        assert!(!path.exists(), "an empty lock is not created");
        update(&path, |l| {
            l.insert(url("https://x/1"), entry("1"));
        })
        .unwrap();
        let before = std::fs::metadata(&path).unwrap();
        update(&path, |l| {
            l.insert(url("https://x/1"), entry("1"));
        })
        .unwrap();
        let after = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ino(), after.ino());
    }
}
