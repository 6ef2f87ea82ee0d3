//! Fetchers: the only builds that touch the network (DESIGN §5).
//!
//! Two builtin builders, named by a derivation's `builder`:
//!
//! - `builtin:fetch_url` — env `url` (http, https or `mirror://NAME/path`, see [`mirror`]),
//!   optional `unpack` (a [`Format`] name:
//!   `tar.gz`, `tar.xz`, `tar.bz2`, `tar.zst`, `tar`, `zip`, `deb`), optional pins `hash`,
//!   `sha256` and `h1`;
//! - `builtin:fetch_git` — env `url` (http(s), a local absolute path or `file://`), `rev` (a
//!   full commit hash), optional pin `hash`.
//!
//! A fetch derivation has no args, no sources, no templates and the single output `out`: it
//! depends on nothing but the outside world, which is why its result must be pinned.
//! The engine runs it in the main process; every other builder runs in a sandbox with an
//! empty network namespace.
//!
//! # What is pinned
//!
//! The pin is the **content hash of the result**: the [`Hash`] of the store archive of the
//! unpacked tree (or of the single downloaded file), the same hash `bramble store verify`
//! checks — like Nix's recursive fixed-output hash. Because a fetched object has no
//! references, its store path is `content_address(name, hash)`: with a pin, bramble knows
//! the output path before downloading anything and skips the download when that path is
//! already valid. The hash also checks the result of unpacking (a decompressor or extractor
//! that behaved differently would be caught), which a hash of the downloaded file alone
//! would not.
//!
//! Upstreams publish the sha256 of their files, so `sha256` (64 hex digits, also written
//! `sha256:<hex>`) is accepted as a pin too: the download is checked against it before
//! unpacking. Both may be given; `bramble.lock` records both for a URL.
//!
//! A Go module's `.zip` or `.mod` may be pinned by `h1` instead ([`h1`]): Go's module hash,
//! as `go.sum` records it, checked on the download (a zip's entries, after a strict check of
//! their names; a `.mod` as `go.mod`) before anything is unpacked or stored. It covers the
//! files, not the zip's own bytes (timestamps, order), so the stored object is the zip as
//! first downloaded; such a fetch is pinned by `h1` alone and `bramble.lock` records nothing
//! for it (it is how the Go module DAO, `crate::golang`, pins what `go.sum` lists).
//!
//! A result that differs from a pin is an error naming the URL, the expected and the actual
//! hash, and nothing is stored.
//!
//! # How a fetch runs in a build
//!
//! 1. The evaluation gets `bramble.lock` applied ([`crate::project::lock::pin`]): a
//!    fetch derivation without a content hash gets the lock's, which renames it and every
//!    derivation depending on it. The pin is thus part of the build key: editing the lock
//!    can never be hidden by a cached realisation. `--locked` (or `CI=true`) refuses a fetch
//!    pinned nowhere.
//! 2. The engine's executor is [`executor::WithFetchers`]: fetch derivations run here, in the
//!    main process, with the network; every other derivation goes to the sandbox, which has
//!    an empty network namespace. With a pinned path already in the store nothing is
//!    downloaded.
//! 3. After the build, [`crate::project::lock::record`] records in `bramble.lock` every fetch
//!    that was pinned nowhere (from the build report's [`crate::engine::BuildReport::fetches`],
//!    or from the store's realisation when it was cached).

pub mod apt;
pub mod executor;
pub mod git;
pub mod h1;
pub mod mirror;
pub mod unpack;
pub mod url;

#[cfg(test)]
pub(crate) mod test_git;
#[cfg(test)]
pub(crate) mod test_http;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::{NullReporter, Reporter};
use crate::store::local::{LocalStore, hash_tree};
use crate::store::output::content_address;
use crate::store::tree::TreeError;
use crate::store::{Derivation, Hash, StorePath};

pub use git::GitError;
pub use h1::H1;
pub use mirror::{MirrorError, Mirrors};
pub use unpack::{Format, UnpackError, UnpackLimits};
pub use url::{DownloadError, DownloadOptions};

