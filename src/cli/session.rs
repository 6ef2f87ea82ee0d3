//! What the building commands share: opening the store, finding the sandbox helper, running
//! the scheduler on a tokio runtime with Ctrl-C / SIGTERM wired to cancellation, and
//! rendering build failures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::fetch::executor::WithFetchers;
use crate::engine::fetch::mirror::Layer;
use crate::engine::fetch::{Fetcher, Mirrors};
use crate::engine::sandbox::{SandboxConfig, SandboxExecutor};
use crate::engine::{
    self, BuildGraph, BuildOptions, BuildReport, Cancel, Engine, ExecError, FailureKind, Job, Plan,
};
use crate::store::local::LocalStore;
use crate::store::{Derivation, Hash, OutputRef, StorePath, Templates};

use super::progress::Progress;
use super::{CliError, Context};

/// Derivations to build: every derivation a root may need, and the roots.
#[derive(Debug, Default)]
pub struct Request {
    pub derivations: HashMap<Hash, Arc<Derivation>>,
    pub roots: Vec<Hash>,
    /// Templates already found, by derivation hash (any subset of `derivations`; the graph
    /// parses the others): spares parsing every template twice.
    pub templates: HashMap<Hash, Arc<Templates>>,
}

/// The store and the sandbox helper every building command uses.
#[derive(Debug)]
pub struct Session {
    pub store: Arc<LocalStore>,
    pub helper: PathBuf,
    /// Runs the fetch derivations (in this process: they are the only builds with network).
    pub fetcher: Fetcher,
    /// The lock-file pins of the last evaluation; a build records its unpinned fetches.
    pub pins: std::sync::Mutex<Option<super::lockfile::Pins>>,
    /// The mirror configuration: the environment's, the user's and the apt sources, plus the
    /// `[mirrors]` of the project of the last evaluation.
    pub mirrors: std::sync::Mutex<Arc<Mirrors>>,
}

impl Session {
    /// Open the store (`$BRAMBLE_HOME` or the default) and find the helper.
    pub fn open(_ctx: &Context) -> Result<Session, CliError> {
        let store = Arc::new(LocalStore::open_default().map_err(store_error)?);
        let mirrors = Arc::new(load_mirrors()?);
        let mut fetcher = Fetcher::new(store.clone());
        fetcher.mirrors = mirrors.clone();
        Ok(Session {
            fetcher,
            store,
            helper: sandbox_helper()?,
            pins: std::sync::Mutex::new(None),
            mirrors: std::sync::Mutex::new(mirrors),
        })
    }

    /// Add the `[mirrors]` of `project` to the mirror configuration.
    pub fn use_project_mirrors(&self, project: &crate::project::Project) {
        let mut mirrors = self.mirrors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(layer) = &project.mirrors {
            *mirrors = Arc::new(self.fetcher.mirrors.with_layer(layer.clone()));
        }
    }

    /// Build `request` in sandboxes, with progress on stderr (none if `quiet`).
    pub fn build(
        &self,
        request: &Request,
        options: &BuildOptions,
        config: SandboxConfig,
        quiet: bool,
    ) -> Result<BuildReport, CliError> {
        let executor = Arc::new(WithFetchers {
            inner: SandboxExecutor::new(config, self.store.clone()),
            fetcher: {
                let mut f = self.fetcher.clone();
                f.mirrors = self
                    .mirrors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if !quiet {
                    f.progress = Arc::new(super::fetch::Lines::default());
                }
                f
            },
        });
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut options = options.clone();
        if let Some(pins) = &pins {
            options.dao_graphs = pins.dao_graphs.clone();
        }
        let report = run_build(self.store.clone(), executor, request, &options, quiet);
        // Record what was fetched and generated even when the build failed later.
        if let Some(pins) = pins {
            let records = self
                .fetcher
                .records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let splices = report.as_ref().map_or(&[][..], |r| &r.splices[..]);
            super::lockfile::record(&pins, &records, splices, &self.store)?;
        }
        report
    }

