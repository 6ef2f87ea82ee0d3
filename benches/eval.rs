//! Evaluation benchmark (not a test): generated projects evaluated and hashed by Bramble,
//! side by side with `nix-instantiate --readonly-mode` of the equivalent Nix expressions
//! (`/work/shared/bench/{wide,chain}.nix`), in the same run.
//!
//! Cases: `wide` (10,000 independent derivations plus a root depending on all) and `chain`
//! (1,000 derivations, each depending on the previous one). Every measurement runs in its own
//! child process so peak RSS is per case:
//! - `bramble (in-process)`: `project::evaluate` (parse, evaluate, hash every derivation,
//!   close the graph); time measured around the call, peak RSS from `VmHWM`;
//! - `bramble eval --json`: the real binary end to end (startup, evaluation, JSON on stdout);
//! - `nix-instantiate --readonly-mode` (evaluation and hashing, writes nothing), with a fresh
//!   salt per run.
//!
//! Child processes' time is wall clock; their peak RSS is `getrusage(RUSAGE_CHILDREN)` read
//! in a wrapper process that runs exactly one child. Median of `BENCH_RUNS` (default 5) runs.
//!
//! Run: `cargo bench --bench eval`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use bramble::project::{self, MemorySources, Project};

const WIDE_N: usize = 10_000;
const CHAIN_N: usize = 1_000;
const NIX_DIR: &str = "/work/shared/bench";

fn wide_source(n: usize) -> String {
    format!(
        r#"
def wide():
    leaves = [
        derivation(
            "leaf-" + str(i),
            "/bin/busybox",
            args = ["sh", "-c", "echo " + str(i) + " > $out"],
            env = {{"salt": "0"}},
        )
        for i in range({n})
    ]
    return derivation(
        "wide-root",
        "/bin/busybox",
        args = ["sh", "-c", "echo $deps > $out"],
        env = {{"deps": " ".join([str(l) for l in leaves]), "salt": "0"}},
    )
"#
    )
}

fn chain_source(n: usize) -> String {
    format!(
        r#"
def chain():
    prev = ""
    for i in range({n}):
        prev = derivation(
            "chain-" + str(i),
            "/bin/busybox",
            args = ["sh", "-c", "echo " + str(i) + " > $out"],
            env = {{"prev": str(prev), "salt": "0"}},
        )
    return prev
"#
    )
}

fn write_project(dir: &Path) {
    std::fs::write(
        dir.join("bramble.toml"),
        "[package]\nname = \"bench.example/eval\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("wide.bramble"), wide_source(WIDE_N)).unwrap();
    std::fs::write(dir.join("chain.bramble"), chain_source(CHAIN_N)).unwrap();
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn children_maxrss_kb() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss() as u64)
        .unwrap_or(0)
}

/// User + system CPU time in ms of this process (`RUSAGE_SELF`) or its waited children.
fn cpu_ms(who: nix::sys::resource::UsageWho) -> f64 {
    nix::sys::resource::getrusage(who)
        .map(|u| {
            let t =
                |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e3 + tv.tv_usec() as f64 / 1e3;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// Child mode 1: evaluate `reference` in-process. Prints `ms rss_kb derivations`.
fn child_in_process(dir: &Path, reference: &str) {
    let project = Project::find(dir).unwrap();
    let cpu_start = cpu_ms(nix::sys::resource::UsageWho::RUSAGE_SELF);
    let start = Instant::now();
    let evaluation = project::evaluate(
        &project,
        dir,
        &[reference.to_owned()],
        &MemorySources::default(),
        &|_| {},
    )
    .unwrap();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let cpu = cpu_ms(nix::sys::resource::UsageWho::RUSAGE_SELF) - cpu_start;
    println!(
        "{ms:.1} {} {cpu:.1} {}",
        vm_hwm_kb(),
        evaluation.derivations.len()
    );
}

/// Child mode 2: run one command, print `ms maxrss_kb`.
fn child_command(program: &str, args: &[String], dir: &Path) {
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(status.success(), "{program} {args:?} failed");
    let cpu = cpu_ms(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    println!("{ms:.1} {} {cpu:.1}", children_maxrss_kb());
}

fn run_child(args: &[String]) -> Vec<f64> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    what: String,
    ms: f64,
    rss_mb: f64,
    cpu_ms: f64,
}

fn measure(what: &str, runs: usize, args: impl Fn(usize) -> Vec<String>) -> Row {
    let results: Vec<Vec<f64>> = (0..runs).map(|run| run_child(&args(run))).collect();
    Row {
        what: what.to_owned(),
        ms: median(results.iter().map(|r| r[0]).collect()),
        rss_mb: median(results.iter().map(|r| r[1]).collect()) / 1024.0,
        cpu_ms: median(results.iter().map(|r| r[2]).collect()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--in-process") => return child_in_process(Path::new(&args[1]), &args[2]),
        Some("--command") => return child_command(&args[1], &args[3..], Path::new(&args[2])),
        _ => {}
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_project(&dir);
    let bramble_bin = env!("CARGO_BIN_EXE_bramble");
    let nix = which("nix-instantiate");
    let dir_s = dir.to_str().unwrap().to_owned();
    println!("evaluation benchmark: median of {runs} runs, each in its own process");
    for (case, reference, n, nix_file) in [
        ("wide", "./wide:wide", WIDE_N, "wide.nix"),
        ("chain", "./chain:chain", CHAIN_N, "chain.nix"),
    ] {
        let drvs = run_child(&["--in-process".into(), dir_s.clone(), reference.into()])[3];
        let mut rows = vec![
            measure("bramble (in-process eval + hash)", runs, |_| {
                vec!["--in-process".into(), dir_s.clone(), reference.into()]
            }),
            measure("bramble eval --json (binary)", runs, |_| {
                vec![
                    "--command".into(),
                    bramble_bin.into(),
                    dir_s.clone(),
                    "eval".into(),
                    "--json".into(),
                    reference.into(),
                ]
            }),
        ];
        if let Some(nix) = &nix {
            rows.push(measure("nix-instantiate --readonly-mode", runs, |run| {
                vec![
                    "--command".into(),
                    nix.to_str().unwrap().into(),
                    dir_s.clone(),
                    "--readonly-mode".into(),
                    format!("{NIX_DIR}/{nix_file}"),
                    "--arg".into(),
                    "n".into(),
                    n.to_string(),
                    "--argstr".into(),
                    "salt".into(),
                    format!("bench-{}-{run}", std::process::id()),
                ]
            }));
        }
        println!("\n{case}: {drvs} derivations");
        println!(
            "  {:<34} {:>9} {:>9} {:>12} {:>9}",
            "", "wall ms", "cpu ms", "peak RSS MB", "µs/drv"
        );
        for row in &rows {
            println!(
                "  {:<34} {:>9.1} {:>9.1} {:>12.1} {:>9.2}",
                row.what,
                row.ms,
                row.cpu_ms,
                row.rss_mb,
                row.ms * 1e3 / drvs
            );
        }
        if nix.is_none() {
            println!("  nix-instantiate: skipped: install with /work/shared/bench/setup.sh");
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
