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
//! The key type is the fetcher's own [`FetchSpec`], so `project` uses `engine::fetch` for
//! that one type (a deviation from the layering in DESIGN §1, which keeps `build` free of
//! `project`, not the reverse).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::engine::fetch::{
    FetchError, FetchRecord, FetchRequest, FetchSpec, Format, Pin, parse_sha256, sha256_hex,
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

/// A derivation graph with the lock's pins written into its fetch derivations.
#[derive(Debug, Clone, Default)]
pub struct Pinned {
    pub derivations: BTreeMap<Hash, Derivation>,
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
/// hash of their own, and rewrite every dependent's templates to the new hashes.
///
/// The pin becomes part of the fetch derivation (as in Nix's fixed-output derivations), so
/// changing `bramble.lock` changes the build key and can never be hidden by a cached
/// realisation. A lock entry whose `sha256` disagrees with the derivation's own `sha256` is
/// stale and ignored (the fetch runs again and is re-recorded).
pub fn apply(derivations: &BTreeMap<Hash, Derivation>, lock: &Lock) -> Result<Pinned, FetchError> {
    // Dependencies first (an iterative DFS; the graph is acyclic by construction of hashes).
    let mut order = Vec::with_capacity(derivations.len());
    let mut state: BTreeMap<Hash, bool> = BTreeMap::new(); // false: visiting, true: done
    for &start in derivations.keys() {
        let mut stack = vec![(start, false)];
        while let Some((h, expanded)) = stack.pop() {
            if expanded {
                state.insert(h, true);
                order.push(h);
                continue;
            }
            if state.contains_key(&h) {
                continue;
            }
            state.insert(h, false);
            stack.push((h, true));
            if let Some(drv) = derivations.get(&h) {
                for dep in drv.dependencies().unwrap_or_default() {
                    if derivations.contains_key(&dep.drv) && !state.contains_key(&dep.drv) {
                        stack.push((dep.drv, false));
                    }
                }
            }
        }
    }
    let mut out = Pinned::default();
    for old in order {
        let drv = &derivations[&old];
        let mut new = drv.clone();
        let mut unpinned = None;
        if let Some(req) = FetchRequest::from_derivation(drv)? {
            // An `h1` pin (a Go module's, from `go.sum`) pins the fetch on its own: it is
            // checked on every download, and the lock records nothing for it.
            if req.pin.hash.is_none() && req.pin.h1.is_none() {
                match lock.get(&req.spec) {
                    Some(e) if req.pin.sha256.is_none() || req.pin.sha256 == e.sha256 => {
                        new.env.insert("hash".to_owned(), e.hash.to_string());
                    }
                    _ => unpinned = Some(req),
                }
            }
        } else if drv
            .dependencies()
            .unwrap_or_default()
            .iter()
            .any(|d| out.renamed.contains_key(&d.drv))
        {
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
            new.builder = sub(&drv.builder);
            new.args = drv.args.iter().map(sub).collect();
            new.env = drv.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
            new.root = drv.root.as_ref().map(sub);
        }
        let hash = new.hash();
        if hash != old {
            out.renamed.insert(old, hash);
        }
        if let Some(req) = unpinned {
            out.unpinned.push((hash, req));
        }
        out.derivations.insert(hash, new);
    }
    Ok(out)
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
pub fn require_pinned(pinned: &Pinned) -> Result<(), Unpinned> {
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

/// Record in the lock file at `path` every fetch of `pinned` that was not pinned: from
/// `records` (the fetches that ran, with the downloaded file's sha256) or, for one that was
/// already realised (cached), from the store. Returns the specs newly recorded, for the
/// `recorded hash of <url> in bramble.lock` messages.
pub fn record(
    path: &Path,
    pinned: &Pinned,
    records: &[FetchRecord],
    store: &LocalStore,
) -> Result<Vec<FetchSpec>, LockError> {
    let mut entries: Vec<(FetchSpec, LockEntry)> = Vec::new();
    for (drv, req) in &pinned.unpinned {
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
        return Ok(Vec::new());
    }
    let mut recorded = Vec::new();
    update(path, |lock| {
        for (spec, entry) in entries {
            if lock.insert(spec.clone(), entry) {
                recorded.push(spec);
            }
        }
    })?;
    Ok(recorded)
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
        let pinned = apply(&graph, &lock).unwrap();
        assert_eq!(pinned.unpinned.len(), 1);
        assert_eq!(pinned.unpinned[0].1.spec, url("https://x/other"));
        assert_eq!(pinned.unpinned[0].0, other.hash());
        let err = require_pinned(&pinned).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a fetch is not pinned in `bramble.lock`: `https://x/other`"
        );
        // fetch, user and top changed; other did not.
        assert_eq!(pinned.renamed.len(), 3);
        assert_eq!(pinned.rename(other.hash()), other.hash());
        let new_fetch = &pinned.derivations[&pinned.rename(fh)];
        assert_eq!(new_fetch.env["hash"], Hash::digest("bb").to_string());
        let new_user = &pinned.derivations[&pinned.rename(user.hash())];
        let nf = pinned.rename(fh);
        assert_eq!(new_user.builder, format!("{{{{ {nf}:out }}}}/bin/busybox"));
        assert_eq!(new_user.args[1], format!("{{{{ {nf}:out }}}}"));
        let new_top = &pinned.derivations[&pinned.rename(top.hash())];
        assert!(new_top.env["dep"].contains(&pinned.rename(user.hash()).to_string()));
        // Every template of the result names a derivation of the result.
        for d in pinned.derivations.values() {
            for dep in d.dependencies().unwrap() {
                assert!(pinned.derivations.contains_key(&dep.drv));
            }
        }
        // An empty lock changes nothing.
        let same = apply(&graph, &Lock::default()).unwrap();
        assert!(same.renamed.is_empty());
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
            let pinned = apply(&graph, &lock).unwrap();
            assert!(pinned.unpinned.is_empty());
            assert!(pinned.renamed.is_empty());
            assert!(require_pinned(&pinned).is_ok());
        }
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
        let pinned = apply(&graph, &Lock::default()).unwrap();
        let records = [FetchRecord {
            spec: url("https://x/ran"),
            hash: Hash::digest("ran"),
            sha256: Some([9; 32]),
        }];
        let recorded = record(&lock_path, &pinned, &records, &store).unwrap();
        assert_eq!(recorded.len(), 2);
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
        let again = apply(&graph, &lock).unwrap();
        assert!(again.unpinned.is_empty());
        assert!(
            record(&lock_path, &again, &records, &store)
                .unwrap()
                .is_empty()
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
