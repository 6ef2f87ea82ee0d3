//! The Starlark frontend: evaluates `.bramble` files into derivation values.
//!
//! Built on starlark-rust. Every `.bramble` file sees the standard Starlark builtins plus
//! `derivation`, `files`, `run`, `test`, `print`, `sys` and `assert` (see [`builtins`]).
//! `lang` uses `store` only for the [`Derivation`](crate::store::Derivation) type and the
//! store's error (what a [`SourceStore`] returns): it never builds and never touches the
//! network. Adding source files to the store is delegated to a
//! [`SourceStore`] supplied by the caller (`project`), because a derivation's hash depends
//! on the content address of its sources and `str(drv)` must be known at once.
//!
//! Decisions:
//! - `derivation()` and `test()` are refused while any module is being loaded (module top
//!   level, including functions called from it): functions are the build entry points, and
//!   so every derivation is created by the function a reference names.
//! - Module files are named by their path relative to their project (or library) root in
//!   every message, so errors and hashes never show host paths.
//! - Evaluation errors are rendered at once into text with file:line:col, the source line,
//!   a caret and the `.bramble` call stack (starlark-rust's diagnostics), so they can cross
//!   threads and reach the CLI unchanged.

pub mod builtins;
pub mod files;
pub mod loads;
pub mod session;
pub mod value;

use std::path::Path;

pub use session::{FunctionInfo, Library, ModuleInfo, Options, Returned, Session, TestSpec};
pub use value::{DerivationNode, RunSpec};

use crate::store::StorePath;

/// Adds a derivation's source files to the store and returns the content-addressed object.
pub trait SourceStore {
    /// Store exactly `files` (relative, sorted, `/`-separated paths below `root`) with their
    /// layout, for derivation `name`. Identical file sets must give the same path.
    fn add_sources(
        &self,
        name: &str,
        root: &Path,
        files: &[String],
    ) -> Result<StorePath, crate::store::local::Error>;
}

/// Everything that can go wrong while evaluating `.bramble` files.
///
/// Each message holds its cause and no variant has a `source`: these errors travel through
/// Starlark diagnostics, which show the message alone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Starlark error, already rendered with its location, source line and call stack.
    #[error("{rendered}")]
    Eval { rendered: String },
    #[error("cannot read `{path}`: {error}")]
    ReadFile { path: String, error: std::io::Error },
    #[error(
        "cannot load `{load}`: no module named `{prefix}` is known here (this project is `{package}`)"
    )]
    UnknownModule {
        load: String,
        prefix: String,
        package: String,
    },
    #[error("cannot load `{load}`: neither `{file}` nor `{default}` exists")]
    ModuleNotFound {
        load: String,
        file: String,
        default: String,
    },
    #[error("cannot load `{load}`: both `{file}` and `{default}` exist")]
    AmbiguousModule {
        load: String,
        file: String,
        default: String,
    },
    #[error("cannot load `{load}`: {reason}")]
    BadLoadPath { load: String, reason: String },
    /// A problem found in a module's tokens before parsing (a private load, too deep).
    #[error("{file}:{line}:{column}: {message}")]
    Source {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The evaluator panicked (see `session::catching`), at `location` (`file:line:col`).
    #[error("{location}: the evaluation stopped: {message}")]
    Aborted { location: String, message: String },
    #[error("load cycle: {cycle}")]
    LoadCycle { cycle: String },
    #[error(
        "`{function}()` called while loading module `{module}`: derivations can only be created inside functions"
    )]
    TopLevel { function: String, module: String },
    #[error("`{function}` argument `{argument}`: expected {expected}, got `{got}`")]
    ArgType {
        function: String,
        argument: String,
        expected: String,
        got: String,
    },
    #[error("`{function}` argument `{argument}`: {problem}")]
    ArgValue {
        function: String,
        argument: String,
        problem: String,
    },
    #[error("invalid glob pattern `{pattern}`: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("`files({patterns:?})` matched no files in `{dir}`")]
    NoMatch { patterns: Vec<String>, dir: String },
    #[error(
        "`files()` matched `{path}`, which is {kind}: only regular files and symlinks can be sources"
    )]
    SpecialFile { path: String, kind: &'static str },
    #[error("`files()` matched `{path}`, which cannot be read: {message}")]
    Unreadable { path: String, message: String },
    #[error("cannot list `{path}`: {message}")]
    Walk { path: String, message: String },
    #[error("`{path}` is not valid UTF-8")]
    NonUtf8Path { path: String },
    #[error("cannot add file sets from different directories (`{left}` and `{right}`)")]
    FilesBaseMismatch { left: String, right: String },
    #[error("invalid derivation: {0}")]
    InvalidDerivation(crate::store::DerivationError),
    #[error("cannot add the sources of `{name}` to the store: {}", crate::error::chain(&**.error))]
    Sources {
        name: String,
        error: Box<crate::store::local::Error>,
    },
    #[error("{message}")]
    Assertion { message: String },
    #[error("module `{module}` has no function `{function}`")]
    NoFunction { module: String, function: String },
    #[error("`{module}:{function}` is a `{got}`, not a function")]
    NotAFunction {
        module: String,
        function: String,
        got: String,
    },
    #[error("`{reference}` cannot be called without arguments: `{signature}`")]
    NeedsArguments {
        reference: String,
        signature: String,
    },
    #[error(
        "`{module}:{function}` returned `{got}`: expected a derivation, a list of derivations or a `run()` value"
    )]
    BadReturn {
        module: String,
        function: String,
        got: String,
    },
}

impl From<crate::store::DerivationError> for Error {
    fn from(e: crate::store::DerivationError) -> Error {
        Error::InvalidDerivation(e)
    }
}

impl crate::error::Diagnose for Error {
    /// Evaluation errors are the `.bramble` file's (the evaluator runs nothing else), but
    /// for the store's when sources cannot be added.
    fn class(&self) -> crate::error::Class {
        match self {
            Error::Sources { error, .. } => error.class(),
            _ => crate::error::Class::User,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Error::Sources { error, .. } => error.hint(),
            Error::Aborted { .. } => Some(
                "the statement builds a value too large to evaluate (a huge list or string?)"
                    .into(),
            ),
            _ => None,
        }
    }
}
