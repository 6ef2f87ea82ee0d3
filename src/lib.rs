//! Bramble: a functional, hermetic, rootless build system.
//!
//! # Architecture
//!
//! ```text
//! store    LEAF. Hash, StorePath, Derivation (canonical JSON, hashing, templates), the archive
//!          format, reference scanning, output hashing, the description of a fetch (spec, pin,
//!          record: store::fetch), the one topological order (store::order). Pure code;
//!          store::local is the on-disk store (SQLite database, atomic adds, locks, verify, gc),
//!          store::local::fs its file-system side (dump, restore, remove trees through
//!          descriptors).
//! lang     Starlark frontend: derivation(), files(), load(), run(), test(), sys, assert.
//!          Produces derivation values; never builds, never touches the network.
//! project  bramble.toml / bramble.lock, module resolution, lang values -> store derivations.
//! engine   the graph (petgraph) and scheduler (tokio: loop, task, splice, plan), the store
//!          protocol a build speaks (BuildStore), the sandbox executor (engine::sandbox: warm
//!          helpers, specs; build directories in engine::build_dir), fetchers, DAO splicing,
//!          one job outside a graph for `shell` and `test` (engine::job).
//! cli      clap commands and terminal output: the only module that prints.
//! debian   Debian package sets: the Packages index, version ordering, the dependency
//!          closure, the DAO document, merging unpacked packages (run by `bramble-debian`).
//! golang   Go modules: go.mod and go.sum, the DAO document of pinned module fetches (h1),
//!          the file-based module proxy (run by `bramble-go`).
//! config   the user's config file ($XDG_CONFIG_HOME/bramble/config.toml), mirror layers,
//!          and the reading of configuration files (regular files only).
//! env      every BRAMBLE_* environment variable, declared once.
//! error    the Diagnose trait: every module error's class (user, environment, internal:
//!          the exit code) and hint.
//! ```
//!
//! Dependency direction: `store` is the leaf; `lang` uses `store` only for the derivation
//! type and the store's error (what its `SourceStore` returns); `project` joins `lang` and
//! `store` (and `config`), never `engine`; `engine` uses `store` and the sandbox spec, never
//! `lang`; `cli` drives everything. The main process never changes its own namespaces: all
//! isolation happens in the `bramble-sandbox` helper it spawns.

// "Only `cli` prints": everything else reports through return values and the reporter.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
pub mod config;
pub mod debian;
pub mod engine;
pub mod env;
pub mod error;
pub mod golang;
pub mod lang;
pub mod project;
pub mod store;
