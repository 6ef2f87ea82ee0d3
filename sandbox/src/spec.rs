//! The sandbox spec: everything the helper needs to run one builder, as JSON on stdin.
//!
//! The spec is the only interface between the build engine (or `bramble run`/`bramble shell`)
//! and the helper. It is pure data: parsing and validation do no I/O, so the engine can
//! validate a spec before spawning anything. Paths come in two flavours: `source` paths are
//! host paths (resolved by the helper before it enters the namespaces), every other path is a
//! path *inside* the sandbox.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the build directory is mounted inside a build sandbox.
pub const SANDBOX_BUILD_DIR: &str = "/build";
/// Default uid of the builder inside the sandbox (as Nix's sandbox build user).
pub const DEFAULT_UID: u32 = 1000;
/// Default gid of the builder inside the sandbox (Nix's `nixbld` group id).
pub const DEFAULT_GID: u32 = 100;
/// Default hostname inside the sandbox.
pub const DEFAULT_HOSTNAME: &str = "localhost";
/// Largest spec the helper accepts (bytes of JSON).
pub const MAX_SPEC_BYTES: usize = 64 << 20;

/// Paths the helper itself mounts; no bind, tmpfs or symlink may target them or their insides.
pub const RESERVED_PATHS: [&str; 2] = ["/proc", "/dev"];

/// One run of one builder in a fresh sandbox.
///
/// Mounts are applied in this order: `binds` (in list order), then `tmpfs`, then `symlinks`.
/// A later entry may live *inside* an earlier one (e.g. inputs bound read-only on top of a
/// writable staging directory at `/bramble/store`), but no entry may be at or above an
/// earlier one, since it would hide it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Absolute path of the program to execute, inside the sandbox.
    pub builder: PathBuf,
    /// Arguments after `argv[0]` (the helper passes `builder` as `argv[0]`).
    #[serde(default)]
    pub args: Vec<String>,
    /// The builder's whole environment, apart from the defaults `HOME=/homeless-shelter`,
    /// `TMPDIR=/build` and `PATH=/path-not-set`, which apply unless set here.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the builder, inside the sandbox.
    #[serde(default = "default_cwd")]
    pub cwd: PathBuf,
    /// Host paths made visible inside the sandbox.
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// Fresh, empty, writable tmpfs directories (mode 1777), e.g. `/tmp`.
    #[serde(default)]
    pub tmpfs: Vec<PathBuf>,
    /// Symbolic links created inside the sandbox, e.g. `/bin/sh`.
    #[serde(default)]
    pub symlinks: Vec<Symlink>,
    /// Network isolation.
    #[serde(default)]
    pub network: Network,
    /// Hostname inside the sandbox.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Wall-clock limit in milliseconds; the whole sandbox is killed when it is reached.
    #[serde(default)]
    pub time_limit_ms: Option<u64>,
    /// Longest time in milliseconds without a byte on the builder's stdout or stderr; the
    /// whole sandbox is killed when it is reached (Nix's `max-silent-time`). The helper then
    /// relays the builder's output through pipes of its own to see it.
    #[serde(default)]
    pub silence_limit_ms: Option<u64>,
    /// Memory limit in bytes of every process of the sandbox (`RLIMIT_DATA`: heap and
    /// private writable mappings; see [`crate::limits`]).
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// Most processes (threads included) the builder may have at once, itself included
    /// (`RLIMIT_NPROC`, counted per sandbox; see [`crate::limits`]).
    #[serde(default)]
    pub process_limit: Option<u32>,
    /// What the builder's stdin is. Stdout and stderr are always the helper's own.
    #[serde(default)]
    pub stdin: Stdin,
    /// Uid of the builder inside the sandbox (mapped to the caller's uid; as root, to an
    /// unprivileged id, see [`crate::ids`]).
    #[serde(default = "default_uid")]
    pub uid: u32,
    /// Gid of the builder inside the sandbox (mapped to the caller's gid; as root, to an
    /// unprivileged id, see [`crate::ids`]).
    #[serde(default = "default_gid")]
    pub gid: u32,
}

/// A host path bind-mounted into the sandbox. Every bind is `nosuid` and `nodev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// Host path (absolute). A source that is itself a symbolic link is recreated as that
    /// link inside the sandbox (store paths may be symlinks); writable sources may not be.
    pub source: PathBuf,
    /// Path inside the sandbox (absolute).
    pub target: PathBuf,
    /// Read-write if true; read-only (the default) otherwise.
    #[serde(default)]
    pub writable: bool,
}

