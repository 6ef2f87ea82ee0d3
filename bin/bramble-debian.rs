//! `bramble-debian`: the program Debian package sets run inside the sandbox (see
//! `bramble::debian`). Not meant to be run by hand.
//!
//! - `bramble-debian resolve INDEX ARCH NAME PACKAGE...`: read the `Packages` index
//!   (xz, gzip or plain), resolve the closure of the packages and write the DAO document to
//!   `$out/derivations.json`; its assembly step runs this program again through
//!   `builtin:bramble-debian@N` (see `bramble::engine::tool`).
//! - `bramble-debian assemble TREE...`: merge the unpacked packages into `$out`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use bramble::debian;

mod tool;

fn main() -> ExitCode {
    tool::main(run)
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("resolve") if args.len() >= 5 => {
            let (index, arch, name) = (&args[1], &args[2], &args[3]);
            let wanted = &args[4..];
            let bytes = std::fs::read(index).with_context(|| format!("cannot read `{index}`"))?;
            let text = debian::decompress(&bytes).map_err(anyhow::Error::msg)?;
            let packages = debian::index::parse(&text)
                .map_err(tool::diagnosed)
                .with_context(|| format!("cannot parse the index `{index}`"))?;
            let universe = debian::Universe::new(&packages, arch);
            let closure = debian::resolve::closure(&universe, wanted)
                .map_err(tool::diagnosed)
                .with_context(|| format!("cannot resolve the package set `{name}`"))?;
            let out = tool::out_dir()?;
            std::fs::create_dir(&out)
                .with_context(|| format!("cannot create `{}`", out.display()))?;
            let doc = debian::document::document(name, &closure);
            let file = out.join(bramble::engine::dao::DOCUMENT_FILE);
            std::fs::write(&file, serde_json::to_vec_pretty(&doc)?)
                .with_context(|| format!("cannot write `{}`", file.display()))?;
            eprintln!("{name}: {} packages", closure.len());
            for p in &closure {
                eprintln!("  {} {}", p.name, p.version);
            }
            Ok(())
        }
        Some("assemble") => {
            let out = tool::out_dir()?;
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
        _ => bail!("usage: bramble-debian resolve INDEX ARCH NAME PACKAGE... | assemble TREE..."),
    }
}
