//! What the commands share: [`Context`], the store, the sandbox helper and the mirror
//! configuration, each opened on first use; evaluating references into a build
//! [`Request`] with the project's lock applied; running the scheduler on a tokio runtime
//! with Ctrl-C / SIGTERM wired to cancellation, then recording in `bramble.lock` what the
//! build fetched and generated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::engine::fetch::executor::FetchingExecutor;
use crate::engine::fetch::mirror::Layer;
use crate::engine::fetch::{Fetcher, Mirrors};
use crate::engine::sandbox::{SandboxConfig, SandboxExecutor};
use crate::engine::{
    self, BuildGraph, BuildOptions, BuildReport, Cancel, Engine, Job, Plan, Reporter,
};
use crate::lang::{RunSpec, TestSpec};
use crate::project::lock::{self, LOCK_FILE, Pins};
use crate::project::{Evaluation, Project, Root};
use crate::store::local::LocalStore;
use crate::store::{Derivation, Hash, StorePath, Templates};

use super::CliError;
use super::progress::Progress;

/// Derivations to build: every derivation a root may need, the roots, and what the build
/// takes from the project they were evaluated in.
#[derive(Debug, Default, Clone)]
pub struct Request {
    pub derivations: HashMap<Hash, Arc<Derivation>>,
    pub roots: Vec<Hash>,
    /// Templates already found, by derivation hash (any subset of `derivations`; the graph
    /// parses the others): spares parsing every template twice.
    pub templates: HashMap<Hash, Arc<Templates>>,
    /// The lock as applied to the evaluation (none for a `--derivations` file): `--locked`
    /// checks it, and the build records what it pinned nowhere.
    pub pins: Option<Arc<Pins>>,
    /// The mirror configuration with the project's `[mirrors]` (none: the context's).
    pub mirrors: Option<Arc<Mirrors>>,
}

/// The store, the sandbox helper and the mirror configuration of this run, each opened on
/// first use (`bramble ls` needs none of them).
#[derive(Debug, Default)]
pub struct Context {
    store: OnceLock<Arc<LocalStore>>,
    mirrors: OnceLock<Arc<Mirrors>>,
}