/// A symbolic link created inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Symlink {
    /// Path of the link inside the sandbox (absolute).
    pub path: PathBuf,
    /// What the link points to (any text without NUL; relative links are fine).
    pub to: PathBuf,
}

/// Network isolation of the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A fresh network namespace with only `lo` (up). Every builder gets this.
    #[default]
    None,
    /// Keep the host's network namespace (fixed-output fetchers, `bramble run(network=True)`).
    Host,
}

/// The builder's standard input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stdin {
    /// `/dev/null` (builds).
    #[default]
    Null,
    /// The helper's own stdin (`bramble run`, `bramble shell`); the spec must then come on
    /// another descriptor (`--spec-fd`).
    Inherit,
}

fn default_cwd() -> PathBuf {
    PathBuf::from(SANDBOX_BUILD_DIR)
}
fn default_hostname() -> String {
    DEFAULT_HOSTNAME.to_owned()
}
fn default_uid() -> u32 {
    DEFAULT_UID
}
fn default_gid() -> u32 {
    DEFAULT_GID
}

/// Why a spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// The JSON did not parse or did not match the spec's shape.
    Parse { message: String },
    /// A path that must be absolute is not.
    NotAbsolute { field: &'static str, path: PathBuf },
    /// A path has `.`/`..` components, a doubled or trailing slash, or is `/` itself.
    NotNormal { field: &'static str, path: PathBuf },
    /// A string contains a NUL byte (it could not reach the kernel intact).
    Nul { field: &'static str },
    /// Two entries target the same sandbox path.
    Duplicate { path: PathBuf },
    /// An entry would be mounted at or above an earlier one and hide it.
    Hides { path: PathBuf, hidden: PathBuf },
    /// An entry targets a path the helper mounts itself (`/proc`, `/dev`).
    Reserved { path: PathBuf },
    /// An environment variable name is empty or contains `=`.
    EnvName { name: String },
    /// The hostname is empty, longer than 64 bytes or contains `/` or NUL.
    Hostname { hostname: String },
    /// A limit (`time_limit_ms`, `silence_limit_ms`, `memory_limit_bytes`, `process_limit`)
    /// is zero.
    ZeroLimit { field: &'static str },
    /// A symlink or tmpfs was placed inside a read-only bind, where it cannot be created.
    InsideReadOnly { path: PathBuf, bind: PathBuf },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Parse { message } => write!(f, "invalid sandbox spec: {message}"),
            SpecError::NotAbsolute { field, path } => {
                write!(f, "`{field}` path `{}` is not absolute", path.display())
            }
            SpecError::NotNormal { field, path } => write!(
                f,
                "`{field}` path `{}` is not normalised (no `.`, `..`, `//`, trailing `/` or bare `/`)",
                path.display()
            ),
            SpecError::Nul { field } => write!(f, "`{field}` contains a NUL byte"),
            SpecError::Duplicate { path } => {
                write!(f, "sandbox path `{}` is listed twice", path.display())
            }
            SpecError::Hides { path, hidden } => write!(
                f,
                "sandbox path `{}` would hide `{}` listed before it",
                path.display(),
                hidden.display()
            ),
            SpecError::Reserved { path } => write!(
                f,
                "sandbox path `{}` is reserved (the helper mounts `/proc` and `/dev` itself)",
                path.display()
            ),
            SpecError::EnvName { name } => {
                write!(
                    f,
                    "environment variable name `{name}` is empty or contains `=`"
                )
            }
            SpecError::Hostname { hostname } => write!(
                f,
                "hostname `{hostname}` must be 1 to 64 bytes without `/` or NUL"
            ),
            SpecError::ZeroLimit { field } => write!(f, "`{field}` must be positive"),
            SpecError::InsideReadOnly { path, bind } => write!(
                f,
                "`{}` cannot be created inside the read-only bind `{}`",
                path.display(),
                bind.display()
            ),
        }
    }
}

impl std::error::Error for SpecError {}

impl Spec {
    /// A spec running `builder` with the defaults: no binds, network `none`, cwd `/build`.
    pub fn new(builder: impl Into<PathBuf>) -> Spec {
        Spec {
            builder: builder.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: default_cwd(),
            binds: Vec::new(),
            tmpfs: Vec::new(),
            symlinks: Vec::new(),
            network: Network::None,
            hostname: default_hostname(),
            time_limit_ms: None,
            silence_limit_ms: None,
            memory_limit_bytes: None,
            process_limit: None,
            stdin: Stdin::Null,
            uid: DEFAULT_UID,
            gid: DEFAULT_GID,
        }
    }

    /// Parses and validates a spec from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Spec, SpecError> {
        let spec: Spec = serde_json::from_slice(bytes).map_err(|e| SpecError::Parse {
            message: e.to_string(),
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as JSON, as the helper expects it on stdin.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks every invariant the helper relies on. Pure: touches no file.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_sandbox_path("builder", &self.builder)?;
        check_sandbox_path("cwd", &self.cwd)?;
        for arg in &self.args {
            no_nul("args", arg.as_bytes())?;
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') {
                return Err(SpecError::EnvName { name: name.clone() });
            }
            no_nul("env", name.as_bytes())?;
            no_nul("env", value.as_bytes())?;
        }
        let h = &self.hostname;
        if h.is_empty() || h.len() > 64 || h.contains('/') || h.contains('\0') {
            return Err(SpecError::Hostname {
                hostname: h.clone(),
            });
        }
        for (field, zero) in [
            ("time_limit_ms", self.time_limit_ms == Some(0)),
            ("silence_limit_ms", self.silence_limit_ms == Some(0)),
            ("memory_limit_bytes", self.memory_limit_bytes == Some(0)),
            ("process_limit", self.process_limit == Some(0)),
        ] {
            if zero {
                return Err(SpecError::ZeroLimit { field });
            }
        }

        // Every mount-like entry in application order, with whether it is a read-only bind.
        let mut placed: Vec<(&Path, Option<bool>)> = Vec::new();
        let mut seen = BTreeSet::new();
        let entries = self
            .binds
            .iter()
            .map(|b| ("binds.target", b.target.as_path(), Some(b.writable)))
            .chain(self.tmpfs.iter().map(|t| ("tmpfs", t.as_path(), None)))
            .chain(
                self.symlinks
                    .iter()
                    .map(|s| ("symlinks.path", s.path.as_path(), None)),
            );
        for (field, path, writable) in entries {
            check_sandbox_path(field, path)?;
            if RESERVED_PATHS
                .iter()
                .any(|r| path.starts_with(r) || Path::new(r).starts_with(path))
            {
                return Err(SpecError::Reserved {
                    path: path.to_owned(),
                });
            }
            if !seen.insert(path) {
                return Err(SpecError::Duplicate {
                    path: path.to_owned(),
                });
            }
            for (earlier, earlier_writable) in &placed {
                if earlier.starts_with(path) {
                    return Err(SpecError::Hides {
                        path: path.to_owned(),
                        hidden: earlier.to_path_buf(),
                    });
                }
                // Binds may nest in read-only binds only if the mount point already exists
                // there (checked by the helper); tmpfs and symlinks need to create it.
                if writable.is_none()
                    && *earlier_writable == Some(false)
                    && path.starts_with(earlier)
                {
                    return Err(SpecError::InsideReadOnly {
                        path: path.to_owned(),
                        bind: earlier.to_path_buf(),
                    });
                }
            }
            placed.push((path, writable));
        }
        for bind in &self.binds {
            if !bind.source.is_absolute() {
                return Err(SpecError::NotAbsolute {
                    field: "binds.source",
                    path: bind.source.clone(),
                });
            }
            no_nul("binds.source", bind.source.as_os_str().as_encoded_bytes())?;
        }
        for link in &self.symlinks {
            no_nul("symlinks.to", link.to.as_os_str().as_encoded_bytes())?;
        }
        Ok(())
    }

    /// The builder's environment as `NAME=value` strings, defaults included, sorted by name.
    pub fn environment(&self) -> Vec<String> {
        let mut env = self.env.clone();
        for (name, value) in [
            ("HOME", "/homeless-shelter"),
            ("TMPDIR", SANDBOX_BUILD_DIR),
            ("PATH", "/path-not-set"),
        ] {
            env.entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
        }
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

fn no_nul(field: &'static str, bytes: &[u8]) -> Result<(), SpecError> {
    if bytes.contains(&0) {
        return Err(SpecError::Nul { field });
    }
    Ok(())
}

/// A sandbox path must be absolute and normal: `/a/b`, never `/`, `/a/../b`, `/a//b`, `/a/`.
fn check_sandbox_path(field: &'static str, path: &Path) -> Result<(), SpecError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    no_nul(field, bytes)?;
    if !path.is_absolute() {
        return Err(SpecError::NotAbsolute {
            field,
            path: path.to_owned(),
        });
    }
    let not_normal = || SpecError::NotNormal {
        field,
        path: path.to_owned(),
    };
    // `cwd` may be `/`; mount targets and the builder may not.
    if bytes == b"/" {
        return if field == "cwd" {
            Ok(())
        } else {
            Err(not_normal())
        };
    }
    if bytes.ends_with(b"/") || bytes.windows(2).any(|w| w == b"//") {
        return Err(not_normal());
    }
    if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || bytes.windows(3).any(|w| w == b"/./")
        || bytes.ends_with(b"/.")
    {
        return Err(not_normal());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str, target: &str, writable: bool) -> Bind {
        Bind {
            source: source.into(),
            target: target.into(),
            writable,
        }
    }

    #[test]
    fn defaults_and_round_trip() {
        let spec = Spec::from_json(br#"{"builder":"/bin/sh"}"#).unwrap();
        assert_eq!(spec, Spec::new("/bin/sh"));
        assert_eq!(Spec::from_json(spec.to_json().as_bytes()).unwrap(), spec);
    }

    #[test]
    fn environment_defaults_yield_to_spec() {
        let mut spec = Spec::new("/bin/sh");
        spec.env.insert("PATH".into(), "/bin".into());
        spec.env.insert("out".into(), "/bramble/store/x".into());
        assert_eq!(
            spec.environment(),
            [
                "HOME=/homeless-shelter",
                "PATH=/bin",
                "TMPDIR=/build",
                "out=/bramble/store/x"
            ]
        );
    }

    #[test]
    fn rejects_unknown_fields_and_bad_network() {
        for json in [
            r#"{"builder":"/b","bogus":1}"#,
            r#"{"builder":"/b","network":"bridge"}"#,
            r#"{"args":[]}"#,
        ] {
            assert!(matches!(
                Spec::from_json(json.as_bytes()),
                Err(SpecError::Parse { .. })
            ));
        }
    }

    #[test]
    fn rejects_bad_paths() {
        for builder in ["bin/sh", "/", "/a/../b", "/a//b", "/a/", "/a/./b", "/a/."] {
            assert!(Spec::new(builder).validate().is_err(), "{builder}");
        }
        let mut spec = Spec::new("/b");
        spec.binds.push(bind("relative", "/x", false));
        assert!(matches!(
            spec.validate(),
            Err(SpecError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn rejects_duplicates_hiding_and_reserved() {
        let mut spec = Spec::new("/b");
        spec.binds = vec![bind("/h1", "/x", false), bind("/h2", "/x", true)];
        assert!(matches!(spec.validate(), Err(SpecError::Duplicate { .. })));

        spec.binds = vec![bind("/h1", "/a/b", false), bind("/h2", "/a", true)];
        assert!(matches!(spec.validate(), Err(SpecError::Hides { .. })));

        // The other order nests without hiding: allowed.
        spec.binds = vec![bind("/h2", "/a", true), bind("/h1", "/a/b", false)];
        spec.validate().unwrap();

        spec.binds = vec![bind("/h", "/proc/x", false)];
        assert!(matches!(spec.validate(), Err(SpecError::Reserved { .. })));
        spec.binds = vec![bind("/h", "/dev", false)];
        assert!(matches!(spec.validate(), Err(SpecError::Reserved { .. })));

        spec.binds = vec![bind("/h", "/a", false)];
        spec.symlinks = vec![Symlink {
            path: "/a/l".into(),
            to: "x".into(),
        }];
        assert!(matches!(
            spec.validate(),
            Err(SpecError::InsideReadOnly { .. })
        ));
    }

    #[test]
    fn rejects_bad_env_hostname_and_limit() {
        let mut spec = Spec::new("/b");
        spec.env.insert("A=B".into(), "x".into());
        assert!(matches!(spec.validate(), Err(SpecError::EnvName { .. })));
        let mut spec = Spec::new("/b");
        spec.hostname = "a".repeat(65);
        assert!(matches!(spec.validate(), Err(SpecError::Hostname { .. })));
        let mut spec = Spec::new("/b");
        spec.time_limit_ms = Some(0);
        assert_eq!(
            spec.validate(),
            Err(SpecError::ZeroLimit {
                field: "time_limit_ms"
            })
        );
        let mut spec = Spec::new("/b");
        spec.process_limit = Some(0);
        assert_eq!(
            spec.validate(),
            Err(SpecError::ZeroLimit {
                field: "process_limit"
            })
        );
        let mut spec = Spec::new("/b");
        spec.args.push("a\0b".into());
        assert!(matches!(spec.validate(), Err(SpecError::Nul { .. })));
    }
}
