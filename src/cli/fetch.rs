//! `bramble fetch <url>` / `bramble fetch --git <url> --rev <commit>`: fetch into the store and
//! print the pin to write in a `.bramble` file (like `nix-prefetch-url`). With `--hash` the
//! result is checked against a pin instead.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::engine::fetch::{FetchRequest, FetchSpec, Format, Mirrors, Pin, sha256_hex};

use super::{CliError, Context};

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The URL (http or https), or with `--rev` a git remote (URL or absolute path)
    #[arg(value_name = "URL")]
    pub url: String,
    /// Fetch this commit (40 hex digits) of a git remote
    #[arg(long, value_name = "COMMIT")]
    pub rev: Option<String>,
    /// Unpack the download: tar, tar.gz, tar.xz, tar.bz2, tar.zst, zip, deb, or `auto` (from
    /// the URL's extension)
    #[arg(long, value_name = "FORMAT")]
    pub unpack: Option<String>,
    /// Name of the store object [default: the last component of the URL]
    #[arg(long)]
    pub name: Option<String>,
    /// Check the result against this pin (a content hash, `sha256:<hex>`, or for a Go module's
    /// `.zip` or `.mod` its `go.sum` hash `h1:<base64>`)
    #[arg(long, value_name = "PIN")]
    pub hash: Option<String>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// The store name for a URL: its last path component, cut to what a store name allows.
pub fn default_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let last = last.strip_suffix(".git").unwrap_or(last);
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+-._?=".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        "source".to_owned()
    } else {
        cleaned.chars().take(200).collect()
    }
}

pub fn run(args: FetchArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let spec = match &args.rev {
        Some(rev) => {
            if args.unpack.is_some() {
                return Err(CliError::user("`--unpack` does not apply to a git fetch"));
            }
            FetchSpec::Git {
                url: args.url.clone(),
                rev: rev.clone(),
            }
        }
        None => {
            let unpack = match args.unpack.as_deref() {
                None => None,
                Some("auto") => Some(Format::guess(&args.url).ok_or_else(|| {
                    CliError::user(format!(
                        "cannot tell the archive format of `{}` from its name",
                        args.url
                    ))
                    .with_hint(
                        "name it: `--unpack tar.gz` (or tar, tar.xz, tar.bz2, tar.zst, zip, deb)",
                    )
                })?),
                Some(f) => Some(Format::from_name(f).ok_or_else(|| {
                    CliError::user(format!("`{f}` is not an archive format")).with_hint(
                        "use one of tar, tar.gz, tar.xz, tar.bz2, tar.zst, zip, deb or auto",
                    )
                })?),
            };
            FetchSpec::Url {
                url: args.url.clone(),
                unpack,
            }
        }
    };
    let pin = match &args.hash {
        Some(h) => Pin::parse(h).map_err(CliError::user)?,
        None => Pin::default(),
    };
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.url));
    let req = FetchRequest { spec, name, pin };
    // The same checks a fetch derivation gets.
    FetchRequest::from_derivation(&req.to_derivation())?;
    let mut mirrors: Arc<Mirrors> = ctx.mirrors()?.clone();
    if req
        .spec
        .url()
        .starts_with(crate::engine::fetch::mirror::SCHEME)
    {
        // Inside a project, its `[mirrors]` count too.
        let cwd = std::env::current_dir().map_err(|e| {
            CliError::environment(format!("cannot read the working directory: {e}"))
        })?;
        match crate::project::Project::find(&cwd) {
            Ok(project) => {
                if let Some(layer) = project.mirrors {
                    mirrors = Arc::new(mirrors.with_layer(layer));
                }
            }
            Err(crate::project::Error::NoManifest { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut fetcher = ctx.fetcher(Some(&mirrors))?;
    let progress = Arc::new(super::progress::Progress::new(false));
    fetcher.progress = progress.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::environment(format!("cannot start the async runtime: {e}")))?;
    let fetched = runtime.block_on(fetcher.fetch(&req));
    progress.finish();
    let fetched = fetched?;
    let host = fetcher.store.host_path(&fetched.path);
    if args.json {
        let doc = serde_json::json!({
            "url": req.spec.url(),
            "path": host,
            "hash": fetched.hash.to_string(),
            "sha256": fetched.sha256.as_ref().map(sha256_hex),
            "downloaded": fetched.downloaded,
        });
        println!("{doc}");
    } else {
        println!("{}", host.display());
        eprintln!("hash = \"{}\"", fetched.hash);
        if let Some(sha) = &fetched.sha256 {
            eprintln!("sha256 of the download: {}", sha256_hex(sha));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(
            default_name("https://x/a/busybox_1.0+b1_amd64.deb"),
            "busybox_1.0+b1_amd64.deb"
        );
        assert_eq!(default_name("https://x/repo.git"), "repo");
        assert_eq!(default_name("https://x/"), "x");
        assert_eq!(default_name("https://x/a%20b?x=1"), "a-20b");
        assert_eq!(default_name("/srv/.hidden"), "hidden");
    }
}