impl Context {
    /// The store (`$BRAMBLE_HOME` or the default).
    pub fn store(&self) -> Result<&Arc<LocalStore>, CliError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = Arc::new(LocalStore::open_default()?);
        Ok(self.store.get_or_init(|| store))
    }

    /// The mirror configuration without a project's: `BRAMBLE_MIRROR_*`, the user's config
    /// file and the apt sources below `$BRAMBLE_APT_ROOT` (default `/`).
    pub fn mirrors(&self) -> Result<&Arc<Mirrors>, CliError> {
        if let Some(mirrors) = self.mirrors.get() {
            return Ok(mirrors);
        }
        let mirrors = Arc::new(load_mirrors()?);
        Ok(self.mirrors.get_or_init(|| mirrors))
    }

    /// The `bramble-sandbox` helper: `$BRAMBLE_SANDBOX`, else next to the running binary.
    pub fn helper(&self) -> Result<PathBuf, CliError> {
        if let Some(path) = std::env::var_os(crate::env::BRAMBLE_SANDBOX) {
            return Ok(PathBuf::from(path));
        }
        let exe = std::env::current_exe().map_err(|e| {
            CliError::environment(format!("cannot find the running executable: {e}"))
        })?;
        let helper = exe.with_file_name("bramble-sandbox");
        if !helper.exists() {
            return Err(CliError::environment(format!(
                "the sandbox helper `{}` does not exist",
                helper.display()
            ))
            .with_hint(format!(
                "install `bramble-sandbox` next to `bramble` or set {}",
                crate::env::BRAMBLE_SANDBOX
            )));
        }
        Ok(helper)
    }

    /// A fetcher for the store with `mirrors` (default: the context's).
    pub fn fetcher(&self, mirrors: Option<&Arc<Mirrors>>) -> Result<Fetcher, CliError> {
        let mut fetcher = Fetcher::new(self.store()?.clone());
        fetcher.mirrors = match mirrors {
            Some(m) => m.clone(),
            None => self.mirrors()?.clone(),
        };
        Ok(fetcher)
    }

    /// Evaluate references (relative to the working directory) in the project containing
    /// it, adding sources to the store, and apply the project's `bramble.lock`: its pins
    /// become part of the fetch derivations (and so of every build key that depends on
    /// them). Starlark `print()` goes to stderr.
    pub fn evaluate(&self, refs: &[String]) -> Result<Evaluated, CliError> {
        let (cwd, project) = find_project(None)?;
        let sink = crate::project::StoreSources {
            store: self.store()?,
        };
        // `print()` of `.bramble` files: text others may have written.
        let printer = |line: &str| eprintln!("{}", super::terminal::sanitise(line));
        let mut evaluation = crate::project::evaluate(&project, &cwd, refs, &sink, &printer)?;
        let pins = lock::pin(&mut evaluation, &project.root)?;
        let mirrors = match &project.mirrors {
            Some(layer) => Some(Arc::new(self.mirrors()?.with_layer(layer.clone()))),
            None => None,
        };
        Ok(Evaluated::new(
            evaluation,
            Arc::new(pins),
            mirrors,
            project.root,
            cwd,
        ))
    }

    /// Evaluate `.bramble` references into a build request and the project directory.
    pub fn evaluate_refs(&self, refs: &[String]) -> Result<(Request, PathBuf), CliError> {
        if refs.is_empty() {
            return Err(
                CliError::user("nothing to build: name at least one reference")
                    .with_hint("e.g. `bramble build ./:hello` or `bramble build ./...`"),
            );
        }
        let evaluated = self.evaluate(refs)?;
        Ok((evaluated.request, evaluated.project_root))
    }

    /// Build `request` in sandboxes, with progress on stderr (none if `quiet`), then record
    /// in `bramble.lock` what was fetched and generated, even when the build failed later.
    pub fn build(
        &self,
        request: &Request,
        options: &BuildOptions,
        config: SandboxConfig,
        quiet: bool,
    ) -> Result<BuildReport, CliError> {
        let store = self.store()?;
        let progress = Arc::new(Progress::new(quiet));
        let mut fetcher = self.fetcher(request.mirrors.as_ref())?;
        fetcher.progress = progress.clone();
        let executor = Arc::new(FetchingExecutor {
            inner: SandboxExecutor::new(config, store.clone()),
            fetcher,
        });
        let mut options = options.clone();
        if let Some(pins) = &request.pins {
            options.dao_graphs = pins.dao_graphs.clone();
        }
        let report = run_build(store.clone(), executor, request, &options, progress);
        if let (Some(pins), Ok(report)) = (&request.pins, &report) {
            record(pins, report, request, store)?;
        }
        report
    }

    /// Build everything derivation `root` of `request` needs and return it as a resolved job
    /// whose inputs are its input closure (for `shell` and `test`).
    pub fn prepare_root(
        &self,
        request: &Request,
        root: Hash,
        options: &BuildOptions,
        config: SandboxConfig,
    ) -> Result<Job, CliError> {
        engine::job::prepare_root(self.store()?, &request.derivations, root, |roots| {
            let inputs = Request {
                roots,
                templates: HashMap::new(),
                ..request.clone()
            };
            let report = self.build(&inputs, options, config, false)?;
            super::report::explain_failures(&report)?;
            Ok(report)
        })
    }

    /// The graph of `request` with every DAO realised in the store spliced in, building
    /// nothing (for `graph`).
    pub fn expand(&self, request: &Request) -> Result<engine::GraphView, CliError> {
        let graph = graph(request)?;
        let options = dry_options(request);
        let cancel = Cancel::new();
        block_on(
            &cancel,
            engine::expand(self.store()?.clone(), graph, &options),
        )
        .map_err(CliError::from)
    }

    /// What `--dry-run` prints: what a build of `request` would do, every DAO realised in the
    /// store spliced in.
    pub fn plan(&self, request: &Request) -> Result<Plan, CliError> {
        let graph = graph(request)?;
        let options = dry_options(request);
        let cancel = Cancel::new();
        block_on(
            &cancel,
            engine::plan(self.store()?.clone(), graph, &options),
        )
        .map_err(CliError::from)
    }

    /// Where a store path is on the host.
    pub fn host_path(&self, path: &StorePath) -> Result<PathBuf, CliError> {
        Ok(self.store()?.host_path(path))
    }

    /// Point the symlink `link` at `path` (replacing an older link atomically) and register
    /// it as an indirect gc root.
    pub fn add_result_link(&self, link: &Path, path: &StorePath) -> Result<(), CliError> {
        let target = self.host_path(path)?;
        let io = |e: std::io::Error| {
            CliError::environment(format!(
                "cannot create result link `{}`: {e}",
                link.display()
            ))
        };
        match std::fs::symlink_metadata(link) {
            Ok(meta) if !meta.file_type().is_symlink() => {
                return Err(CliError::user(format!(
                    "`{}` exists and is not a symlink: not replacing it with a result link",
                    link.display()
                ))
                .with_hint("remove it or choose another name with `--out-link`"));
            }
            _ => {}
        }
        crate::store::local::replace_symlink(&target, link).map_err(io)?;
        self.store()?.add_indirect_root(link)?;
        Ok(())
    }
}

/// Record what a build of a pinned evaluation fetched and generated, saying so on stderr.
fn record(
    pins: &Pins,
    report: &BuildReport,
    request: &Request,
    store: &LocalStore,
) -> Result<(), CliError> {
    let spliced: Vec<(Hash, String, Hash)> = report
        .splices
        .iter()
        .map(|s| (s.dao, s.name.clone(), s.graph))
        .collect();
    if pins.unpinned.is_empty() && spliced.is_empty() {
        return Ok(());
    }
    let graph = || {
        request
            .derivations
            .iter()
            .map(|(hash, drv)| (*hash, Derivation::clone(drv)))
            .collect()
    };
    let recorded = lock::record(pins, &report.fetches, &spliced, graph, store)?;
    for spec in &recorded.fetches {
        eprintln!("recorded hash of {spec} in {LOCK_FILE}");
    }
    for name in &recorded.daos {
        eprintln!("recorded the graph of DAO `{name}` in {LOCK_FILE}");
    }
    Ok(())
}

