//! `bramble-go`: the program Go module builds run inside the sandbox (see `bramble::golang`),
//! through the builtin builder `builtin:bramble-go@N`. Not meant to be run by hand.
//!
//! - `bramble-go modules NAME SRC`: read `SRC/go.mod` and `SRC/go.sum` and write the DAO
//!   document (one pinned fetch per module file, and the proxy step) to
//!   `$out/derivations.json`.
//! - `bramble-go proxy [MODULE VERSION ZIP MOD]...`: lay the fetched files out as a module
//!   proxy in `$out`.
//! - `bramble-go build GOROOT PROXY SRC PACKAGE...`: `go build` the packages of the module in
//!   `SRC` (`.`: the build directory, where the derivation's sources are) offline against the
//!   proxy, the binaries into `$out/bin/`.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use bramble::golang;

mod tool;

fn main() -> ExitCode {
    tool::main(run)
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("modules") if args.len() == 3 => modules(&args[1], Path::new(&args[2])),
        Some("proxy") => {
            let out = tool::out_dir()?;
            let n = golang::proxy::assemble(&out, &args[1..]).map_err(anyhow::Error::msg)?;
            eprintln!("module proxy: {n} module versions");
            Ok(())
        }
        Some("build") if args.len() >= 5 => build(
            Path::new(&args[1]),
            Path::new(&args[2]),
            Path::new(&args[3]),
            &args[4..],
        ),
        _ => bail!(
            "usage: bramble-go modules NAME SRC | proxy [MODULE VERSION ZIP MOD]... | build GOROOT PROXY SRC PACKAGE..."
        ),
    }
}

fn modules(name: &str, src: &Path) -> anyhow::Result<()> {
    let read = |file: &str| {
        let path = src.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read `{}`: {e}", path.display())),
        }
    };
    let Some(go_mod) = read("go.mod")? else {
        return Err(tool::hinted(
            format!("`go.mod` is missing from the sources of `{name}`"),
            "give `go_binary` the module's root (its `src` must hold `go.mod` at the top)",
        ));
    };
    let gomod = golang::parse_go_mod("go.mod", &go_mod).map_err(tool::diagnosed)?;
    let sums = golang::parse_go_sum("go.sum", &read("go.sum")?.unwrap_or_default())
        .map_err(tool::diagnosed)?;
    let modules = golang::modules(&gomod, &sums).map_err(tool::diagnosed)?;
    let out = tool::out_dir()?;
    std::fs::create_dir(&out).with_context(|| format!("cannot create `{}`", out.display()))?;
    let doc = golang::document::document(name, &modules);
    let file = out.join(bramble::engine::dao::DOCUMENT_FILE);
    std::fs::write(&file, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    eprintln!("{name}: {} module versions", modules.len());
    for ((module, version), sums) in &modules {
        let what = if sums.zip.is_some() {
            ""
        } else {
            " (go.mod only)"
        };
        eprintln!("  {module} {version}{what}");
    }
    Ok(())
}

/// Copy the tree `from` to `to` (created), files writable, symlinks as they are.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.with_context(|| format!("cannot read `{}`", from.display()))?;
        let dest = to.join(entry.path().strip_prefix(from)?);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&dest)
                .with_context(|| format!("cannot create `{}`", dest.display()))?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(target, &dest)
                .with_context(|| format!("cannot create `{}`", dest.display()))?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("cannot copy to `{}`", dest.display()))?;
            let mut perms = std::fs::metadata(&dest)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&dest, perms)?;
        }
    }
    Ok(())
}

fn build(goroot: &Path, proxy: &Path, src: &Path, packages: &[String]) -> anyhow::Result<()> {
    let out = tool::out_dir()?;
    let build = std::env::current_dir().context("no working directory")?;
    let module = if src == Path::new(".") {
        build.clone()
    } else {
        let dest = build.join("src");
        copy_tree(src, &dest)?;
        dest
    };
    let cache = build.join(".go");
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create `{}`", bin.display()))?;
    // `go` ignores a go.mod in the temp directory itself, which the sandbox's `/build` is.
    let tmp = cache.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create `{}`", tmp.display()))?;
    let go = goroot.join("bin").join("go");
    let mut goflags = "-mod=mod -modcacherw".to_owned();
    if let Ok(user) = std::env::var("GOFLAGS")
        && !user.trim().is_empty()
    {
        goflags = format!("{goflags} {user}");
    }
    let path = match std::env::var("PATH") {
        Ok(p) if p != "/path-not-set" => format!("{}:{p}", goroot.join("bin").display()),
        _ => goroot.join("bin").display().to_string(),
    };
    let mut cmd = Command::new(&go);
    cmd.current_dir(&module)
        .args(["build", "-trimpath", "-buildvcs=false", "-o"])
        .arg(format!("{}/", bin.display()))
        .args(packages)
        .env("GOROOT", goroot)
        .env("PATH", path)
        .env("GOPROXY", format!("file://{}", proxy.display()))
        .env("GOSUMDB", "off")
        .env("GOFLAGS", goflags)
        .env("GOCACHE", cache.join("cache"))
        .env("GOMODCACHE", cache.join("mod"))
        .env("GOPATH", cache.join("path"))
        .env("GOENV", "off")
        .env("TMPDIR", &tmp)
        .env("HOME", cache.join("home"))
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "on")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0");
    eprintln!(
        "go build -trimpath -buildvcs=false -o $out/bin/ {} (in `{}`)",
        packages.join(" "),
        module.display()
    );
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{}`", go.display()))?;
    if !status.success() {
        bail!("`go build` failed ({status})");
    }
    if std::fs::read_dir(&bin)?.next().is_none() {
        return Err(tool::hinted(
            format!(
                "`go build` wrote no program: none of {} is a main package",
                packages.join(", ")
            ),
            "name the main packages in `packages` (e.g. `[\"./cmd/tool\"]`)",
        ));
    }
    Ok(())
}
