//! The Go bootstrap chain (issue 16, Performance), printed side by side. Only with
//! `BENCH_GO=1`: it downloads Debian's Go packages (~150 MB) from the Debian archive through
//! the machine's apt sources and builds three Go toolchains from source (tens of minutes on
//! two cores the first time; `BRAMBLE_HOME` may name a store that already holds the chain).
//!
//! 1. **Each `make.bash` step** (go1.21.13, go1.23.5, go1.24.4 of `examples/go`): the step's
//!    wall time inside Bramble (`bramble build --check`, its `built go… in` line: copy of the
//!    `-src` tree, `make.bash`, storing the output) against the same step run directly on the
//!    host: the derivation's own script and environment from `bramble eval --json`, with its
//!    inputs' store paths (the same bootstrap toolchain, source tree and zoneinfo.zip) and
//!    `/build` and `$out` in a temp dir. Goal: ≤ 1.15× the host.
//! 2. **No-op rebuild of the whole chain**: `bramble build ./:hello` with everything built
//!    (evaluation, the lock, the store look-ups of ~100 derivations); the fastest of 5.
//!    Goal: ≤ 100 ms.
//!
//! `BENCH_GO=1 cargo bench --bench go`; `BENCH_GO_STEPS=go124` times one step only;
//! `BENCH_GO_DIR` names a copy of `examples/go` to use instead (e.g. one an ordinary user
//! owns, with `BRAMBLE_HOME` the store `.ci/example-go` left with `KEEP=1`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Project {
    dir: PathBuf,
    home: Option<String>,
}

impl Project {
    fn bramble(&self, args: &[&str]) -> (String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bramble"));
        cmd.args(args).current_dir(&self.dir);
        if let Some(h) = &self.home {
            cmd.env("BRAMBLE_HOME", h);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "bramble {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The store paths of functions of the example, by store-path name (`go1.19.8`, ...).
    fn paths(&self, functions: &[&str]) -> BTreeMap<String, String> {
        let mut args = vec!["build", "--no-out-link"];
        let refs: Vec<String> = functions.iter().map(|f| format!("./:{f}")).collect();
        args.extend(refs.iter().map(String::as_str));
        let (stdout, _) = self.bramble(&args);
        stdout
            .lines()
            .map(|p| {
                let base = Path::new(p).file_name().unwrap().to_string_lossy();
                let name = base.split_once('-').unwrap().1.to_owned();
                (name, p.to_owned())
            })
            .collect()
    }
}

/// `{{ <hash>:out }}` replaced by the store path of the derivation `<hash>` names (looked up
/// by its name in `drvs`, a package set's `-set` suffix dropped).
fn substitute(
    value: &str,
    drvs: &serde_json::Map<String, serde_json::Value>,
    paths: &BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("{{ ") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(" }}").unwrap() + start;
        let hash = rest[start + 3..end].split(':').next().unwrap();
        let name = drvs[hash]["name"].as_str().unwrap();
        let name = name.strip_suffix("-set").unwrap_or(name);
        out.push_str(
            paths
                .get(name)
                .unwrap_or_else(|| panic!("no built path for `{name}`")),
        );
        rest = &rest[end + 3..];
    }
    out.push_str(rest);
    out
}

/// Runs step `function`'s derivation script on the host; returns its wall time.
fn on_host(project: &Project, function: &str, paths: &BTreeMap<String, String>) -> f64 {
    let (json, _) = project.bramble(&["eval", "--json", &format!("./:{function}")]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let drvs = doc["derivations"].as_object().unwrap();
    let root = doc["roots"][0]["derivations"][0].as_str().unwrap();
    let drv = &drvs[root];
    let work = tempfile::tempdir().unwrap();
    let build = work.path().join("build");
    std::fs::create_dir(&build).unwrap();
    let out = work.path().join("out");
    let mut cmd = Command::new("/bin/bash");
    cmd.env_clear()
        .current_dir(&build)
        .env("out", &out)
        .env("TMPDIR", &build);
    for arg in drv["args"].as_array().unwrap() {
        cmd.arg(substitute(arg.as_str().unwrap(), drvs, paths));
    }
    for (key, value) in drv["env"].as_object().unwrap() {
        let value = substitute(value.as_str().unwrap(), drvs, paths);
        let value = match value.strip_prefix("/build") {
            Some(rest) => format!("{}{rest}", build.display()),
            None => value,
        };
        cmd.env(key, value);
    }
    let start = Instant::now();
    let result = cmd.output().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        result.status.success(),
        "{function} on the host: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    // The tree is read-only in places (copied from the store); let the temp dir go.
    Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(work.path())
        .status()
        .unwrap();
    elapsed
}

fn main() {
    if std::env::var("BENCH_GO").map_or(true, |v| v != "1") {
        println!("go: skipped (BENCH_GO=1 builds the Go chain from the Debian archive)");
        return;
    }
    let project = Project {
        dir: std::env::var_os("BENCH_GO_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/go"),
            PathBuf::from,
        ),
        home: std::env::var("BRAMBLE_HOME").ok(),
    };
    let start = Instant::now();
    project.bramble(&["build", "--no-out-link", "./:hello"]);
    println!(
        "go chain built (or found) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let paths = project.paths(&[
        "go119", "tzip", "src121", "go121", "src123", "go123", "src124",
    ]);
    let only = std::env::var("BENCH_GO_STEPS").ok();
    for (function, name) in [
        ("go121", "go1.21.13"),
        ("go123", "go1.23.5"),
        ("go124", "go1.24.4"),
    ] {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|s| s == function))
        {
            continue;
        }
        let (_, log) = project.bramble(&[
            "build",
            "--check",
            "--no-out-link",
            &format!("./:{function}"),
        ]);
        let prefix = format!("built {name} in ");
        let inside: f64 = log
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix('s')?.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` line in: {log}"));
        let host = on_host(&project, function, &paths);
        println!(
            "{name} make.bash step: bramble {inside:.1} s (--check rebuild) | host {host:.1} s | {:.2}x",
            inside / host
        );
    }
    let mut noop = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        project.bramble(&["build", "--no-out-link", "./:hello"]);
        noop.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    noop.sort_by(f64::total_cmp);
    println!(
        "no-op rebuild of the chain (./:hello): {:.0} ms (fastest of 5; median {:.0} ms)",
        noop[0], noop[2]
    );
}