    /// Build everything derivation `root` of `request` needs and return it as a resolved job
    /// whose inputs are its input closure (for `shell`).
    pub fn prepare_root(
        &self,
        request: &Request,
        root: Hash,
        options: &BuildOptions,
        config: SandboxConfig,
    ) -> Result<Job, CliError> {
        let drv = request
            .derivations
            .get(&root)
            .ok_or_else(|| {
                CliError::internal(format!("derivation `{root}` is not in the request"))
            })?
            .clone();
        let deps = drv
            .dependencies()
            .map_err(|e| CliError::user(e.to_string()))?;
        let mut dep_roots: Vec<Hash> = deps.iter().map(|r| r.drv).collect();
        dep_roots.dedup();
        let inputs_request = Request {
            derivations: request.derivations.clone(),
            roots: dep_roots,
            templates: HashMap::new(),
        };
        let report = self.build(&inputs_request, options, config, false)?;
        explain_failures(&report)?;
        let mut realised: HashMap<OutputRef, StorePath> = HashMap::new();
        for r in &report.roots {
            for (output, path) in r.outputs.iter().flatten() {
                let reference = OutputRef {
                    drv: r.drv,
                    output: output.clone(),
                };
                realised.insert(reference, path.clone());
            }
        }
        let resolved = drv
            .resolve(|r| realised.get(r).cloned())
            .map_err(|e| CliError::user(e.to_string()))?;
        let direct: Vec<StorePath> = realised.into_values().collect();
        let closure = self.store.closure(&direct).map_err(store_error)?;
        Ok(Job {
            drv_hash: root,
            build_key: resolved.hash(),
            drv: Arc::new(resolved),
            inputs: closure,
        })
    }

    /// The graph of `request` with every DAO realised in the store spliced in, building
    /// nothing (for `graph` and `--dry-run`).
    pub fn expand(&self, request: &Request) -> Result<engine::GraphView, CliError> {
        let graph = graph(request)?;
        let mut options = BuildOptions::default();
        if let Some(pins) = self.pins.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            options.dao_graphs = pins.dao_graphs.clone();
        }
        let cancel = Cancel::new();
        block_on(&cancel, engine::expand(self.store.clone(), graph, &options))
            .map_err(|e| CliError::environment(e.to_string()))
    }

    pub fn plan(&self, request: &Request) -> Result<Plan, CliError> {
        plan(&*self.store, request)
    }

    /// Where a store path is on the host.
    pub fn host_path(&self, path: &StorePath) -> PathBuf {
        self.store.host_path(path)
    }

    /// Point the symlink `link` at `path` (replacing an older link atomically) and register
    /// it as an indirect gc root.
    pub fn add_result_link(&self, link: &Path, path: &StorePath) -> Result<(), CliError> {
        let target = self.host_path(path);
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
        self.store.add_indirect_root(link).map_err(store_error)?;
        Ok(())
    }
}

pub(crate) use super::store::store_error;

/// The mirror configuration of this run without a project's: `BRAMBLE_MIRROR_*`, the
/// user's config file and the apt sources below `$BRAMBLE_APT_ROOT` (default `/`).
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

/// The `bramble-sandbox` helper: `$BRAMBLE_SANDBOX`, else next to the running binary.
pub fn sandbox_helper() -> Result<PathBuf, CliError> {
    if let Some(path) = std::env::var_os(crate::env::BRAMBLE_SANDBOX) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::environment(format!("cannot find the running executable: {e}")))?;
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

/// Print every failure of `report` (with the log tail and how to see the whole log) and
/// return the error that decides the exit code; `Ok` if there was none.
pub fn explain_failures(report: &BuildReport) -> Result<(), CliError> {
    if report.success() {
        return Ok(());
    }
    for failure in &report.failures {
        let what = format!(
            "building `{}` failed: {}",
            failure.name,
            crate::error::chain(&failure.kind)
        );
        eprintln!("error: {}", super::terminal::sanitise(&what));
        match &failure.kind {
            FailureKind::Exec(
                ExecError::Failed {
                    log_tail,
                    kept,
                    hint,
                    ..
                }
                | ExecError::Sandbox {
                    log_tail,
                    kept,
                    hint,
                    ..
                },
            ) => {
                if let Some(hint) = hint {
                    eprintln!("hint: {hint}");
                }
                if !log_tail.is_empty() {
                    eprintln!("last {} log lines:", log_tail.len());
                    for line in log_tail {
                        eprintln!("  > {}", super::terminal::sanitise(line));
                    }
                }
                eprintln!("hint: the whole log: `bramble log {}`", failure.drv);
                if let Some(kept) = kept {
                    eprintln!("note: the build directory was kept at `{}`", kept.display());
                }
            }
            kind => {
                if let Some(hint) = crate::error::Diagnose::hint(kind) {
                    eprintln!("hint: {hint}");
                }
            }
        }
    }
    Err(super::build::failure_error(report))
}

