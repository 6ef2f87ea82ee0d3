//! The command line: clap definitions, one file per command, each with a single
//! `run(args, ctx)` entry. This is the only module that prints: stdout carries data (and
//! `--json`), stderr carries progress and messages.
//!
//! What the commands share has its own rooms: [`context`] (the store, helper and mirrors of
//! the run, evaluating with the lock applied, building and recording the lock), [`flags`]
//! (the options of every building command), [`report`] (rendering a build's failures),
//! [`progress`] and [`terminal`] (what goes to the terminal).
//!
//! Errors reaching here are rendered as `error: <what>` plus an optional `hint:` line, and
//! their [`Class`] picks the exit code. A module error becomes a [`CliError`] by `?`: its
//! [`Diagnose`] implementation gives the class and the hint.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use context::Context;

use crate::error::{Class, Diagnose};

pub mod build;
pub mod context;
pub mod eval;
pub mod fetch;
pub mod flags;
pub mod gc;
pub mod graph;
pub mod log;
pub mod ls;
pub mod progress;
pub mod repl;
pub mod report;
pub mod run;
pub mod shell;
pub mod store;
pub mod terminal;
pub mod test;

/// Exit code for a user mistake (bad input, bad `.bramble`, bad arguments).
pub const EXIT_USER: u8 = 1;
/// Exit code for an environment problem (no user namespaces, disk full, network down).
pub const EXIT_ENVIRONMENT: u8 = 2;
/// Exit code for an internal bug.
pub const EXIT_INTERNAL: u8 = 70;

/// An error as the CLI reports it.
#[derive(Debug)]
pub struct CliError {
    pub class: Class,
    pub message: String,
    pub hint: Option<String>,
    /// Overrides the class's exit code (e.g. `--check` found a difference).
    pub exit_code: Option<u8>,
}

impl CliError {
    pub fn user(message: impl Into<String>) -> CliError {
        CliError {
            class: Class::User,
            message: message.into(),
            hint: None,
            exit_code: None,
        }
    }

    pub fn environment(message: impl Into<String>) -> CliError {
        CliError {
            class: Class::Environment,
            message: message.into(),
            hint: None,
            exit_code: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> CliError {
        CliError {
            class: Class::Internal,
            message: message.into(),
            hint: None,
            exit_code: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// A module error as the CLI reports it: its class, its message with each cause once,
    /// its hint.
    pub fn diagnosed<E: Diagnose>(err: &E) -> CliError {
        CliError {
            class: err.class(),
            message: crate::error::chain(err),
            hint: err.hint(),
            exit_code: None,
        }
    }

    fn exit_code(&self) -> u8 {
        self.exit_code.unwrap_or(match self.class {
            Class::User => EXIT_USER,
            Class::Environment => EXIT_ENVIRONMENT,
            Class::Internal => EXIT_INTERNAL,
        })
    }
}

impl<E: Diagnose> From<E> for CliError {
    fn from(err: E) -> CliError {
        CliError::diagnosed(&err)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "bramble",
    version,
    about = "A functional, hermetic, rootless build system"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build derivations and print their output paths
    Build(build::BuildArgs),
    /// Print the build log of a derivation
    Log(log::LogArgs),
    /// Build, then run a program from the output in a sandbox
    Run(run::RunArgs),
    /// Open a shell in a derivation's build environment
    Shell(shell::ShellArgs),
    /// Run the tests registered with `test()`
    Test(test::TestArgs),
    /// Inspect and maintain the local store
    Store(store::StoreArgs),
    /// Delete store objects that no gc root reaches
    Gc(gc::GcArgs),
    /// Fetch a URL or a git commit into the store and print its pin
    Fetch(fetch::FetchArgs),
    /// List modules and their public functions with signatures and docstrings.
    Ls(ls::LsArgs),
    /// Evaluate references and print the derivation graph, without building.
    Eval(eval::EvalArgs),
    /// Print the build graph as Graphviz DOT, with spliced DAO subgraphs marked
    Graph(graph::GraphArgs),
    /// Evaluate Starlark statements interactively (or from stdin).
    Repl(repl::ReplArgs),
}

/// Parse the command line, run the command, render any error. Called by `bin/bramble.rs`.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let ctx = Context::default();
    match run(cli.command, &ctx) {
        Ok(code) => code,
        Err(err) => {
            // Messages quote URLs, server replies and names others chose.
            eprintln!("error: {}", terminal::sanitise(&err.message));
            if let Some(hint) = &err.hint {
                eprintln!("hint: {}", terminal::sanitise(hint));
            }
            if err.class == Class::Internal {
                eprintln!("note: this is a bug in bramble; please report it");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(command: Command, ctx: &Context) -> Result<ExitCode, CliError> {
    match command {
        Command::Build(args) => build::run(args, ctx),
        Command::Log(args) => log::run(args, ctx),
        Command::Run(args) => run::run(args, ctx),
        Command::Shell(args) => shell::run(args, ctx),
        Command::Test(args) => test::run(args, ctx),
        Command::Store(args) => store::run(args, ctx),
        Command::Gc(args) => gc::run(args, ctx),
        Command::Fetch(args) => fetch::run(args, ctx),
        Command::Ls(args) => ls::run(args, ctx),
        Command::Eval(args) => eval::run(args, ctx),
        Command::Graph(args) => graph::run(args, ctx),
        Command::Repl(args) => repl::run(args, ctx),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var(crate::env::BRAMBLE_LOG)
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_error_becomes_a_report_with_its_class_exit_code_and_hint() {
        let err = CliError::from(crate::store::local::Error::NoHome);
        assert_eq!(err.class, Class::Environment);
        assert_eq!(err.exit_code(), EXIT_ENVIRONMENT);
        assert!(err.hint.unwrap().contains("BRAMBLE_HOME"));

        let err = CliError::from(crate::project::Error::NoManifest { start: "/p".into() });
        assert_eq!(err.exit_code(), EXIT_USER);
        assert_eq!(
            err.message,
            "no `bramble.toml` found in `/p` or any parent directory"
        );
        assert!(err.hint.unwrap().contains("[package]"));

        let err = CliError::from(crate::project::Error::Thread {
            message: "panicked".into(),
        });
        assert_eq!(err.exit_code(), EXIT_INTERNAL);
        assert_eq!(err.hint, None);
    }
}
