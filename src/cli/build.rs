//! `bramble build <ref>…`: build derivations and print their output paths.
//!
//! Stdout gets one host path per output of each requested root (or, with `--json`, one JSON
//! document); progress and errors go to stderr. Each output also gets a `result` link in the
//! project directory (`result`, `result-<output>`, `result-2`… for further roots, as
//! `nix-build` names them; `--out-link` changes the base name, `--no-out-link` skips them),
//! registered as a gc root.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::engine::BuildReport;
use crate::store::{Derivation, DerivationError, Hash, Templates};

use super::context::{self, Request};
use super::flags::{BuildFlags, locked};
use super::{CliError, Context};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// What to build: `<path-or-module>:<function>` or `<path>/...`
    #[arg(value_name = "REF")]
    pub refs: Vec<String>,
    #[command(flatten)]
    pub flags: BuildFlags,
    /// Show what would be built and what is already in the store, build nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Rebuild the requested derivations and compare with the stored outputs
    #[arg(long)]
    pub check: bool,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Base name of the result links [default: `result` in the project directory]
    #[arg(short = 'o', long, value_name = "PATH")]
    pub out_link: Option<PathBuf>,
    /// Create no result links
    #[arg(long, conflicts_with = "out_link")]
    pub no_out_link: bool,
    /// Refuse fetches not pinned and DAO graphs not recorded in `bramble.lock` (also when
    /// CI=true)
    #[arg(long)]
    pub locked: bool,
    /// Build the derivations of a JSON file (`{"derivations": […], "roots": [<hash>…]}`)
    #[arg(long, hide = true, value_name = "FILE")]
    pub derivations: Option<PathBuf>,
}

pub fn run(args: BuildArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let (request, project_dir) = match &args.derivations {
        Some(file) => (
            read_derivations_file(file)?,
            std::env::current_dir().map_err(|e| {
                CliError::environment(format!("cannot read the current directory: {e}"))
            })?,
        ),
        None => ctx.evaluate_refs(&args.refs)?,
    };
    if locked(args.locked) {
        context::require_pinned(&request)?;
    }
    if args.dry_run {
        return dry_run(ctx, &request);
    }
    let mut options = args.flags.options()?;
    options.check = args.check;
    options.dao_locked = args.derivations.is_none() && locked(args.locked);
    let config = args.flags.sandbox(&ctx.helper()?)?;
    let report = ctx.build(&request, &options, config, false)?;
    if !args.check && !args.no_out_link {
        let base = args
            .out_link
            .clone()
            .unwrap_or_else(|| project_dir.join("result"));
        link_results(ctx, &report, &base)?;
    }
    print_results(ctx, &report, args.json)?;
    super::report::explain_failures(&report)?;
    // The process exits next: freeing every derivation of a large graph one by one costs
    // more than a tenth of a no-op build of 10,000 derivations, and the kernel reclaims it
    // all at once.
    std::mem::forget(request);
    std::mem::forget(report);
    Ok(ExitCode::SUCCESS)
}

/// The JSON input of the hidden `--derivations` flag.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DerivationsFile {
    derivations: Vec<Derivation>,
    /// Hashes of the roots; default: every derivation no other one depends on.
    #[serde(default)]
    roots: Option<Vec<Hash>>,
}

pub fn read_derivations_file(path: &Path) -> Result<Request, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::user(format!("cannot read `{}`: {e}", path.display())))?;
    let file: DerivationsFile = serde_json::from_slice(&bytes)
        .map_err(|e| CliError::user(format!("`{}`: {e}", path.display())))?;
    drop(bytes);
    let mut derivations = HashMap::with_capacity(file.derivations.len());
    let mut order = Vec::with_capacity(file.derivations.len());
    // Templates are parsed once here: validation returns them, with the dependencies the
    // default roots need; the build resolves from them.
    let mut used = std::collections::HashSet::new();
    let mut templates = HashMap::with_capacity(file.derivations.len());
    let checked = validate_and_hash(&file.derivations);
    for (drv, checked) in file.derivations.into_iter().zip(checked) {
        let (found, hash) =
            checked.map_err(|e| CliError::user(format!("`{}`: {e}", path.display())))?;
        if file.roots.is_none() {
            used.extend(found.dependencies().iter().map(|r| r.drv));
        }
        order.push(hash);
        derivations.insert(hash, Arc::new(drv));
        templates.insert(hash, Arc::new(found));
    }
    let roots = match file.roots {
        Some(roots) => roots,
        None => order.into_iter().filter(|h| !used.contains(h)).collect(),
    };
    Ok(Request {
        derivations,
        roots,
        templates,
        ..Request::default()
    })
}

/// Each derivation's templates (validated) and hash, in order: pure work on every derivation
/// of the file, spread over the cores for large files (a no-op rebuild of 10,000 derivations
/// is mostly this and the build keys).
fn validate_and_hash(
    derivations: &[Derivation],
) -> Vec<Result<(Templates, Hash), DerivationError>> {
    let one = |drv: &Derivation| drv.validate_templates().map(|t| (t, drv.hash()));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads < 2 || derivations.len() < 2_000 {
        return derivations.iter().map(one).collect();
    }
    let chunk = derivations.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = derivations
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("validating a derivation does not panic"))
            .collect()
    })
}