/// The builder of URL fetches.
pub const FETCH_URL: &str = "builtin:fetch_url";
/// The builder of git fetches.
pub const FETCH_GIT: &str = "builtin:fetch_git";

/// What is fetched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FetchSpec {
    Url { url: String, unpack: Option<Format> },
    Git { url: String, rev: String },
}

impl FetchSpec {
    /// The URL, for messages.
    pub fn url(&self) -> &str {
        match self {
            FetchSpec::Url { url, .. } | FetchSpec::Git { url, .. } => url,
        }
    }
}

impl std::fmt::Display for FetchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchSpec::Url { url, .. } => f.write_str(url),
            FetchSpec::Git { url, rev } => write!(f, "{url} at {rev}"),
        }
    }
}

/// What the result must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pin {
    /// Content hash of the result (the store archive of the tree or file).
    pub hash: Option<Hash>,
    /// sha256 of the downloaded file (URL fetches only).
    pub sha256: Option<[u8; 32]>,
    /// Go's module hash of the downloaded `.zip` or `.mod` ([`h1`], URL fetches only).
    pub h1: Option<H1>,
}

impl Pin {
    pub fn is_empty(&self) -> bool {
        self.hash.is_none() && self.sha256.is_none() && self.h1.is_none()
    }

    /// Parse a user-written pin: a bramble hash (32 base32 characters) is a content hash;
    /// 64 hex digits, optionally after `sha256:`, are a file sha256; `h1:<base64>` is Go's
    /// module hash.
    pub fn parse(text: &str) -> Result<Pin, String> {
        if text.starts_with("h1:") {
            return text.parse().map(|h| Pin {
                h1: Some(h),
                ..Pin::default()
            });
        }
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if let Some(sha) = parse_sha256(hex) {
            return Ok(Pin {
                sha256: Some(sha),
                ..Pin::default()
            });
        }
        if text.starts_with("sha256:") {
            return Err(format!(
                "`{text}` is not `sha256:` followed by 64 hex digits"
            ));
        }
        text.parse::<Hash>()
            .map(|h| Pin {
                hash: Some(h),
                ..Pin::default()
            })
            .map_err(|_| {
                format!(
                    "`{text}` is neither a bramble content hash (32 characters of base32), a sha256 (64 hex digits) nor a Go module hash (`h1:...`)"
                )
            })
    }
}

/// Parse 64 hex digits.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .ok()?;
    bytes.try_into().ok()
}

/// Print a sha256 as 64 lower-case hex digits.
pub fn sha256_hex(sha: &[u8; 32]) -> String {
    data_encoding::HEXLOWER.encode(sha)
}

/// One fetch: what, under which store name, pinned to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub spec: FetchSpec,
    pub name: String,
    pub pin: Pin,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetch derivation `{name}` is invalid: {reason}")]
    BadDerivation { name: String, reason: String },
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("cannot fetch `{url}` from any of its mirrors (from {origin}):{}", .tried.iter().map(|(u, e)| format!("\n  `{u}`: {}", e.replace('\n', "\n    "))).collect::<String>())]
    Mirrors {
        url: String,
        origin: String,
        /// Each URL tried and why it failed.
        tried: Vec<(String, String)>,
        /// Whether a mirror served a Go module file that did not match its `h1` pin.
        h1_mismatch: bool,
    },
    #[error("cannot unpack `{url}`")]
    Unpack { url: String, source: UnpackError },
    #[error(
        "the {kind} of `{what}` does not match its pin\n  expected: {expected}\n  actual:   {actual}"
    )]
    Mismatch {
        what: String,
        kind: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "the Go module hash (h1) of {} does not match its pin (from go.sum)\n  expected: {expected}\n  actual:   {actual}",
        .module.as_ref().map_or_else(|| format!("`{url}`"), |m| format!("`{m}` (`{url}`)"))
    )]
    H1Mismatch {
        url: String,
        /// `<module>@<version>`, when the URL names it.
        module: Option<String>,
        expected: String,
        actual: String,
    },
    #[error("`{url}` is not a valid Go module file: {reason}")]
    GoModule { url: String, reason: String },
    #[error("cannot store the result of fetching `{what}`")]
    Store {
        what: String,
        source: Box<crate::store::local::Error>,
    },
    #[error("cannot hash the result of fetching `{what}`")]
    Tree {
        what: String,
        source: Box<TreeError>,
    },
    #[error("the fetch of `{what}` was interrupted")]
    Join { what: String },
}

