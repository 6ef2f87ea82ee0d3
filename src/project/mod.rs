//! Projects: `bramble.toml`, references on the command line, and turning the derivation
//! values of an evaluation into the store derivations the build engine consumes.
//!
//! - A project is the nearest directory at or above the working directory holding a
//!   `bramble.toml`, whose `[package]` table has a `name` (the module name other code
//!   `load()`s it by) and an optional `version`, and whose optional `[mirrors]` table names
//!   the base URLs of `mirror://` URLs for this project (`name = "url"` or
//!   `name = ["url", ...]`, see [`crate::engine::fetch::mirror`]); any other key is an error.
//! - References: `./path:function`, `./path` (every public function of that module callable
//!   without arguments), `./...` or `./dir/...` (every module below), and
//!   `<module name>/sub:function` (also with `/...`). `./path` names `path.bramble` or
//!   `path/default.bramble`, like `load()`.
//! - [`evaluate`] runs on a dedicated thread with a large native stack, so deep Starlark
//!   recursion ends in Starlark's own call-depth error, never in a native stack overflow.
//! - Sources are added to the store during evaluation through a [`SourceSink`] (the hash of a
//!   derivation depends on its source object's address): [`StoreSources`] adds them to a
//!   `LocalStore`, [`MemorySources`] computes the same address without writing anything.

pub mod lock;
pub mod reference;
pub mod sources;
pub mod stdlib;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

pub use reference::{Reference, Target};
pub use sources::{MemorySources, SourceSink, StoreSources};

use crate::config::{Layer, Origin};
use crate::lang::{self, Library, Options, Returned, RunSpec, Session, TestSpec};
use crate::store::{Derivation, Hash, host_platform};

/// The manifest file name.
pub const MANIFEST: &str = "bramble.toml";

/// Native stack size of the evaluation thread.
const EVAL_STACK_BYTES: usize = 512 << 20;

/// Why a project could not be found, read or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no `bramble.toml` found in `{start}` or any parent directory")]
    NoManifest { start: String },
    #[error("cannot read `{path}`")]
    ReadManifest {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid `{path}`: {message}")]
    BadManifest { path: String, message: String },
    #[error("invalid reference `{reference}`: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("no `.bramble` files below `{dir}`")]
    NoModules { dir: String },
    #[error(transparent)]
    Lang(#[from] lang::Error),
    #[error(
        "derivation `{name}` refers to `{template}`, which no derivation of this evaluation produces"
    )]
    UnknownDependency { name: String, template: String },
    #[error("the evaluation thread failed: {message}")]
    Thread { message: String },
}

impl crate::error::Diagnose for Error {
    fn class(&self) -> crate::error::Class {
        match self {
            Error::Lang(e) => e.class(),
            Error::Thread { .. } => crate::error::Class::Internal,
            _ => crate::error::Class::User,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Error::NoManifest { .. } => Some(
                "create a `bramble.toml` at the project root with `[package]` and `name = \"github.com/you/project\"`".into(),
            ),
            Error::Lang(e) => e.hint(),
            _ => None,
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    package: Package,
    #[serde(default)]
    mirrors: Option<crate::config::MirrorTable>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Package {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

/// A project: its root and `[package]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Absolute, canonical directory holding `bramble.toml`.
    pub root: PathBuf,
    /// The module name, e.g. `github.com/me/proj`.
    pub name: String,
    pub version: Option<String>,
    /// Its `[mirrors]` table, if it has one.
    pub mirrors: Option<Layer>,
}

impl Project {
    /// Find the project containing `start` by walking up to a `bramble.toml`.
    pub fn find(start: &Path) -> Result<Project, Error> {
        let start = std::fs::canonicalize(start).map_err(|source| Error::ReadManifest {
            path: start.display().to_string(),
            source,
        })?;
        let mut dir = start.as_path();
        loop {
            let manifest = dir.join(MANIFEST);
            // Anything named `bramble.toml` (a fifo or symlink too) is this project's, and
            // `load` refuses what is not a regular file.
            if manifest.symlink_metadata().is_ok() {
                return Project::load(dir);
            }
            match dir.parent() {
                Some(parent) => dir = parent,
                None => {
                    return Err(Error::NoManifest {
                        start: start.display().to_string(),
                    });
                }
            }
        }
    }

    /// Read `root/bramble.toml`.
    pub fn load(root: &Path) -> Result<Project, Error> {
        let path = root.join(MANIFEST);
        let shown = path.display().to_string();
        let text = read_config(&path).map_err(|source| Error::ReadManifest {
            path: shown.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| Error::BadManifest {
            path: shown.clone(),
            message: e.message().to_owned()
                + &e.span()
                    .map(|s| {
                        let line = text[..s.start].matches('\n').count() + 1;
                        format!(" (line {line})")
                    })
                    .unwrap_or_default(),
        })?;
        let name = manifest.package.name;
        let valid = !name.is_empty()
            && !name.starts_with('/')
            && !name.ends_with('/')
            && name
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
            && !name.contains(['\\', ':', '"', ' ']);
        if !valid {
            return Err(Error::BadManifest {
                path: shown,
                message: format!(
                    "package name `{name}` is not a module path (e.g. `github.com/me/project`)"
                ),
            });
        }
        let mirrors = manifest
            .mirrors
            .map(|t| t.to_layer(Origin::Project(path.clone())))
            .transpose()
            .map_err(|message| Error::BadManifest {
                path: shown,
                message,
            })?;
        Ok(Project {
            root: root.to_path_buf(),
            name,
            version: manifest.package.version,
            mirrors,
        })
    }

    /// The options a [`Session`] needs for this project.
    pub fn options(&self) -> Options {
        Options {
            root: self.root.clone(),
            package: self.name.clone(),
            libraries: stdlib::standard_library()
                .into_iter()
                .collect::<Vec<Library>>(),
            platform: host_platform(),
        }
    }
}

/// Read a configuration file bramble trusts (`bramble.toml`, `bramble.lock`): a regular
/// file only, read through [`crate::config::read_regular_file`] (`O_NOFOLLOW | O_NONBLOCK`,
/// so a symbolic link is refused and a fifo never blocks), as an I/O error.
pub fn read_config(path: &Path) -> std::io::Result<String> {
    use crate::config::ConfigError;
    use std::io::{Error, ErrorKind};
    match crate::config::read_regular_file(path, false) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(Error::from_raw_os_error(libc::ENOENT)),
        Err(ConfigError::Read { source, .. }) => Err(source),
        Err(ConfigError::NotRegular { what, .. }) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it is {what}: bramble reads only a regular file here"),
        )),
        Err(e) => Err(Error::new(ErrorKind::InvalidData, e.to_string())),
    }
}

/// One requested function and what it returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Root {
    /// `<file relative to the project>:<function>`.
    pub reference: String,
    /// The derivations it returned (empty for a `run()` value or `None`).
    pub derivations: Vec<Hash>,
    /// The `run()` value it returned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSpec>,
}

