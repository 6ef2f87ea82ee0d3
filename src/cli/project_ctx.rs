//! Shared by the commands that evaluate `.bramble` files: finding the project and mapping
//! `project`/`lang` errors to CLI errors.

use std::path::PathBuf;

use super::CliError;
use crate::project::{self, Project};

/// The working directory and the project containing it (or containing `start`).
pub fn find(start: Option<&std::path::Path>) -> Result<(PathBuf, Project), CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::environment(format!("cannot read the working directory: {e}")))?;
    let project = Project::find(start.unwrap_or(&cwd)).map_err(error)?;
    Ok((cwd, project))
}

/// Map a project error to a CLI error with a hint where one helps.
pub fn error(err: project::Error) -> CliError {
    match &err {
        project::Error::NoManifest { .. } => CliError::user(err.to_string()).with_hint(
            "create a `bramble.toml` at the project root with `[package]` and `name = \"github.com/you/project\"`",
        ),
        project::Error::Thread { .. } => CliError::internal(err.to_string()),
        project::Error::Lang(crate::lang::Error::Aborted { .. }) => CliError::user(err.to_string())
            .with_hint("the statement builds a value too large to evaluate (a huge list or string?)"),
        _ => CliError::user(err.to_string()),
    }
}
