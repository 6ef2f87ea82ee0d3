//! `bramble gc`: delete store objects no gc root reaches, and crash leftovers.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::store::{open_store, parse_store_path};
use super::{CliError, Context};
use crate::store::local::GcOptions;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only print what would be deleted
    #[arg(long)]
    pub dry_run: bool,
    /// Extra store paths to keep (with their closures)
    #[arg(long = "keep", value_name = "PATH")]
    pub keep: Vec<String>,
}

pub fn run(args: GcArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let _ = ctx;
    let extra_roots = args
        .keep
        .iter()
        .map(|p| parse_store_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let store = open_store()?;
    let report = store.gc(&GcOptions {
        dry_run: args.dry_run,
        extra_roots,
    })?;
    let mut out = std::io::stdout().lock();
    let write_err =
        |e: std::io::Error| CliError::environment(format!("cannot write to stdout: {e}"));
    for p in &report.deleted {
        writeln!(out, "{}", store.host_path(p).display()).map_err(write_err)?;
    }
    for p in &report.leftovers {
        writeln!(out, "{}", p.display()).map_err(write_err)?;
    }
    drop(out);
    eprintln!(
        "{} {} store paths and {} leftovers, {} freed",
        if args.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        report.deleted.len(),
        report.leftovers.len(),
        human_bytes(report.freed_bytes),
    );
    Ok(ExitCode::SUCCESS)
}

/// `1234567` → `1.2 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