impl crate::error::Diagnose for FetchError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            FetchError::Download(e) => e.class(),
            FetchError::Git(e) => e.class(),
            FetchError::Mirror(e) => e.class(),
            // The archive the fetch names is refused (or cannot be read) as a whole.
            FetchError::BadDerivation { .. }
            | FetchError::Mismatch { .. }
            | FetchError::Unpack { .. } => Class::User,
            FetchError::Store { .. }
            | FetchError::Tree { .. }
            | FetchError::Mirrors { .. }
            | FetchError::H1Mismatch { .. }
            | FetchError::GoModule { .. }
            | FetchError::Join { .. } => Class::Environment,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            FetchError::Download(e) => e.hint(),
            FetchError::Git(e) => e.hint(),
            FetchError::Mirror(e) => e.hint(),
            FetchError::Mirrors {
                h1_mismatch: true, ..
            } => FetchError::H1Mismatch {
                url: String::new(),
                module: None,
                expected: String::new(),
                actual: String::new(),
            }
            .hint(),
            FetchError::Mirrors { .. } => Some(
                "check that the mirrors are up and hold the file; a mirror that serves other content than the pin is skipped".into(),
            ),
            FetchError::Mismatch { .. } => Some(
                "if upstream really changed the content, update the pin (the `hash` argument, or delete the entry from `bramble.lock`); otherwise the download was tampered with or is corrupt".into(),
            ),
            FetchError::H1Mismatch { .. } => Some(
                "the module proxy served other content than `go.sum` records: check the mirror (`BRAMBLE_MIRROR_GOPROXY` or `[mirrors]`); if the module's author really re-tagged the version, `go mod tidy` with a trusted proxy updates `go.sum`".into(),
            ),
            FetchError::GoModule { .. } => Some(
                "a module zip holds only regular files below `<module>@<version>/`; this one was refused on purpose".into(),
            ),
            FetchError::Unpack { .. } => Some(
                "check the `unpack` format; an archive that tries to write outside its directory is refused on purpose".into(),
            ),
            _ => None,
        }
    }
}

