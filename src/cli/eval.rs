//! `bramble eval <ref>…`: evaluate references and print the derivation graph a build would
//! run, without building anything (`--json`: the canonical JSON of [`Evaluation`]).

use std::fmt::Write as _;
use std::process::ExitCode;

use super::context::find_project;
use super::terminal::print_to_stderr;
use super::{CliError, Context};
use crate::project::{self, Evaluation, MemorySources};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// `./path:function`, `./path`, `./...` or `<module>/sub:function`.
    #[arg(required = true)]
    pub references: Vec<String>,
    /// Print the evaluation as canonical JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let _ = ctx;
    let (cwd, project) = find_project(None)?;
    let mut evaluation = project::evaluate(
        &project,
        &cwd,
        &args.references,
        &MemorySources::default(),
        &print_to_stderr,
    )?;
    // What a build would run: with bramble.lock's pins in the fetch derivations.
    project::lock::pin(&mut evaluation, &project.root)?;
    let text = if args.json {
        evaluation.to_json() + "\n"
    } else {
        human(&evaluation)
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn human(e: &Evaluation) -> String {
    let mut out = String::new();
    for (hash, drv) in &e.derivations {
        let _ = writeln!(out, "{hash} {}", drv.name);
        let _ = writeln!(out, "  builder  {}", drv.builder);
        for arg in &drv.args {
            let _ = writeln!(out, "  arg      {arg}");
        }
        for (k, v) in &drv.env {
            let _ = writeln!(out, "  env      {k}={v}");
        }
        if let Some(s) = &drv.sources {
            let _ = writeln!(out, "  sources  {} ({} files)", s.path, s.files.len());
        }
        let _ = writeln!(out, "  outputs  {}", drv.outputs.join(" "));
    }
    for root in &e.roots {
        let what: Vec<String> = root.derivations.iter().map(|h| h.to_string()).collect();
        match &root.run {
            Some(run) => {
                let _ = writeln!(
                    out,
                    "root {} -> run {} {}",
                    root.reference, run.derivation, run.cmd
                );
            }
            None => {
                let _ = writeln!(out, "root {} -> {}", root.reference, what.join(" "));
            }
        }
    }
    for test in &e.tests {
        let _ = writeln!(out, "test {} {}", test.location, test.derivation);
    }
    out
}
