//! Another program in a sandbox, with the caller's terminal: a shell in a build's
//! environment (`bramble shell`), or a program from a built output (`bramble run`). These run as
//! the caller (`--as-caller`), never as a build.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bramble_sandbox::Spec;

use crate::engine::{ExecError, Job, SetupError};
use crate::store::local::LocalStore;

use super::background::BuildDirs;
use super::{Prepared, new_dirs, prepare};

/// A build environment for an interactive program (`bramble shell`): the directory, sources,
/// input closure and environment of a build, with another program instead of the builder
/// and the caller's terminal. Removed when dropped.
#[derive(Debug)]
pub struct Interactive {
    dirs: BuildDirs,
    pub spec: Spec,
}

/// Prepare the build environment of `job` (resolved, `inputs` = its input closure) with a
/// shell in place of the builder (`spec::shell` says which).
pub fn prepare_shell(store: &LocalStore, job: &Job) -> Result<Interactive, ExecError> {
    let tmp = Arc::new(store.tmp_dir("shell").map_err(SetupError::TempDir)?);
    let Prepared { dirs, spec } = prepare(store, new_dirs(tmp)?, job)?;
    let spec = super::spec::shell(store, job, spec)?;
    Ok(Interactive { dirs, spec })
}

impl Interactive {
    /// Run the program with this process's stdin, stdout and stderr; returns its status.
    pub fn run(&self, helper: &Path) -> Result<std::process::ExitStatus, ExecError> {
        run_interactive(helper, &self.spec, self.dirs.tmp.path())
    }
}

/// Run `spec` (whose stdin is inherited) with the helper: the spec goes on a descriptor
/// (`--spec-fd`) read from a file written in `scratch`.
pub fn run_interactive(
    helper: &Path,
    spec: &Spec,
    scratch: &Path,
) -> Result<std::process::ExitStatus, ExecError> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::os::fd::AsRawFd;
    let path = scratch.join("spec.json");
    let spec_file = |op: &'static str| {
        let path = path.clone();
        move |source: io::Error| SetupError::SpecFile { op, path, source }
    };
    std::fs::write(&path, spec.to_json()).map_err(spec_file("write"))?;
    let file = std::fs::File::open(&path).map_err(spec_file("open"))?;
    // The helper inherits this one descriptor (std opens everything else close-on-exec).
    fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| SetupError::SpecFd { source: e.into() })?;
    // `--as-caller`: the user's own program with the user's own paths, as the user (as
    // root too: no build runs here).
    let status = std::process::Command::new(helper)
        .arg("--as-caller")
        .arg("--spec-fd")
        .arg(file.as_raw_fd().to_string())
        .status()
        .map_err(|source| SetupError::Helper {
            helper: helper.to_owned(),
            source,
        })?;
    drop(file);
    Ok(status)
}