impl FetchRequest {
    /// The fetch a derivation describes, or `None` when its builder is not a fetcher.
    pub fn from_derivation(drv: &Derivation) -> Result<Option<FetchRequest>, FetchError> {
        if drv.builder != FETCH_URL && drv.builder != FETCH_GIT {
            return Ok(None);
        }
        let bad = |reason: String| FetchError::BadDerivation {
            name: drv.name.clone(),
            reason,
        };
        if !drv.args.is_empty() {
            return Err(bad("a fetcher takes no arguments".into()));
        }
        if drv.sources.is_some() {
            return Err(bad("a fetcher has no sources".into()));
        }
        if drv.dao {
            return Err(bad("a fetcher cannot be a DAO".into()));
        }
        if drv.outputs != ["out"] {
            return Err(bad("a fetcher has exactly the output `out`".into()));
        }
        let allowed: &[&str] = if drv.builder == FETCH_URL {
            &["url", "unpack", "hash", "sha256", "h1"]
        } else {
            &["url", "rev", "hash"]
        };
        for (k, v) in &drv.env {
            if !allowed.contains(&k.as_str()) {
                return Err(bad(format!(
                    "unknown setting `{k}` (expected one of {})",
                    allowed.join(", ")
                )));
            }
            if v.contains("{{") {
                return Err(bad(format!(
                    "`{k}` refers to another derivation; a fetcher depends on nothing"
                )));
            }
        }
        let get = |k: &str| drv.env.get(k).map(String::as_str);
        let url = get("url")
            .ok_or_else(|| bad("`url` is missing".into()))?
            .to_owned();
        let spec = if drv.builder == FETCH_URL {
            if mirror::MirrorUrl::parse(&url)?.is_none() {
                url::check_url(&url)?;
            }
            let unpack = get("unpack")
                .map(|u| {
                    Format::from_name(u).ok_or_else(|| {
                        bad(format!(
                            "`{u}` is not an archive format (one of {})",
                            Format::ALL.map(Format::name).join(", ")
                        ))
                    })
                })
                .transpose()?;
            FetchSpec::Url { url, unpack }
        } else {
            let rev = get("rev").ok_or_else(|| bad("`rev` is missing".into()))?;
            git::check(&url, rev)?;
            FetchSpec::Git {
                url,
                rev: rev.to_ascii_lowercase(),
            }
        };
        let mut pin = Pin::default();
        if let Some(h) = get("hash") {
            pin.hash = Some(h.parse().map_err(|e| bad(format!("`hash`: {e}")))?);
        }
        if let Some(s) = get("sha256") {
            pin.sha256 = Some(
                parse_sha256(s.strip_prefix("sha256:").unwrap_or(s))
                    .ok_or_else(|| bad(format!("`sha256`: `{s}` is not 64 hex digits")))?,
            );
        }
        if let Some(h) = get("h1") {
            pin.h1 = Some(h.parse().map_err(|e| bad(format!("`h1`: {e}")))?);
            let url = spec.url();
            if !matches!(spec, FetchSpec::Url { .. }) || h1::Target::of_url(url).is_none() {
                return Err(bad(format!(
                    "an `h1` pin checks a Go module's `.zip` or `.mod` file; `{url}` names neither"
                )));
            }
        }
        Ok(Some(FetchRequest {
            spec,
            name: drv.name.clone(),
            pin,
        }))
    }

    /// The derivation describing this fetch (the inverse of [`FetchRequest::from_derivation`]).
    pub fn to_derivation(&self) -> Derivation {
        let mut env = BTreeMap::new();
        let builder = match &self.spec {
            FetchSpec::Url { url, unpack } => {
                env.insert("url".to_owned(), url.clone());
                if let Some(f) = unpack {
                    env.insert("unpack".to_owned(), f.name().to_owned());
                }
                if let Some(s) = &self.pin.sha256 {
                    env.insert("sha256".to_owned(), sha256_hex(s));
                }
                if let Some(h) = &self.pin.h1 {
                    env.insert("h1".to_owned(), h.to_string());
                }
                FETCH_URL
            }
            FetchSpec::Git { url, rev } => {
                env.insert("url".to_owned(), url.clone());
                env.insert("rev".to_owned(), rev.clone());
                FETCH_GIT
            }
        };
        if let Some(h) = &self.pin.hash {
            env.insert("hash".to_owned(), h.to_string());
        }
        let mut drv = Derivation::new(self.name.clone(), builder);
        drv.env = env;
        drv
    }

    /// The key under which the store remembers the result of downloading a file with
    /// sha256 `sha256` (unpacked as this request says, under its name): a realisation of
    /// this key is the store path a `sha256` pin alone names, so a file already fetched
    /// (from any URL) is not downloaded again. Derivation build keys are hashes of JSON
    /// documents; this text is not one, so the two never meet.
    pub fn sha256_key(&self, sha256: &[u8; 32]) -> Option<Hash> {
        let FetchSpec::Url { unpack, .. } = &self.spec else {
            return None;
        };
        Some(Hash::digest(format!(
            "bramble fetched file sha256:{} unpack:{} name:{}",
            sha256_hex(sha256),
            unpack.map_or("none", Format::name),
            self.name
        )))
    }

    /// The store path of the result, when the content hash is pinned.
    pub fn expected_path(&self) -> Option<StorePath> {
        self.pin
            .hash
            .and_then(|h| content_address(&self.name, h, false, &BTreeSet::new()).ok())
    }
}

