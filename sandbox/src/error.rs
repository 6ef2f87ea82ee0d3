//! Errors of the helper itself (never of the builder), each one line plus an optional hint.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit::{
    EXIT_INVALID_SPEC, EXIT_NO_USER_NAMESPACES, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND,
    EXIT_PROCESS_LIMIT, EXIT_SETUP_FAILED, EXIT_SILENT, EXIT_TIMEOUT,
};
use crate::spec::SpecError;

/// A failure of the helper before or while it sets up the sandbox.
#[derive(Debug)]
pub enum Error {
    /// Bad command line.
    Usage { message: String },
    /// Reading the spec from its descriptor failed.
    ReadSpec { fd: i32, source: io::Error },
    /// The spec is invalid.
    Spec(SpecError),
    /// `stdin: inherit` while the spec itself came on stdin.
    StdinTaken,
    /// The kernel refused an unprivileged user namespace (at `step`).
    UserNamespace {
        step: &'static str,
        source: io::Error,
        hint: String,
    },
    /// As root: the sandbox's id maps (the builder as the unprivileged host `id`) could not
    /// be written, e.g. in a container whose user namespace does not map that id.
    SandboxId {
        id: u32,
        file: &'static str,
        source: io::Error,
    },
    /// A bind source could not be opened on the host.
    OpenSource { path: PathBuf, source: io::Error },
    /// A writable bind source is a symbolic link.
    WritableSymlink { path: PathBuf },
    /// A bind source is neither a directory, a regular file nor a symbolic link.
    SourceKind { path: PathBuf },
    /// A namespace/mount/process step failed; `what` names the operation and its path.
    Setup { what: String, source: io::Error },
    /// The builder does not exist inside the sandbox.
    BuilderNotFound { path: PathBuf, interpreter: bool },
    /// The builder could not be executed.
    BuilderNotExecutable { path: PathBuf, source: io::Error },
    /// The time limit was reached and the sandbox killed.
    Timeout { limit_ms: u64 },
    /// The builder printed nothing for `limit_ms`; the whole sandbox was killed.
    Silent { limit_ms: u64 },
    /// The builder failed (with `code`) while the sandbox had `limit` processes, its limit.
    ProcessLimit { limit: u32, code: u8 },
}

impl Error {
    /// A failed setup step, `what` naming the operation and the path it touched.
    pub(crate) fn setup(what: impl Into<String>, source: io::Error) -> Error {
        Error::Setup {
            what: what.into(),
            source,
        }
    }

    /// The helper's exit status for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage { .. } | Error::ReadSpec { .. } | Error::Spec(_) | Error::StdinTaken => {
                EXIT_INVALID_SPEC
            }
            Error::UserNamespace { .. } => EXIT_NO_USER_NAMESPACES,
            Error::BuilderNotFound { .. } => EXIT_NOT_FOUND,
            Error::BuilderNotExecutable { .. } => EXIT_NOT_EXECUTABLE,
            Error::Timeout { .. } => EXIT_TIMEOUT,
            Error::Silent { .. } => EXIT_SILENT,
            Error::ProcessLimit { .. } => EXIT_PROCESS_LIMIT,
            Error::OpenSource { .. }
            | Error::SandboxId { .. }
            | Error::WritableSymlink { .. }
            | Error::SourceKind { .. }
            | Error::Setup { .. } => EXIT_SETUP_FAILED,
        }
    }

    /// Advice for the user, printed on its own `hint:` line.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { .. } => Some("usage: bramble-sandbox [--spec-fd N] [--warm] [--status-fd N] [--as-caller] < spec.json".into()),
            Error::StdinTaken => Some(
                "pass the spec on another descriptor with `--spec-fd N` to give stdin to the builder"
                    .into(),
            ),
            Error::UserNamespace { hint, .. } => Some(hint.clone()),
            Error::SandboxId { .. } => Some(format!(
                "as root, builders run as an unprivileged host id (by default of {}..{}), which this user \
                 namespace must map (a container's root often maps only 65536 ids): set \
                 `{}=<base>:<count>` to a range it maps, or run bramble as an ordinary user",
                crate::SANDBOX_ID_BASE,
                crate::SANDBOX_ID_BASE + crate::SANDBOX_ID_COUNT,
                crate::SANDBOX_IDS_VAR,
            )),
            Error::BuilderNotFound { .. } => Some(
                "bind the store path that holds the builder (and its interpreter) into the sandbox"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage { message } => write!(f, "{message}"),
            Error::ReadSpec { fd, source } => {
                write!(f, "cannot read the spec from descriptor {fd}: {source}")
            }
            Error::Spec(e) => write!(f, "{e}"),
            Error::StdinTaken => write!(
                f,
                "the spec asks for `stdin: inherit` but the spec itself was read from stdin"
            ),
            Error::UserNamespace { step, source, .. } => write!(
                f,
                "the kernel refused an unprivileged user namespace ({step}: {source})"
            ),
            Error::SandboxId { id, file, source } => write!(
                f,
                "cannot write the sandbox's `{file}` to run the builder as host id {id}: {source}"
            ),
            Error::OpenSource { path, source } => {
                write!(f, "cannot open bind source `{}`: {source}", path.display())
            }
            Error::WritableSymlink { path } => write!(
                f,
                "writable bind source `{}` is a symbolic link",
                path.display()
            ),
            Error::SourceKind { path } => write!(
                f,
                "bind source `{}` is not a directory, regular file or symbolic link",
                path.display()
            ),
            Error::Setup { what, source } => write!(f, "{what}: {source}"),
            Error::BuilderNotFound { path, interpreter } => {
                if *interpreter {
                    write!(
                        f,
                        "builder `{}` exists but its interpreter or dynamic loader was not found in the sandbox",
                        path.display()
                    )
                } else {
                    write!(f, "builder `{}` not found in the sandbox", path.display())
                }
            }
            Error::Timeout { limit_ms } => write!(
                f,
                "the builder exceeded its time limit of {limit_ms} ms and was killed"
            ),
            Error::Silent { limit_ms } => write!(
                f,
                "the builder printed nothing for {limit_ms} ms (its silence limit) and was killed"
            ),
            Error::ProcessLimit { limit, code } => write!(
                f,
                "the builder failed (status {code}) at its limit of {limit} processes"
            ),
            Error::BuilderNotExecutable { path, source } => write!(
                f,
                "builder `{}` is not executable: {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadSpec { source, .. }
            | Error::UserNamespace { source, .. }
            | Error::SandboxId { source, .. }
            | Error::OpenSource { source, .. }
            | Error::Setup { source, .. }
            | Error::BuilderNotExecutable { source, .. } => Some(source),
            Error::Spec(e) => Some(e),
            _ => None,
        }
    }
}

/// Explains why user namespaces are unavailable, naming the sysctl that blocks them.
///
/// Reads the three knobs distributions use; the first one found restrictive is named.
pub fn user_namespace_hint() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "`user.max_user_namespaces` is 0: run `sysctl -w user.max_user_namespaces=65536`"
            .into();
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "`kernel.unprivileged_userns_clone` is 0: run `sysctl -w kernel.unprivileged_userns_clone=1`".into();
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "AppArmor restricts user namespaces: run `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or give bramble-sandbox an AppArmor profile with `userns,`".into();
    }
    "enable unprivileged user namespaces (sysctls `user.max_user_namespaces`, `kernel.unprivileged_userns_clone`, `kernel.apparmor_restrict_unprivileged_userns`); inside a container, allow them in its seccomp profile".into()
}
