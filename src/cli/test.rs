//! `bramble test [ref]`: run the tests registered with `test()`.
//!
//! A test names a derivation and extra arguments; it passes when that derivation's builder,
//! run with its own arguments followed by the test's, exits with 0 in the derivation's
//! sandboxed build environment (inputs built, sources in `/build`, `$out` writable; the
//! builder need not create its outputs). Tests are actions, not outputs: they run every time
//! and nothing they write is kept; each run's log is stored under the test derivation's hash
//! (`bramble log <hash>`). Without a reference every module of the project is evaluated
//! (`./...`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::engine::sandbox::SandboxExecutor;
use crate::engine::{Cancel, ExecError, Executor};

use super::flags::BuildFlags;
use super::{CliError, Context, context};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Where to look for tests [default: the whole project, `./...`]
    #[arg(value_name = "REF")]
    pub reference: Option<String>,
    #[command(flatten)]
    pub flags: BuildFlags,
}

pub fn run(args: TestArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let reference = args.reference.clone().unwrap_or_else(|| "./...".to_owned());
    let evaluated = ctx.evaluate(std::slice::from_ref(&reference))?;
    let tests = &evaluated.tests;
    if tests.is_empty() {
        eprintln!("no tests registered by `{reference}`");
        return Ok(ExitCode::SUCCESS);
    }
    let options = args.flags.options()?;
    let base = &evaluated.request;
    let helper = ctx.helper()?;
    let executor = SandboxExecutor::new(args.flags.sandbox(&helper)?, ctx.store()?.clone());
    let mut failed = 0;
    for test in tests {
        let drv = base.derivations.get(&test.derivation).ok_or_else(|| {
            CliError::internal(format!(
                "test derivation `{}` is not known",
                test.derivation
            ))
        })?;
        let mut variant = (**drv).clone();
        variant.args.extend(test.args.iter().cloned());
        let hash = variant.hash();
        let mut request = context::Request {
            roots: vec![hash],
            ..base.clone()
        };
        request.derivations.insert(hash, Arc::new(variant.clone()));
        let job = ctx.prepare_root(&request, hash, &options, args.flags.sandbox(&helper)?)?;
        let cancel = Cancel::new();
        let result = executor.prepare(&job).and_then(|prepared| {
            context::block_on(&cancel, executor.execute(job, prepared, cancel.clone()))
        });
        let label = format!("{} ({})", variant.name, test.location);
        match result {
            // Passing is exiting with 0; outputs do not matter for a test.
            Ok(_) | Err(ExecError::MissingOutput { .. }) => println!("pass {label}"),
            Err(ExecError::Cancelled) => {
                return Err(super::report::failure_error(&crate::engine::BuildReport {
                    cancelled: true,
                    ..Default::default()
                }));
            }
            Err(err) => {
                failed += 1;
                println!("FAIL {label}");
                let what = format!("test `{label}` failed: {err}");
                eprintln!("error: {}", super::terminal::sanitise(&what));
                if let ExecError::Failed { log_tail, .. } | ExecError::Sandbox { log_tail, .. } =
                    &err
                {
                    for line in log_tail {
                        eprintln!("  > {}", super::terminal::sanitise(line));
                    }
                    eprintln!("hint: the whole log: `bramble log {hash}`");
                }
            }
        }
    }
    let passed = tests.len() - failed;
    eprintln!("{passed} passed, {failed} failed");
    if failed > 0 {
        return Err(CliError::user(format!(
            "{failed} of {} tests failed",
            tests.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}