/// A verified fetch result on disk, not yet in the store.
#[derive(Debug)]
pub struct FetchedTree {
    /// The tree (or single file).
    pub path: PathBuf,
    pub hash: Hash,
    /// sha256 of the downloaded file (URL fetches).
    pub sha256: Option<[u8; 32]>,
}

/// A fetch result in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: StorePath,
    pub hash: Hash,
    pub sha256: Option<[u8; 32]>,
    /// Whether anything was downloaded (false: the pinned result was already stored).
    pub downloaded: bool,
}

impl Fetched {
    /// What `bramble.lock` records of this result of `req`: `None` when nothing was
    /// downloaded (the store held the pinned result).
    pub fn record(&self, req: &FetchRequest) -> Option<FetchRecord> {
        self.downloaded.then(|| FetchRecord {
            spec: req.spec.clone(),
            hash: self.hash,
            sha256: self.sha256,
        })
    }
}

/// What one fetch produced, for `bramble.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRecord {
    pub spec: FetchSpec,
    pub hash: Hash,
    pub sha256: Option<[u8; 32]>,
}

/// Runs fetches against a store.
#[derive(Clone)]
pub struct Fetcher {
    pub store: Arc<LocalStore>,
    pub download: DownloadOptions,
    pub limits: UnpackLimits,
    /// Where download progress goes ([`crate::engine::Event::Download`]).
    pub progress: Arc<dyn Reporter>,
    /// Every fetch that ran (downloaded and verified), in completion order.
    /// Where `mirror://` URLs are downloaded from.
    pub mirrors: Arc<Mirrors>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("store", &self.store.home())
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    pub fn new(store: Arc<LocalStore>) -> Fetcher {
        Fetcher {
            store,
            download: DownloadOptions::default(),
            limits: UnpackLimits::default(),
            progress: Arc::new(NullReporter),
            mirrors: Arc::default(),
        }
    }

