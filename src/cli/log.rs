//! `bramble log <drv-or-path>`: print the build log of a derivation.
//!
//! The argument is a derivation hash (as `bramble build` failures print it), a store path
//! (host path or `<hash>-<name>`: the log of the derivation that built it), or a reference
//! (`./path:function`: the logs of the derivations it returns).
//!
//! A log is the builder's output: on a terminal it is shown through
//! [`super::terminal::sanitise_bytes`] (escape sequences made visible); piped, or with
//! `--raw`, the bytes are written as they are.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::store::{Hash, StorePath};

use super::{CliError, Context};

#[derive(Debug, Args)]
pub struct LogArgs {
    /// A derivation hash, a store path or a reference
    #[arg(value_name = "DRV-OR-PATH")]
    pub target: String,
    /// Write the log's bytes as they are, escape sequences included, even to a terminal
    #[arg(long)]
    pub raw: bool,
}

pub fn run(args: LogArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let drvs = derivations_of(ctx, &args.target)?;
    let mut stdout = std::io::stdout().lock();
    let raw = args.raw || !std::io::IsTerminal::is_terminal(&stdout);
    for drv in drvs {
        let log = ctx.store()?.get_log(drv)?;
        let Some(log) = log else {
            return Err(
                CliError::user(format!("no build log of derivation `{drv}` in the store"))
                    .with_hint("logs exist for derivations built on this machine"),
            );
        };
        let shown = if raw {
            std::borrow::Cow::Borrowed(&log[..])
        } else {
            std::borrow::Cow::Owned(super::terminal::sanitise_bytes(&log).into_bytes())
        };
        stdout
            .write_all(&shown)
            .map_err(|e| CliError::environment(format!("cannot write to stdout: {e}")))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn derivations_of(ctx: &Context, target: &str) -> Result<Vec<Hash>, CliError> {
    if let Ok(hash) = target.parse::<Hash>() {
        return Ok(vec![hash]);
    }
    let looks_like_path = target.contains('/') && !target.contains(':');
    if let Ok(path) = StorePath::from_path_str(target)
        && (looks_like_path || !target.contains(':'))
    {
        let info = ctx.store()?.path_info(&path)?;
        let Some(info) = info else {
            return Err(CliError::user(format!(
                "`{target}` is not a valid store path"
            )));
        };
        return info.deriver.map(|d| vec![d]).ok_or_else(|| {
            CliError::user(format!(
                "`{path}` was not built by a derivation (it is a source)"
            ))
        });
    }
    if !target.contains([':', '/', '.']) {
        // Neither a hash, a store path nor a reference: most likely a mistyped hash, which
        // would otherwise be looked up as a module.
        return Err(CliError::user(format!(
            "`{target}` is not a derivation hash, a store path or a reference"
        ))
        .with_hint(
            "a derivation hash is 32 characters of `a-z` and `2-7`, as a failed `bramble build` \
             prints it; a reference looks like `./path:function`",
        ));
    }
    let (request, _) = ctx.evaluate_refs(&[target.to_owned()])?;
    Ok(request.roots)
}