fn dry_run(ctx: &Context, request: &Request) -> Result<ExitCode, CliError> {
    let plan = ctx.plan(request)?;
    if plan.to_build.is_empty() {
        eprintln!(
            "nothing to build: {} derivations in the store",
            plan.cached.len()
        );
    } else {
        eprintln!("these {} derivations would be built:", plan.to_build.len());
        for (hash, name) in &plan.to_build {
            println!("{hash} {name}");
        }
        eprintln!("{} derivations are already in the store", plan.cached.len());
    }
    for (_, name) in &plan.not_generated {
        eprintln!("note: DAO `{name}` has not run yet: what it generates is not known");
    }
    Ok(ExitCode::SUCCESS)
}

/// `result`, `result-dev`, `result-2`, `result-2-dev`…: one link per output of each root.
fn link_name(base: &Path, root: usize, output: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    if root > 0 {
        name.push(format!("-{}", root + 1));
    }
    if output != "out" {
        name.push(format!("-{output}"));
    }
    PathBuf::from(name)
}

fn link_results(ctx: &Context, report: &BuildReport, base: &Path) -> Result<(), CliError> {
    for (i, root) in report.roots.iter().enumerate() {
        let Some(outputs) = &root.outputs else {
            continue;
        };
        for (output, path) in outputs {
            let link = link_name(base, i, output);
            ctx.add_result_link(&link, path)?;
        }
    }
    Ok(())
}

fn print_results(ctx: &Context, report: &BuildReport, json: bool) -> Result<(), CliError> {
    let store = ctx.store()?;
    if json {
        let roots: Vec<serde_json::Value> = report
            .roots
            .iter()
            .map(|root| {
                let outputs: BTreeMap<&String, serde_json::Value> = root
                    .outputs
                    .iter()
                    .flatten()
                    .map(|(name, path)| {
                        (
                            name,
                            serde_json::json!({
                                "store_path": path.to_string(),
                                "path": store.host_path(path),
                            }),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "name": root.name,
                    "drv": root.drv.to_string(),
                    "build_key": root.build_key.map(|k| k.to_string()),
                    "outputs": outputs,
                })
            })
            .collect();
        let daos: Vec<serde_json::Value> = report
            .splices
            .iter()
            .map(|s| {
                let derivations: Vec<serde_json::Value> = s
                    .derivations
                    .iter()
                    .map(|(drv, name)| serde_json::json!({"drv": drv.to_string(), "name": name}))
                    .collect();
                serde_json::json!({
                    "name": s.name,
                    "drv": s.dao.to_string(),
                    "document": store.host_path(&s.document),
                    "result": s.result.to_string(),
                    "graph": s.graph.to_string(),
                    "derivations": derivations,
                    "new": s.new,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "roots": roots,
            "built": report.built,
            "cached": report.cached,
            "daos": daos,
        });
        println!("{doc}");
    } else {
        for root in &report.roots {
            for path in root.outputs.iter().flat_map(|o| o.values()) {
                println!("{}", store.host_path(path).display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_link_names_follow_nix() {
        let base = Path::new("/p/result");
        assert_eq!(link_name(base, 0, "out"), Path::new("/p/result"));
        assert_eq!(link_name(base, 0, "dev"), Path::new("/p/result-dev"));
        assert_eq!(link_name(base, 1, "out"), Path::new("/p/result-2"));
        assert_eq!(link_name(base, 2, "lib"), Path::new("/p/result-3-lib"));
    }

    #[test]
    fn a_large_derivations_file_is_read_in_order_and_a_bad_entry_is_named() {
        // Over the size where validation is spread over threads.
        let leaves: Vec<Derivation> = (0..2_500)
            .map(|i| {
                let mut d = Derivation::new(format!("leaf-{i}"), "/bin/sh");
                d.args = vec!["-c".into(), format!("echo {i} > $out")];
                d
            })
            .collect();
        let mut root = Derivation::new("root", "/bin/sh");
        root.env.insert(
            "deps".into(),
            leaves
                .iter()
                .map(|d| d.output_ref("out").template())
                .collect::<Vec<_>>()
                .join(" "),
        );
        let mut all = leaves.clone();
        all.push(root.clone());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drvs.json");
        std::fs::write(&file, serde_json::json!({ "derivations": all }).to_string()).unwrap();
        let request = read_derivations_file(&file).unwrap();
        assert_eq!(request.derivations.len(), 2_501);
        assert_eq!(request.roots, [root.hash()]);
        assert_eq!(request.templates[&root.hash()].dependencies().len(), 2_500);
        assert_eq!(request.derivations[&leaves[1_700].hash()].name, "leaf-1700");

        all[1_700].builder = String::new();
        std::fs::write(&file, serde_json::json!({ "derivations": all }).to_string()).unwrap();
        let err = read_derivations_file(&file).unwrap_err();
        assert!(
            err.message.contains("leaf-1700") && err.message.contains("the builder is empty"),
            "{}",
            err.message
        );
    }
}
