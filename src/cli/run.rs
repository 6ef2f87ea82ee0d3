//! `bramble run <ref> [cmd args…]`: build, then run a program from the output in a sandbox.
//!
//! The reference returns either a `run()` value (its command, args, paths and network) or a
//! derivation (then the first extra argument is the command, relative to the output, and
//! the rest its arguments; with `run()` extra arguments are appended to its `args`). The
//! sandbox has the output's closure at `/bramble/store`, the project directory read-only at
//! its own path (the working directory, if inside it, stays the working directory),
//! `paths` read-write, `read_only_paths` read-only (they win over `paths`) and
//! `hidden_paths` replaced by empty directories, all relative to the project root unless
//! absolute. A missing `paths` or `read_only_paths` entry is an error; a missing hidden path
//! is skipped (nothing to hide). Only `network = True` shares the host network. Stdin,
//! stdout and stderr are this process's; the exit status is the program's.
//!
//! Version-control metadata ([`VCS_DIRS`]) is never writable: a `paths` entry inside it is
//! refused, and where it lies inside a writable path (up to [`VCS_SEARCH_DEPTH`] levels
//! below it) it is bound read-only over it. A program run from an output could otherwise
//! plant `.git/hooks/*`, which git later runs on the host as the user.
//!
//! Changed from the original behaviour, where the project directory was bound read-write:
//! a program that writes into the project must now ask for it with `paths`.
//!
//! A derivation built with a root view (`derivation(root = ...)`) runs in the same view: the
//! tree's `usr/` at `/usr`, `/bin` etc. linking into it, and `/usr/bin:/bin` at the end of
//! `PATH`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bramble_sandbox::Bind;
use clap::Args;

use crate::engine::sandbox::run_interactive;
use crate::engine::sandbox::spec::{self, Program};
use crate::lang::RunSpec;
use crate::store::STORE_DIR;

use super::context;
use super::flags::BuildFlags;
use super::{CliError, Context};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A reference returning `run()` or a derivation
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The command (for a derivation) or extra arguments (for `run()`)
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
    #[command(flatten)]
    pub flags: BuildFlags,
}

pub fn run(args: RunArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let evaluated = ctx.evaluate(std::slice::from_ref(&args.reference))?;
    let runs: Vec<&RunSpec> = evaluated.runs().collect();
    let (run, extra) = match (&runs[..], &evaluated.roots[..]) {
        ([run], _) => ((*run).clone(), args.args.clone()),
        ([], [root]) if root.derivations.len() == 1 => {
            let Some((cmd, rest)) = args.args.split_first() else {
                return Err(CliError::user(format!(
                    "`{}` is a derivation: name the command to run from its output",
                    args.reference
                ))
                .with_hint(format!("e.g. `bramble run {} bin/hello`", args.reference)));
            };
            let run = RunSpec {
                derivation: root.derivations[0],
                cmd: cmd.clone(),
                args: Vec::new(),
                paths: Vec::new(),
                read_only_paths: Vec::new(),
                hidden_paths: Vec::new(),
                network: false,
            };
            (run, rest.to_vec())
        }
        _ => {
            return Err(CliError::user(format!(
                "`{}` must return one `run()` value or one derivation",
                args.reference
            )));
        }
    };
    // The host paths are checked before building: a typo should not wait for a build.
    let mounts = project_mounts(&run, &evaluated.project_root)?;
    let mut request = evaluated.request.clone();
    // The root view the derivation was built in (`derivation(root = ...)`), built with it.
    let root_ref = request
        .derivations
        .get(&run.derivation)
        .and_then(|d| d.root.as_deref())
        .and_then(|r| crate::store::template::find(r).ok())
        .and_then(|found| found.into_iter().next().map(|(_, r)| r));
    request.roots = vec![run.derivation];
    request.roots.extend(root_ref.as_ref().map(|r| r.drv));
    let helper = ctx.helper()?;
    let report = ctx.build(
        &request,
        &args.flags.options()?,
        args.flags.sandbox(&helper)?,
        false,
    )?;
    super::report::explain_failures(&report)?;
    let outputs = report.roots[0]
        .outputs
        .clone()
        .ok_or_else(|| CliError::internal("a successful build has outputs"))?;
    // An empty directory bound over hidden paths inside read-only binds (a tmpfs cannot be
    // mounted there).
    let store = ctx.store()?;
    let empty = store.tmp_dir("run-empty")?;
    let root = match &root_ref {
        Some(r) => Some(
            report.roots[1]
                .outputs
                .as_ref()
                .and_then(|o| o.get(&r.output))
                .cloned()
                .ok_or_else(|| CliError::internal("the root view was built"))?,
        ),
        None => None,
    };
    let cwd = &evaluated.cwd;
    let program = Program {
        cmd: run.cmd.clone(),
        args: run.args.iter().chain(&extra).cloned().collect(),
        network: run.network,
        outputs,
        root,
        binds: mounts.binds,
        hidden: mounts.hidden,
        empty_dir: empty.path().to_path_buf(),
        cwd: if cwd.starts_with(&evaluated.project_root) {
            cwd.clone()
        } else {
            evaluated.project_root.clone()
        },
        term: std::env::var("TERM").ok(),
    };
    let spec = spec::program(store, &program)?;
    let scratch = store.tmp_dir("run")?;
    let status = run_interactive(&helper, &spec, scratch.path())?;
    Ok(context::exit_code(status))
}

