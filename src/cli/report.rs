//! How the CLI renders a build's failures: each one with its log tail and hints, and the
//! error (with its exit code) that ends the command.

use crate::engine::{BuildReport, ExecError, FailureKind};

use super::CliError;

/// Exit code when `--check` found an output that differs from the registered one (as Nix).
pub const EXIT_NOT_DETERMINISTIC: u8 = 104;
/// Exit code when the build was cancelled (Ctrl-C, SIGTERM).
pub const EXIT_CANCELLED: u8 = 130;

/// Print every failure of `report` (with the log tail and how to see the whole log) and
/// return the error that decides the exit code; `Ok` if there was none.
pub fn explain_failures(report: &BuildReport) -> Result<(), CliError> {
    if report.success() {
        return Ok(());
    }
    for failure in &report.failures {
        let what = format!(
            "building `{}` failed: {}",
            failure.name,
            crate::error::chain(&failure.kind)
        );
        eprintln!("error: {}", super::terminal::sanitise(&what));
        match &failure.kind {
            FailureKind::Exec(
                ExecError::Failed {
                    log_tail,
                    kept,
                    hint,
                    ..
                }
                | ExecError::Sandbox {
                    log_tail,
                    kept,
                    hint,
                    ..
                },
            ) => {
                if let Some(hint) = hint {
                    eprintln!("hint: {hint}");
                }
                if !log_tail.is_empty() {
                    eprintln!("last {} log lines:", log_tail.len());
                    for line in log_tail {
                        eprintln!("  > {}", super::terminal::sanitise(line));
                    }
                }
                eprintln!("hint: the whole log: `bramble log {}`", failure.drv);
                if let Some(kept) = kept {
                    eprintln!("note: the build directory was kept at `{}`", kept.display());
                }
            }
            kind => {
                if let Some(hint) = crate::error::Diagnose::hint(kind) {
                    eprintln!("hint: {hint}");
                }
            }
        }
    }
    Err(failure_error(report))
}

/// The exit code and error for a report with failures.
pub fn failure_error(report: &BuildReport) -> CliError {
    if report.cancelled {
        let mut err = CliError::user("the build was cancelled");
        err.exit_code = Some(EXIT_CANCELLED);
        return err;
    }
    let not_deterministic = report
        .failures
        .iter()
        .any(|f| matches!(f.kind, FailureKind::NotDeterministic { .. }));
    let n = report.failures.len();
    let mut err = if n == 1 {
        CliError::user("1 derivation failed to build")
    } else {
        CliError::user(format!("{n} derivations failed to build"))
    };
    if not_deterministic {
        err.exit_code = Some(EXIT_NOT_DETERMINISTIC);
    }
    err
}