    /// Fetch into the store. With a content-hash pin whose path is already valid, or a
    /// sha256 pin of a file the store already holds the result of
    /// ([`FetchRequest::sha256_key`]), nothing is downloaded. A result that does not match
    /// the pin is an error and nothing is stored.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, FetchError> {
        let what = req.spec.to_string();
        let store_err = |source| FetchError::Store {
            what: what.clone(),
            source: Box::new(source),
        };
        // `keep_valid`: a path found is a temporary root of this process from then on.
        if let (Some(path), Some(hash)) = (req.expected_path(), req.pin.hash)
            && self.store.keep_valid(&path).map_err(store_err)?
            && let Some(info) = self.store.path_info(&path).map_err(store_err)?
            && info.archive_hash == hash
        {
            return Ok(Fetched {
                path,
                hash,
                sha256: req.pin.sha256,
                downloaded: false,
            });
        }
        if let Some(sha256) = &req.pin.sha256
            && let Some(key) = req.sha256_key(sha256)
            && let Some(path) = self.store.realisation(key, "out").map_err(store_err)?
            && let Some(info) = self.store.path_info(&path).map_err(store_err)?
            && req.pin.hash.is_none_or(|h| h == info.archive_hash)
        {
            return Ok(Fetched {
                path,
                hash: info.archive_hash,
                sha256: Some(*sha256),
                downloaded: false,
            });
        }
        let tmp = self.store.tmp_dir("fetch").map_err(store_err)?;
        let tree = self.fetch_to(req, tmp.path()).await?;
        let store = self.store.clone();
        let name = req.name.clone();
        let src = tree.path.clone();
        let path = tokio::task::spawn_blocking(move || store.add_dir(&src, &name))
            .await
            .map_err(|_| FetchError::Join { what: what.clone() })?
            .map_err(store_err)?;
        drop(tmp);
        if let Some(sha256) = &tree.sha256
            && let Some(key) = req.sha256_key(sha256)
        {
            self.store
                .register_realisation(key, "out", &path)
                .map_err(store_err)?;
        }
        Ok(Fetched {
            path,
            hash: tree.hash,
            sha256: tree.sha256,
            downloaded: true,
        })
    }

    /// Fetch into a directory below `dir` (an empty scratch directory the caller removes)
    /// and check the pins. Nothing touches the store. A `mirror://` URL is tried at each of
    /// its mirrors in turn until one gives a result that matches the pins.
    pub async fn fetch_to(
        &self,
        req: &FetchRequest,
        dir: &Path,
    ) -> Result<FetchedTree, FetchError> {
        let tree = match &req.spec {
            FetchSpec::Url { url, unpack } => {
                if mirror::MirrorUrl::parse(url)?.is_none() {
                    self.fetch_url_to(req, url, *unpack, dir).await?
                } else {
                    let resolved = self.mirrors.resolve(url)?;
                    let mut tried = Vec::new();
                    let mut h1_mismatch = false;
                    let mut found = None;
                    for (i, candidate) in resolved.urls.iter().enumerate() {
                        let attempt = dir.join(format!("mirror-{i}"));
                        std::fs::create_dir(&attempt).map_err(|source| {
                            FetchError::Download(DownloadError::Io {
                                op: "create directory",
                                path: attempt.clone(),
                                source,
                            })
                        })?;
                        match self.fetch_url_to(req, candidate, *unpack, &attempt).await {
                            Ok(tree) => {
                                found = Some(tree);
                                break;
                            }
                            Err(
                                e @ (FetchError::Download(_)
                                | FetchError::Mismatch { .. }
                                | FetchError::H1Mismatch { .. }
                                | FetchError::GoModule { .. }
                                | FetchError::Unpack { .. }),
                            ) => {
                                h1_mismatch |= matches!(e, FetchError::H1Mismatch { .. });
                                tracing::info!(
                                    "fetching `{url}` from `{candidate}` failed: {}",
                                    crate::store::local::error_chain(&e)
                                );
                                tried.push((
                                    candidate.clone(),
                                    crate::store::local::error_chain(&e),
                                ));
                                let _ = crate::store::tree::remove(&attempt);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    let name = mirror::MirrorUrl::parse(url)?.map_or("", |m| m.name);
                    found.ok_or_else(|| FetchError::Mirrors {
                        url: url.clone(),
                        origin: resolved
                            .origin
                            .as_ref()
                            .map_or_else(String::new, |o| o.describe(name)),
                        tried,
                        h1_mismatch,
                    })?
                }
            }
            FetchSpec::Git { url, rev } => {
                let what = req.spec.to_string();
                let out = dir.join("out");
                let (url, rev, dest) = (url.clone(), rev.clone(), out.clone());
                let scratch = dir.join("git");
                std::fs::create_dir(&scratch).map_err(|source| GitError::Io {
                    op: "create directory",
                    path: scratch.clone(),
                    source,
                })?;
                tokio::task::spawn_blocking(move || {
                    let r = git::fetch(&url, &rev, &dest, &scratch);
                    let _ = crate::store::tree::remove(&scratch);
                    r
                })
                .await
                .map_err(|_| FetchError::Join { what: what.clone() })??;
                self.check_tree(req, out, None).await?
            }
        };
        Ok(tree)
    }

    /// Download `url` (an http(s) URL: `req`'s own or one of its mirrors) into `<dir>/out`,
    /// unpack it if asked and check the pins.
    async fn fetch_url_to(
        &self,
        req: &FetchRequest,
        url: &str,
        unpack: Option<Format>,
        dir: &Path,
    ) -> Result<FetchedTree, FetchError> {
        let what = req.spec.to_string();
        let out = dir.join("out");
        let file = dir.join("download");
        let got = url::download(url, &file, &self.download, self.progress.as_ref()).await?;
        if let Some(expected) = req.pin.sha256
            && expected != got.sha256
        {
            return Err(FetchError::Mismatch {
                what,
                kind: "sha256",
                expected: sha256_hex(&expected),
                actual: sha256_hex(&got.sha256),
            });
        }
        if let Some(expected) = req.pin.h1 {
            self.check_h1(req, expected, &file).await?;
        }
        match unpack {
            None => std::fs::rename(&file, &out).map_err(|source| {
                FetchError::Download(DownloadError::Io {
                    op: "rename",
                    path: file.clone(),
                    source,
                })
            })?,
            Some(format) => {
                let (limits, dest) = (self.limits, out.clone());
                tokio::task::spawn_blocking(move || unpack::unpack(&file, format, &dest, &limits))
                    .await
                    .map_err(|_| FetchError::Join { what: what.clone() })?
                    .map_err(|source| FetchError::Unpack {
                        url: url.to_owned(),
                        source,
                    })?;
            }
        }
        self.check_tree(req, out, Some(got.sha256)).await
    }

    /// Check the downloaded `file` of `req` against its `h1` pin (before it is unpacked or
    /// stored): the zip's entries (checked strictly, see [`h1`]) or the `.mod` as `go.mod`.
    async fn check_h1(
        &self,
        req: &FetchRequest,
        expected: H1,
        file: &Path,
    ) -> Result<(), FetchError> {
        let url = req.spec.url().to_owned();
        let target = h1::Target::of_url(&url).ok_or_else(|| FetchError::BadDerivation {
            name: req.name.clone(),
            reason: format!("an `h1` pin needs a `.zip` or `.mod` URL, not `{url}`"),
        })?;
        let (path, u) = (file.to_owned(), url.clone());
        let actual = tokio::task::spawn_blocking(move || h1::hash_file(&path, &u, target))
            .await
            .map_err(|_| FetchError::Join { what: url.clone() })?
            .map_err(|reason| FetchError::GoModule {
                url: url.clone(),
                reason,
            })?;
        if actual != expected {
            return Err(FetchError::H1Mismatch {
                module: module_named(&url, target, file),
                url,
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// Hash the fetched tree at `out` and check it against the content-hash pin.
    async fn check_tree(
        &self,
        req: &FetchRequest,
        out: PathBuf,
        sha256: Option<[u8; 32]>,
    ) -> Result<FetchedTree, FetchError> {
        let what = req.spec.to_string();
        let hashed = out.clone();
        let (hash, _) = tokio::task::spawn_blocking(move || hash_tree(&hashed))
            .await
            .map_err(|_| FetchError::Join { what: what.clone() })?
            .map_err(|source| FetchError::Tree {
                what: what.clone(),
                source: Box::new(source),
            })?;
        if let Some(expected) = req.pin.hash
            && expected != hash
        {
            return Err(FetchError::Mismatch {
                what,
                kind: "content hash",
                expected: expected.to_string(),
                actual: hash.to_string(),
            });
        }
        Ok(FetchedTree {
            path: out,
            hash,
            sha256,
        })
    }
}

/// The `<module>@<version>` (`/go.mod` for a `.mod`) a Go module file is of, for messages:
/// from a `mirror://` URL, else from the top directory of a zip (checked against the URL).
fn module_named(url: &str, target: h1::Target, file: &Path) -> Option<String> {
    let suffix = if target == h1::Target::Mod {
        "/go.mod"
    } else {
        ""
    };
    if let Some((m, v)) = h1::module_of_url(url) {
        return Some(format!("{m}@{v}{suffix}"));
    }
    if target == h1::Target::Zip {
        let f = std::fs::File::open(file).ok()?;
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).ok()?;
        let first = zip.by_index(0).ok()?;
        let name = first.name().ok()?;
        let end = name
            .find('@')
            .and_then(|at| name[at..].find('/').map(|s| at + s))?;
        return Some(name[..end].to_owned());
    }
    None
}

#[cfg(test)]
mod tests;

/// A size from the environment variable `name`, if set and valid (an invalid value is
/// ignored with a warning naming it).
pub(crate) fn size_from_env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match crate::store::limits::parse_size(&value) {
        Ok(n) if n > 0 => Some(n),
        Ok(_) => {
            tracing::warn!("ignoring `{name}`: it must be positive");
            None
        }
        Err(e) => {
            tracing::warn!("ignoring `{name}`: {e}");
            None
        }
    }
}
