//! `bramble ls [path]`: the modules below `path` (or the module `path` names), their
//! docstrings and their public functions with signatures and docstrings.

use std::path::PathBuf;
use std::process::ExitCode;

use super::context::find_project;
use super::terminal::print_to_stderr;
use super::{CliError, Context};
use crate::lang::{ModuleInfo, Session};
use crate::project::{MemorySources, reference::all_modules, run_on_big_stack};

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// A directory (every module below it) or a `.bramble` file. Default: `.`.
    pub path: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LsArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let _ = ctx;
    let path = args.path.unwrap_or_else(|| PathBuf::from("."));
    let start = if path.is_dir() {
        path.clone()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    let (_, project) = find_project(Some(&start))?;
    let files = if path.is_dir() {
        let dir = std::fs::canonicalize(&path)
            .map_err(|e| CliError::user(format!("cannot read `{}`: {e}", path.display())))?;
        all_modules(&dir)?
    } else {
        let file = if path.extension().is_some_and(|x| x == "bramble") {
            path.clone()
        } else {
            path.with_extension("bramble")
        };
        vec![
            std::fs::canonicalize(&file)
                .map_err(|e| CliError::user(format!("cannot read `{}`: {e}", file.display())))?,
        ]
    };
    let modules: Vec<ModuleInfo> = run_on_big_stack(|| {
        let sources = MemorySources::default();
        let session = Session::new(project.options(), &sources, &print_to_stderr);
        files
            .iter()
            .map(|f| session.module_info(f).map_err(Into::into))
            .collect()
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&modules).expect("module info serialises")
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (i, m) in modules.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{}", m.file);
        if let Some(doc) = &m.doc {
            for line in doc.lines() {
                println!("  {line}");
            }
        }
        for f in &m.functions {
            println!("  def {}", f.signature);
            if let Some(doc) = &f.doc {
                for line in doc.lines() {
                    println!("      {line}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