/// The working directory and the project containing it (or containing `start`).
pub fn find_project(start: Option<&Path>) -> Result<(PathBuf, Project), CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::environment(format!("cannot read the working directory: {e}")))?;
    let project = Project::find(start.unwrap_or(&cwd))?;
    Ok((cwd, project))
}

/// Refuse unpinned fetches (`--locked`).
pub fn require_pinned(request: &Request) -> Result<(), CliError> {
    match &request.pins {
        Some(pins) => Ok(lock::require_pinned(pins)?),
        None => Ok(()),
    }
}

/// The mirror configuration of this run without a project's.
pub fn load_mirrors() -> Result<Mirrors, CliError> {
    let user = crate::config::UserConfig::load()?;
    let mut layers = vec![Layer::from_env(std::env::vars())];
    layers.extend(user.mirrors);
    let apt_root = std::env::var_os(crate::env::BRAMBLE_APT_ROOT)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from);
    Ok(Mirrors::new(layers, Some(apt_root)).with_user_config_path(user.path))
}

/// How long running builds get to stop after a cancellation before the runtime goes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Run `future` on a fresh runtime with Ctrl-C and SIGTERM firing `cancel`.
pub fn block_on<T>(cancel: &Cancel, future: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be created");
    let result = runtime.block_on(async {
        let signals = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(term) => {
                        term.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminated => {}
            }
            signals.cancel();
        });
        future.await
    });
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// A graph for `request`, with errors worded for the user.
pub fn graph(request: &Request) -> Result<BuildGraph, CliError> {
    BuildGraph::with_templates(&request.derivations, &request.templates, &request.roots)
        .map_err(|e| CliError::user(e.to_string()))
}

/// The options of a graph walk that builds nothing: the DAO graphs the lock recorded.
fn dry_options(request: &Request) -> BuildOptions {
    let mut options = BuildOptions::default();
    if let Some(pins) = &request.pins {
        options.dao_graphs = pins.dao_graphs.clone();
    }
    options
}

/// Run a build to completion, reporting to `progress` (finished at the end).
pub fn run_build<S: engine::BuildStore, E: engine::Executor>(
    store: Arc<S>,
    executor: Arc<E>,
    request: &Request,
    options: &BuildOptions,
    progress: Arc<Progress>,
) -> Result<BuildReport, CliError> {
    let graph = graph(request)?;
    let parts = Engine {
        store,
        executor,
        reporter: progress.clone() as Arc<dyn Reporter>,
    };
    let cancel = Cancel::new();
    let report = block_on(&cancel, engine::run(&parts, graph, options, cancel.clone()));
    progress.finish();
    report.map_err(CliError::from)
}

/// References evaluated in the current project: the build request (every derivation, with
/// the requested ones and those of `run()` values as roots), and what else the commands
/// read.
#[derive(Debug)]
pub struct Evaluated {
    pub request: Request,
    /// The requested functions, in the order the references named them.
    pub roots: Vec<Root>,
    /// Tests registered while evaluating them.
    pub tests: Vec<TestSpec>,
    pub project_root: PathBuf,
    pub cwd: PathBuf,
}

impl Evaluated {
    /// Move the evaluation's derivations into a request (no copy of the graph).
    fn new(
        evaluation: Evaluation,
        pins: Arc<Pins>,
        mirrors: Option<Arc<Mirrors>>,
        project_root: PathBuf,
        cwd: PathBuf,
    ) -> Evaluated {
        let Evaluation {
            derivations,
            roots,
            tests,
        } = evaluation;
        let mut wanted: Vec<Hash> = Vec::new();
        let requested = roots.iter().flat_map(|root| {
            root.derivations
                .iter()
                .copied()
                .chain(root.run.as_ref().map(|r| r.derivation))
        });
        for hash in requested {
            if !wanted.contains(&hash) {
                wanted.push(hash);
            }
        }
        Evaluated {
            request: Request {
                derivations: derivations
                    .into_iter()
                    .map(|(hash, drv)| (hash, Arc::new(drv)))
                    .collect(),
                roots: wanted,
                templates: HashMap::new(),
                pins: Some(pins),
                mirrors,
            },
            roots,
            tests,
            project_root,
            cwd,
        }
    }

    /// Every `run()` value among the roots.
    pub fn runs(&self) -> impl Iterator<Item = &RunSpec> {
        self.roots.iter().filter_map(|r| r.run.as_ref())
    }
}

/// The exit code that passes a child's status through: its code, or 128 + signal.
pub fn exit_code(status: std::process::ExitStatus) -> std::process::ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