/// Version-control metadata directories (or files, as in git worktrees): never writable.
pub const VCS_DIRS: [&str; 4] = [".git", ".hg", ".svn", ".jj"];

/// How deep below a writable path version-control metadata is looked for.
pub const VCS_SEARCH_DEPTH: usize = 4;

/// The host side of a `run()`: the project directory bound read-only, `paths` read-write,
/// `read_only_paths` read-only, version-control metadata read-only, and the `hidden_paths`
/// that exist (mounted over with empty directories).
#[derive(Debug, Default)]
struct Mounts {
    binds: Vec<Bind>,
    hidden: Vec<PathBuf>,
}

fn project_mounts(run: &RunSpec, project_root: &Path) -> Result<Mounts, CliError> {
    // `field` names the `run()` argument in errors.
    let resolve = |field: &str, p: &str| -> Result<PathBuf, CliError> {
        let path = project_root.join(p);
        let path = std::path::absolute(&path)
            .map_err(|e| CliError::user(format!("cannot resolve `{}`: {e}", path.display())))?
            // Normalised (`./` names the project root itself).
            .components()
            .collect::<PathBuf>();
        if path.starts_with(STORE_DIR) || path.starts_with("/proc") || path.starts_with("/dev") {
            return Err(CliError::user(format!(
                "`{field}` entry `{p}` of `run()` cannot be mapped into the sandbox"
            ))
            .with_hint(format!(
                "the sandbox has its own `/proc` and `/dev`, and `{STORE_DIR}` holds the output's \
                 closure, read-only"
            )));
        }
        Ok(path)
    };
    // Path → writable; read-only wins when a path is named twice.
    let mut binds: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for (field, entries, writable) in [
        ("paths", &run.paths, true),
        ("read_only_paths", &run.read_only_paths, false),
    ] {
        for p in entries {
            let path = resolve(field, p)?;
            if std::fs::symlink_metadata(&path).is_err() {
                return Err(CliError::user(format!(
                    "`{field}` entry `{p}` of `run()` does not exist: `{}`",
                    path.display()
                ))
                .with_hint(format!("create it, or remove it from `{field}`")));
            }
            if writable
                && path
                    .components()
                    .any(|c| VCS_DIRS.iter().any(|v| c.as_os_str() == *v))
            {
                return Err(CliError::user(format!(
                    "`paths` entry `{p}` of `run()` is version-control metadata, which a program \
                     run by bramble never writes"
                ))
                .with_hint("remove it from `paths`; it can be in `read_only_paths`"));
            }
            let entry = binds.entry(path).or_insert(writable);
            *entry &= writable;
        }
    }
    // The project itself, read-only unless `paths` names it.
    binds.entry(project_root.to_path_buf()).or_insert(false);
    // Version-control metadata inside a writable path, bound read-only over it.
    let writable: Vec<PathBuf> = binds
        .iter()
        .filter(|(_, w)| **w)
        .map(|(p, _)| p.clone())
        .collect();
    for dir in writable {
        for vcs in vcs_metadata(&dir) {
            binds.insert(vcs, false);
        }
    }
    // Parents before children, so that each bind lies over the one containing it.
    let mut ordered: Vec<(PathBuf, bool)> = binds.into_iter().collect();
    ordered.sort_by_key(|(p, _)| p.components().count());
    let mut mounts = Mounts {
        binds: ordered
            .into_iter()
            .map(|(path, writable)| Bind {
                source: path.clone(),
                target: path,
                writable,
            })
            .collect(),
        hidden: Vec::new(),
    };
    // A hidden path that does not exist has nothing to hide (and mounting over it would
    // create it in the project).
    for p in &run.hidden_paths {
        let path = resolve("hidden_paths", p)?;
        if std::fs::symlink_metadata(&path).is_ok() {
            mounts.hidden.push(path);
        }
    }
    Ok(mounts)
}

/// The version-control metadata at most [`VCS_SEARCH_DEPTH`] levels below `dir` (symbolic
/// links are not followed; unreadable directories are skipped).
fn vcs_metadata(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if VCS_DIRS.iter().any(|v| name == *v) {
                if !kind.is_symlink() {
                    found.push(entry.path());
                }
            } else if kind.is_dir() && depth + 1 < VCS_SEARCH_DEPTH {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    found
}
