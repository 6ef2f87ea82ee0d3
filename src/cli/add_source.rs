//! `bramble add-source <dir>` (hidden): add a directory to the store as a source object and
//! print its store path. For tests and benchmarks that build derivation files directly.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::session::{Session, store_error};
use super::{CliError, Context};

#[derive(Debug, Args)]
pub struct AddSourceArgs {
    pub dir: PathBuf,
    /// The store object's name
    #[arg(long, default_value = "source")]
    pub name: String,
}

pub fn run(args: AddSourceArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let session = Session::open(ctx)?;
    let path = session
        .store
        .add_dir(&args.dir, &args.name)
        .map_err(store_error)?;
    println!("{path}");
    Ok(ExitCode::SUCCESS)
}
