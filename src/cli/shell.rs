//! `bramble shell <ref>`: a shell in a derivation's build environment.
//!
//! Its inputs are built, its sources are in `/build`, its environment (with `$out` and the
//! other output variables) is set, its input closure is mounted at `/bramble/store` — and a
//! shell runs instead of the builder, with this terminal's stdin, stdout and stderr. The
//! shell is the builder's `sh` if the builder is a busybox or a shell, else `bin/sh` from an
//! input. The build directory is removed when the shell exits; the shell's exit status is
//! bramble's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::engine::sandbox;

use super::flags::BuildFlags;
use super::{CliError, Context, context};

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The derivation: `<path-or-module>:<function>` returning one derivation
    #[arg(value_name = "REF", required_unless_present = "derivations")]
    pub reference: Option<String>,
    #[command(flatten)]
    pub flags: BuildFlags,
    /// Take the derivation from a JSON file (`{"derivations": […], "roots": [<hash>]}`)
    #[arg(long, hide = true, value_name = "FILE")]
    pub derivations: Option<PathBuf>,
}

pub fn run(args: ShellArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let request = match (&args.derivations, &args.reference) {
        (Some(file), _) => super::build::read_derivations_file(file)?,
        (None, Some(reference)) => ctx.evaluate_refs(std::slice::from_ref(reference))?.0,
        (None, None) => return Err(CliError::user("name the derivation to open a shell for")),
    };
    let [root] = request.roots[..] else {
        return Err(CliError::user(format!(
            "`bramble shell` needs exactly one derivation, got {}",
            request.roots.len()
        )));
    };
    let helper = ctx.helper()?;
    let config = args.flags.sandbox(&helper)?;
    let job = ctx.prepare_root(&request, root, &args.flags.options()?, config)?;
    let env = sandbox::prepare_shell(ctx.store()?, &job)?;
    let status = env.run(&helper)?;
    Ok(context::exit_code(status))
}
