//! The `main` shared by the programs builds run inside the sandbox (`bramble-debian`,
//! `bramble-go`): run on the arguments, report an error as `error:` with its causes and,
//! when it has one, a `hint:` line, and exit with 1.

#![allow(dead_code, reason = "each program uses part of it")]

use std::process::ExitCode;

use bramble::error::Diagnose;

/// An error with advice, kept through `anyhow` for [`main`] to print on its own line.
#[derive(Debug)]
struct Hinted {
    message: String,
    hint: Option<String>,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// A module error with its causes and its hint.
pub fn diagnosed<E: Diagnose>(err: E) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: bramble::error::chain(&err),
        hint: err.hint(),
    })
}

/// An error of the program itself, with advice.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: Some(hint.into()),
    })
}

/// Run `run` on the program's arguments and report its error.
pub fn main(run: impl FnOnce(Vec<String>) -> anyhow::Result<()>) -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let hint = e
                .chain()
                .find_map(|cause| cause.downcast_ref::<Hinted>())
                .and_then(|h| h.hint.as_deref());
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The output directory of the build (`$out`).
pub fn out_dir() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    std::env::var_os("out")
        .map(std::path::PathBuf::from)
        .context("`$out` is not set")
}