/// A graph for `request`, with errors worded for the user.
pub fn graph(request: &Request) -> Result<BuildGraph, CliError> {
    BuildGraph::with_templates(&request.derivations, &request.templates, &request.roots)
        .map_err(|e| CliError::user(e.to_string()))
}

/// What `--dry-run` prints.
pub fn plan<S: engine::BuildStore>(store: &S, request: &Request) -> Result<Plan, CliError> {
    engine::plan(store, &graph(request)?).map_err(|e| CliError::environment(e.to_string()))
}

/// Run a build to completion with the CLI's progress display.
pub fn run_build<S: engine::BuildStore, E: engine::Executor>(
    store: Arc<S>,
    executor: Arc<E>,
    request: &Request,
    options: &BuildOptions,
    quiet: bool,
) -> Result<BuildReport, CliError> {
    let graph = graph(request)?;
    let progress = Arc::new(Progress::new(quiet));
    let engine = Engine {
        store,
        executor,
        reporter: progress.clone(),
    };
    let cancel = Cancel::new();
    let report = block_on(
        &cancel,
        engine::run(&engine, graph, options, cancel.clone()),
    );
    progress.finish();
    report.map_err(|e| CliError::environment(e.to_string()))
}

/// A host path for a store path under `store_dir`.
pub fn host_path(store_dir: &Path, path: &StorePath) -> PathBuf {
    store_dir.join(path.to_string())
}

/// The result of evaluating references in the current project.
#[derive(Debug)]
pub struct Evaluated {
    pub evaluation: crate::project::Evaluation,
    pub project_root: PathBuf,
    pub cwd: PathBuf,
}

impl Evaluated {
    /// Every derivation of the evaluation, with the requested derivations as roots (in
    /// reference order) followed by those of `run()` values.
    pub fn request(&self) -> Request {
        let derivations = self
            .evaluation
            .derivations
            .iter()
            .map(|(hash, drv)| (*hash, Arc::new(drv.clone())))
            .collect();
        let mut roots: Vec<Hash> = Vec::new();
        let wanted = self.evaluation.roots.iter().flat_map(|root| {
            root.derivations
                .iter()
                .copied()
                .chain(root.run.as_ref().map(|r| r.derivation))
        });
        for hash in wanted {
            if !roots.contains(&hash) {
                roots.push(hash);
            }
        }
        Request {
            derivations,
            roots,
            templates: HashMap::new(),
        }
    }
}

/// Evaluate references (relative to the working directory) in the project containing it,
/// adding sources to the store. Starlark `print()` goes to stderr.
pub fn evaluate(session: &Session, refs: &[String]) -> Result<Evaluated, CliError> {
    let (cwd, project) = super::project_ctx::find(None)?;
    let sink = crate::project::StoreSources {
        store: &session.store,
    };
    // `print()` of `.bramble` files: text others may have written.
    let printer = |line: &str| eprintln!("{}", super::terminal::sanitise(line));
    let evaluation = crate::project::evaluate(&project, &cwd, refs, &sink, &printer)?;
    // bramble.lock's pins become part of the fetch derivations (and so of every build key
    // that depends on them); the build records what was pinned nowhere.
    let (evaluation, pins) = super::lockfile::pin(evaluation, &project.root)?;
    session.use_project_mirrors(&project);
    *session.pins.lock().unwrap_or_else(|e| e.into_inner()) = Some(pins);
    Ok(Evaluated {
        evaluation,
        project_root: project.root,
        cwd,
    })
}

/// Evaluate `.bramble` references into a build request and the project directory.
pub fn evaluate_refs(session: &Session, refs: &[String]) -> Result<(Request, PathBuf), CliError> {
    if refs.is_empty() {
        return Err(
            CliError::user("nothing to build: name at least one reference")
                .with_hint("e.g. `bramble build ./:hello` or `bramble build ./...`"),
        );
    }
    let evaluated = evaluate(session, refs)?;
    Ok((evaluated.request(), evaluated.project_root))
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
