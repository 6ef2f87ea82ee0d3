//! `bramble store …`: look at and maintain the local store (add a tree, show a path's
//! metadata, verify every object against the database).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{CliError, Context};
use crate::store::StorePath;
use crate::store::local::fs::TreeError;
use crate::store::local::{self, LocalStore, VerifyOptions, VerifyProblem};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Add a directory (or file) to the store; prints its store path
    Add {
        /// The directory, file or symlink to add (symlinks are stored, not followed)
        path: PathBuf,
        /// Name of the store object (default: the last component of PATH)
        #[arg(long)]
        name: Option<String>,
    },
    /// Show what the store knows about a path: archive hash, size, references, deriver
    PathInfo {
        /// A store path (`<hash>-<name>` or a full path into the store)
        path: String,
        /// Print JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Write the archive of a store path to stdout
    Export {
        /// A store path
        path: String,
    },
    /// Add a store object from an archive (as written by `export`); prints its store path
    Import {
        /// The archive file, or `-` for stdin
        file: PathBuf,
        /// Name of the store object
        #[arg(long)]
        name: String,
    },
    /// Repair the store's database
    Repair {
        /// Rebuild the database from the objects in the store: re-hash every unregistered
        /// object and register those whose contents give their name (with the references
        /// found in them); move the others to `lost+found/` in the store's home.
        /// Realisations and build logs cannot be recovered
        #[arg(long)]
        rebuild_db: bool,
    },
    /// Re-hash every store object and compare with the database
    Verify {
        /// Delete broken objects (and the objects that refer to them)
        #[arg(long)]
        repair: bool,
    },
}

/// Open the default store, with CLI errors.
pub(crate) fn open_store() -> Result<LocalStore, CliError> {
    Ok(LocalStore::open_default()?)
}

/// Parse a store path given on the command line.
pub(crate) fn parse_store_path(text: &str) -> Result<StorePath, CliError> {
    StorePath::from_path_str(text).map_err(|e| {
        CliError::from(e).with_hint(
            "a store path looks like `<store>/<32-char hash>-<name>`, as printed by `bramble store add`",
        )
    })
}

fn stdout_error(err: std::io::Error) -> CliError {
    CliError::environment(format!("cannot write to stdout: {err}"))
}

pub fn run(args: StoreArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let _ = ctx;
    match args.command {
        StoreCommand::Add { path, name } => add(&path, name),
        StoreCommand::PathInfo { path, json } => path_info(&path, json),
        StoreCommand::Verify { repair } => verify(repair),
        StoreCommand::Repair { rebuild_db } => repair(rebuild_db),
        StoreCommand::Export { path } => export(&path),
        StoreCommand::Import { file, name } => import(&file, &name),
    }
}

fn add(path: &std::path::Path, name: Option<String>) -> Result<ExitCode, CliError> {
    let name = match name {
        Some(n) => n,
        None => {
            let abs = std::fs::canonicalize(path)
                .map_err(|e| CliError::user(format!("cannot resolve `{}`: {e}", path.display())))?;
            abs.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .ok_or_else(|| {
                    CliError::user(format!("`{}` has no usable name", path.display()))
                        .with_hint("pass `--name <name>`")
                })?
        }
    };
    let store = open_store()?;
    let added = store.add_dir(path, &name)?;
    writeln!(std::io::stdout(), "{}", store.host_path(&added).display()).map_err(stdout_error)?;
    Ok(ExitCode::SUCCESS)
}