/// The result of evaluating references: what the build engine consumes.
///
/// `derivations` is closed: every template in any of them names an output of another
/// derivation in the map. Hashes are the store derivation hashes (DESIGN §2).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Evaluation {
    pub derivations: BTreeMap<Hash, Derivation>,
    /// Requested functions, in the order the references named them.
    pub roots: Vec<Root>,
    /// Tests registered while evaluating them.
    pub tests: Vec<TestSpec>,
}

impl Evaluation {
    /// Every `run()` value among the roots.
    pub fn runs(&self) -> impl Iterator<Item = &RunSpec> {
        self.roots.iter().filter_map(|r| r.run.as_ref())
    }

    /// Canonical JSON (sorted keys, compact).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an evaluation always serialises")
    }
}

/// Evaluate `references` (relative to `cwd`) in `project`, on a thread with a large stack.
pub fn evaluate(
    project: &Project,
    cwd: &Path,
    references: &[String],
    sink: &(dyn SourceSink + Sync),
    printer: &(dyn Fn(&str) + Sync),
) -> Result<Evaluation, Error> {
    run_on_big_stack(|| {
        let session = Session::new(project.options(), sink, printer);
        let mut targets = Vec::new();
        for r in references {
            let reference = Reference::parse(r)?;
            targets.extend(reference.targets(project, cwd, &session)?);
        }
        evaluate_targets(&session, &targets)
    })
}

/// Run `f` on a fresh thread with [`EVAL_STACK_BYTES`] of native stack.
pub fn run_on_big_stack<T: Send>(f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("bramble-eval".into())
            .stack_size(EVAL_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| Error::Thread {
                message: e.to_string(),
            })?;
        handle.join().map_err(|p| Error::Thread {
            message: p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into()),
        })?
    })
}

/// Call every target and collect the closed derivation graph.
pub fn evaluate_targets(session: &Session, targets: &[Target]) -> Result<Evaluation, Error> {
    let mut roots = Vec::new();
    for target in targets {
        let returned = session.call_function(&target.file, &target.function)?;
        let reference = format!("{}:{}", session.display_name(&target.file), target.function);
        roots.push(match returned {
            Returned::Nothing => Root {
                reference,
                derivations: Vec::new(),
                run: None,
            },
            Returned::Derivations(d) => Root {
                reference,
                derivations: d.iter().map(|n| n.hash).collect(),
                run: None,
            },
            Returned::Run(spec) => Root {
                reference,
                derivations: Vec::new(),
                run: Some(spec),
            },
        });
    }
    let tests = session.tests();
    let start: Vec<Hash> = roots
        .iter()
        .flat_map(|r| {
            r.derivations
                .iter()
                .copied()
                .chain(r.run.iter().map(|s| s.derivation))
        })
        .chain(tests.iter().map(|t| t.derivation))
        .collect();
    let derivations = closure(session, start)?;
    Ok(Evaluation {
        derivations,
        roots,
        tests,
    })
}

/// Every derivation reachable from `start` through templates.
fn closure(session: &Session, start: Vec<Hash>) -> Result<BTreeMap<Hash, Derivation>, Error> {
    let registry = session.registry.borrow();
    let registry = &registry.derivations;
    let mut out = BTreeMap::new();
    let mut seen: BTreeSet<Hash> = start.iter().copied().collect();
    let mut queue: VecDeque<Hash> = start.into();
    while let Some(hash) = queue.pop_front() {
        let node = &registry[&hash];
        for dep in &node.dependencies {
            let known = registry
                .get(&dep.drv)
                .is_some_and(|d| d.drv.outputs.contains(&dep.output));
            if !known {
                return Err(Error::UnknownDependency {
                    name: node.drv.name.clone(),
                    template: dep.template(),
                });
            }
            if seen.insert(dep.drv) {
                queue.push_back(dep.drv);
            }
        }
        out.insert(hash, node.drv.clone());
    }
    Ok(out)
}
