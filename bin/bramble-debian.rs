//! `bramble-debian`: the program Debian package sets run inside the sandbox (see
//! `bramble::debian`). Not meant to be run by hand.
//!
//! - `bramble-debian resolve INDEX ARCH NAME TOOL PACKAGE...`: read the `Packages` index
//!   (xz, gzip or plain), resolve the closure of the packages and write the DAO document to
//!   `$out/derivations.json`, with a copy of the tool object `TOOL` (this program, its loader
//!   and libraries) in `$out/tool` for the assembly step to run.
//! - `bramble-debian assemble TREE...`: merge the unpacked packages into `$out`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bramble::debian::{self, document::Tool};

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn out_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("out")
        .map(PathBuf::from)
        .context("`$out` is not set")
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("resolve") if args.len() >= 6 => {
            let (index, arch, name, tool) = (&args[1], &args[2], &args[3], Path::new(&args[4]));
            let wanted = &args[5..];
            let bytes = std::fs::read(index).with_context(|| format!("cannot read `{index}`"))?;
            let text = debian::decompress(&bytes).map_err(anyhow::Error::msg)?;
            let packages = debian::index::parse(&text)
                .with_context(|| format!("cannot parse the index `{index}`"))?;
            let universe = debian::Universe::new(&packages, arch);
            let closure = debian::resolve::closure(&universe, wanted)
                .with_context(|| format!("cannot resolve the package set `{name}`"))?;
            let out = out_dir()?;
            std::fs::create_dir(&out)
                .with_context(|| format!("cannot create `{}`", out.display()))?;
            let copied = out.join("tool");
            copy_tool(tool, &copied)?;
            let tool = tool_in(&copied);
            let doc = debian::document::document(name, &closure, &tool);
            let file = out.join(bramble::build::dao::DOCUMENT_FILE);
            std::fs::write(&file, serde_json::to_vec_pretty(&doc)?)
                .with_context(|| format!("cannot write `{}`", file.display()))?;
            eprintln!("{name}: {} packages", closure.len());
            for p in &closure {
                eprintln!("  {} {}", p.name, p.version);
            }
            Ok(())
        }
        Some("assemble") => {
            let out = out_dir()?;
            let trees: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
            let stats = debian::assemble::assemble(&out, &trees).map_err(anyhow::Error::msg)?;
            eprintln!(
                "assembled {} packages: {} files, {} symlinks, {} paths shipped twice (first kept)",
                trees.len(),
                stats.files,
                stats.symlinks,
                stats.duplicates
            );
            Ok(())
        }
        _ => bail!(
            "usage: bramble-debian resolve INDEX ARCH NAME TOOL PACKAGE... | assemble TREE..."
        ),
    }
}

/// Copy the tool object's `bin/` and `lib/` (regular files only).
fn copy_tool(from: &Path, to: &Path) -> anyhow::Result<()> {
    for dir in ["bin", "lib"] {
        std::fs::create_dir_all(to.join(dir))?;
        for entry in std::fs::read_dir(from.join(dir))
            .with_context(|| format!("cannot list `{}`", from.join(dir).display()))?
        {
            let entry = entry?;
            let dest = to.join(dir).join(entry.file_name());
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("cannot copy `{}`", entry.path().display()))?;
        }
    }
    Ok(())
}

/// How to run the tool copied to `dir` (its loader is `lib/ld.so`, see `project::tool`).
fn tool_in(dir: &Path) -> Tool {
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    Tool {
        loader: s(dir.join("lib/ld.so")),
        lib_dir: s(dir.join("lib")),
        program: s(dir.join("bin/bramble-debian")),
    }
}