fn path_info(text: &str, json: bool) -> Result<ExitCode, CliError> {
    let path = parse_store_path(text)?;
    let store = open_store()?;
    let info = store
        .path_info(&path)?
        .ok_or_else(|| local::Error::NotValid { path: path.clone() })?;
    let host = store.host_path(&path);
    let mut out = std::io::stdout().lock();
    if json {
        let value = serde_json::json!({
            "path": info.path,
            "host_path": host,
            "archive_hash": info.archive_hash,
            "archive_size": info.archive_size,
            "references": info.references,
            "deriver": info.deriver,
            "registered_at": info.registered_at,
        });
        writeln!(out, "{value}").map_err(stdout_error)?;
    } else {
        let refs: Vec<String> = info.references.iter().map(ToString::to_string).collect();
        let text = format!(
            "path:         {}\narchive hash: {}\nsize:         {}\nreferences:   {}\nderiver:      {}\n",
            host.display(),
            info.archive_hash,
            info.archive_size,
            if refs.is_empty() {
                "(none)".to_owned()
            } else {
                refs.join(" ")
            },
            info.deriver
                .map(|d| d.to_string())
                .unwrap_or_else(|| "(none)".to_owned()),
        );
        out.write_all(text.as_bytes()).map_err(stdout_error)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(repair: bool) -> Result<ExitCode, CliError> {
    let store = open_store()?;
    let report = store.verify(&VerifyOptions { repair })?;
    let mut out = std::io::stdout().lock();
    for problem in &report.problems {
        let line = match problem {
            VerifyProblem::Missing { path } => {
                format!("missing {}", store.host_path(path).display())
            }
            VerifyProblem::Mismatch {
                path,
                expected,
                actual,
                expected_size,
                actual_size,
            } => format!(
                "corrupt {}: expected archive hash {expected} ({expected_size} bytes), found {actual} ({actual_size} bytes)",
                store.host_path(path).display()
            ),
            VerifyProblem::Unreadable { path, error } => {
                format!("unreadable {}: {error}", store.host_path(path).display())
            }
        };
        writeln!(out, "{line}").map_err(stdout_error)?;
    }
    for removed in &report.removed {
        writeln!(out, "removed {}", store.host_path(removed).display()).map_err(stdout_error)?;
    }
    drop(out);
    eprintln!(
        "checked {} store paths: {} broken{}",
        report.checked,
        report.problems.len(),
        if repair {
            format!(", {} removed", report.removed.len())
        } else {
            String::new()
        }
    );
    let unrepaired = report
        .problems
        .iter()
        .any(|p| !report.removed.contains(p.path()));
    if unrepaired {
        let err = CliError::environment(format!(
            "{} store path{} failed verification",
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" }
        ));
        return Err(if repair {
            err.with_hint("some broken paths are in use (locked); retry when no build is running")
        } else {
            err.with_hint("run `bramble store verify --repair` to delete them and what refers to them, then rebuild")
        });
    }
    Ok(ExitCode::SUCCESS)
}

fn repair(rebuild_db: bool) -> Result<ExitCode, CliError> {
    if !rebuild_db {
        return Err(CliError::user("nothing to repair: no repair was asked for")
            .with_hint("`bramble store repair --rebuild-db` rebuilds the database from the objects; `bramble store verify --repair` removes broken objects"));
    }
    let store = open_store()?;
    let report = store.rebuild_db()?;
    let mut out = std::io::stdout().lock();
    for path in &report.registered {
        writeln!(out, "registered {}", store.host_path(path).display()).map_err(stdout_error)?;
    }
    for (from, to, why) in &report.moved_aside {
        writeln!(
            out,
            "moved aside {} to {}: {why}",
            from.display(),
            to.display()
        )
        .map_err(stdout_error)?;
    }
    drop(out);
    eprintln!(
        "registered {} store paths ({} were already valid), moved {} aside",
        report.registered.len(),
        report.already_valid,
        report.moved_aside.len()
    );
    if !report.registered.is_empty() {
        eprintln!(
            "note: realisations and build logs cannot be recovered from the objects: the next build of each derivation runs again and finds its outputs stored"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn export(text: &str) -> Result<ExitCode, CliError> {
    let path = parse_store_path(text)?;
    let store = open_store()?;
    let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    store.export(&path, out)?;
    Ok(ExitCode::SUCCESS)
}

fn import(file: &std::path::Path, name: &str) -> Result<ExitCode, CliError> {
    let store = open_store()?;
    let added = if file == std::path::Path::new("-") {
        store.add_archive(std::io::stdin().lock(), name)
    } else {
        let f = std::fs::File::open(file).map_err(|e| {
            CliError::user(format!("cannot open `{}`: {e}", file.display()))
        })?;
        store.add_archive(std::io::BufReader::with_capacity(1 << 16, f), name)
    }
    .map_err(|e| {
        let is_archive = matches!(&e, local::Error::Tree(TreeError::Archive(_)));
        let err = CliError::from(e);
        if is_archive {
            err.with_hint(format!(
                "`{}` is not a complete bramble archive; export it again with `bramble store export`",
                file.display()
            ))
        } else {
            err
        }
    })?;
    writeln!(std::io::stdout(), "{}", store.host_path(&added).display()).map_err(stdout_error)?;
    Ok(ExitCode::SUCCESS)
}
