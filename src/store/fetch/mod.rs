//! The description of a fetch, pure data: what is fetched ([`FetchSpec`]: a URL with its
//! unpack [`Format`], or a git commit), what it is pinned to ([`Pin`]: a content hash, a
//! sha256, Go's `h1`), the derivation that says so ([`FetchRequest`], both ways, with the
//! syntax of URLs, mirror URLs and git remotes checked), and what a fetch produced for the
//! lock file ([`FetchRecord`]). `project::lock` reads and writes these; the engine's
//! fetchers (`crate::engine::fetch`, the only code with network) run them.

pub mod h1;

use std::collections::{BTreeMap, BTreeSet};

pub use h1::H1;

use super::output::content_address;
use super::{Derivation, Hash, StorePath};

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

/// A fetch derivation (or a fetch asked for on the command line) that does not describe a
/// valid fetch.
#[derive(Debug, thiserror::Error)]
pub enum InvalidFetch {
    #[error("fetch derivation `{name}` is invalid: {reason}")]
    Derivation { name: String, reason: String },
    #[error("`{url}` is not a valid URL: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot download `{url}`: the scheme `{scheme}` is not supported (use http or https)")]
    Scheme { url: String, scheme: String },
    #[error("`{url}` is not a valid mirror URL: {reason}")]
    MirrorUrl { url: String, reason: String },
    #[error("`{url}` is not a git remote: {reason}")]
    GitRemote { url: String, reason: &'static str },
    #[error("`{rev}` is not a full commit hash (40 hexadecimal characters)")]
    NotACommitHash { url: String, rev: String },
}

impl crate::error::Diagnose for InvalidFetch {
    /// What a fetch names (its URL, pin, arguments) is the user's.
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }

    fn hint(&self) -> Option<String> {
        match self {
            InvalidFetch::NotACommitHash { url, rev } => Some(format!(
                "pin a commit: `git ls-remote {url} {rev}` prints the hash `{rev}` points at now"
            )),
            _ => None,
        }
    }
}

impl FetchRequest {
    /// The fetch a derivation describes, or `None` when its builder is not a fetcher.
    pub fn from_derivation(drv: &Derivation) -> Result<Option<FetchRequest>, InvalidFetch> {
        if drv.builder != FETCH_URL && drv.builder != FETCH_GIT {
            return Ok(None);
        }
        let bad = |reason: String| InvalidFetch::Derivation {
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
            if MirrorUrl::parse(&url)?.is_none() {
                check_http_url(&url)?;
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
            check_git(&url, rev)?;
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

/// What one fetch produced, for `bramble.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRecord {
    pub spec: FetchSpec,
    pub hash: Hash,
    pub sha256: Option<[u8; 32]>,
}

/// What an archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Tar,
    TarGz,
    TarXz,
    TarBz2,
    TarZst,
    Zip,
    Deb,
}

impl Format {
    /// Every format, with its name.
    pub const ALL: [Format; 7] = [
        Format::Tar,
        Format::TarGz,
        Format::TarXz,
        Format::TarBz2,
        Format::TarZst,
        Format::Zip,
        Format::Deb,
    ];

    /// The name used in `fetch_url(unpack = ...)`, the derivation and `bramble.lock`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::TarGz => "tar.gz",
            Format::TarXz => "tar.xz",
            Format::TarBz2 => "tar.bz2",
            Format::TarZst => "tar.zst",
            Format::Zip => "zip",
            Format::Deb => "deb",
        }
    }

    /// Parse a format name (see [`Format::name`]).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Guess the format from the end of a file name or URL path (`.tgz`, `.tar.xz`, `.deb`…).
    pub fn guess(name: &str) -> Option<Format> {
        let name = name.split(['?', '#']).next().unwrap_or(name);
        let lower = name.to_ascii_lowercase();
        let table: [(&str, Format); 14] = [
            (".tar.gz", Format::TarGz),
            (".tgz", Format::TarGz),
            (".tar.xz", Format::TarXz),
            (".txz", Format::TarXz),
            (".tar.bz2", Format::TarBz2),
            (".tbz2", Format::TarBz2),
            (".tbz", Format::TarBz2),
            (".tar.zst", Format::TarZst),
            (".tzst", Format::TarZst),
            (".tar", Format::Tar),
            (".zip", Format::Zip),
            (".deb", Format::Deb),
            (".udeb", Format::Deb),
            // A Rust crate as the registries serve it.
            (".crate", Format::TarGz),
        ];
        table
            .into_iter()
            .find(|(suffix, _)| lower.ends_with(suffix))
            .map(|(_, f)| f)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The scheme of mirror URLs.
pub const SCHEME: &str = "mirror://";

/// A parsed `mirror://NAME/path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorUrl<'a> {
    pub name: &'a str,
    /// Everything after `NAME/` (never empty, no leading `/`).
    pub path: &'a str,
}

impl<'a> MirrorUrl<'a> {
    /// Parse `url` if it is a mirror URL: `Ok(None)` for any other scheme.
    pub fn parse(url: &'a str) -> Result<Option<MirrorUrl<'a>>, InvalidFetch> {
        let Some(rest) = url.strip_prefix(SCHEME) else {
            return Ok(None);
        };
        let bad = |reason: &str| InvalidFetch::MirrorUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected `mirror://NAME/path`"))?;
        check_name(name).map_err(|reason| bad(&reason))?;
        let path = path.trim_start_matches('/');
        if path.is_empty() {
            return Err(bad("the path after the mirror's name is empty"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the path contains white space"));
        }
        Ok(Some(MirrorUrl { name, path }))
    }
}

/// A mirror name: lower-case letters, digits and `-`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a mirror name (lower-case letters, digits and `-`)"
        ))
    }
}

/// Check that `url` is an http(s) URL.
pub fn check_http_url(url: &str) -> Result<url::Url, InvalidFetch> {
    let parsed = url::Url::parse(url).map_err(|e| InvalidFetch::Url {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(InvalidFetch::Scheme {
            url: url.to_owned(),
            scheme: other.to_owned(),
        }),
    }
}

/// Whether `rev` is a full commit hash (sha1, 40 hex digits).
pub fn is_full_rev(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Check the remote and the pin before anything runs. A remote is an http(s), git, ssh or
/// file URL, `user@host:path`, or an absolute path: never relative (a derivation means the
/// same wherever it is built), never an option, never git's `ext::`/`fd::` transports.
pub fn check_git(url: &str, rev: &str) -> Result<(), InvalidFetch> {
    let bad = |reason| InvalidFetch::GitRemote {
        url: url.to_owned(),
        reason,
    };
    if url.is_empty() || url.starts_with('-') {
        return Err(bad("it must not be empty or start with `-`"));
    }
    if url.contains("::") {
        return Err(bad("git's `<transport>::` remote helpers are not allowed"));
    }
    let schemed = ["http://", "https://", "git://", "ssh://", "file://"]
        .iter()
        .any(|s| url.starts_with(s));
    let scp_like =
        !url.contains("://") && url.split_once(':').is_some_and(|(h, _)| h.contains('@'));
    if !(schemed || scp_like || url.starts_with('/')) {
        return Err(bad(
            "use an http(s), git, ssh or file URL, `user@host:path`, or an absolute path",
        ));
    }
    if !is_full_rev(rev) {
        return Err(InvalidFetch::NotACommitHash {
            url: url.to_owned(),
            rev: rev.to_owned(),
        });
    }
    Ok(())
}
