//! Shared by the commands that evaluate `.bramble` files: finding the project.

use std::path::PathBuf;

use super::CliError;
use crate::project::Project;

/// The working directory and the project containing it (or containing `start`).
pub fn find(start: Option<&std::path::Path>) -> Result<(PathBuf, Project), CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::environment(format!("cannot read the working directory: {e}")))?;
    let project = Project::find(start.unwrap_or(&cwd))?;
    Ok((cwd, project))
}
