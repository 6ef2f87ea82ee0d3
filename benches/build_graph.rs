//! Build-graph benchmark, same workloads as `/work/shared/bench/graph.sh` (Nix 2.8):
//!
//! - wide-N: N independent leaves (`busybox sh -c "echo i > $out"`) plus a root that depends
//!   on all of them; cold (fresh salt: every derivation new) then a no-op rebuild;
//! - chain-N: N derivations, each depending on the previous one;
//! - no-op rebuild of wide-10000.
//!
//! Bramble runs the real binaries (`bramble` and the helper as installed: the static
//! `bramble-sandbox` of `cargo static-helper`) with `-j 2`, sandbox always on, against a
//! private `BRAMBLE_HOME`. The busybox bootstrap derivation is built once,
//! untimed (Nix gets `/bin/busybox` from `extra-sandbox-paths`). Nix figures come from
//! `graph.sh` in the same run when `nix-instantiate` is installed (`setup.sh` installs it),
//! else they are reported as skipped.
//!
//! `cargo bench --bench build_graph`; `BENCH_RUNS` (default 3) repetitions, `BENCH_NIX=0`
//! skips Nix, `BENCH_WIDE_BIG` (default 10000) sizes the large no-op.
//! `BENCH_PREPARE=<dir>` only prepares: a bootstrapped store at `<dir>/home` and the
//! workloads `wide.json`, `chain.json`, `big.json` (fresh salts) in `<dir>`, for profiling
//! single runs by hand (`BRAMBLE_HOME=<dir>/home bramble build --derivations <dir>/wide.json
//! -j 2 --no-out-link`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bramble::store::{Derivation, Sources, StorePath};

#[path = "support/static_helper.rs"]
mod static_helper;

const BUSYBOX: &str = "/bin/busybox";
const GRAPH_SH: &str = "/work/shared/bench/graph.sh";

struct Bench {
    home: tempfile::TempDir,
    dir: tempfile::TempDir,
    busybox: Derivation,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    ms: f64,
    max_rss_kib: i64,
}

impl Bench {
    fn new() -> Bench {
        let home = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bootstrap");
        std::fs::create_dir(&src).unwrap();
        std::fs::copy(BUSYBOX, src.join("busybox")).expect("apt-get install busybox-static");
        let mut b = Bench {
            home,
            dir,
            busybox: Derivation::new("busybox", "busybox"),
        };
        let out = b
            .command(&["store", "add", src.to_str().unwrap(), "--name", "source"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = StorePath::from_path_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
        b.busybox.args = vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p $out/bin && cp busybox $out/bin/busybox".into(),
        ];
        b.busybox.sources = Some(Sources {
            files: vec!["busybox".into()],
            path,
        });
        let bb = b.busybox.clone();
        b.build(&b.write("bootstrap.json", &[], &bb));
        b
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bramble"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("BRAMBLE_HOME", self.home.path())
            .env("BRAMBLE_SANDBOX", static_helper::static_helper());
        cmd
    }

    fn step(&self, name: &str, script: &str, env: &[(&str, String)]) -> Derivation {
        let mut d = Derivation::new(
            name,
            format!("{}/bin/busybox", self.busybox.output_ref("out").template()),
        );
        d.args = vec!["sh".into(), "-c".into(), script.into()];
        d.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        d
    }

    fn wide(&self, n: usize, salt: &str) -> (Vec<Derivation>, Derivation) {
        let leaves: Vec<Derivation> = (0..n)
            .map(|i| {
                self.step(
                    &format!("leaf-{i}"),
                    &format!("echo {i} > $out"),
                    &[("salt", salt.to_owned())],
                )
            })
            .collect();
        // graph.sh passes the leaves in one variable; one environment string is limited to
        // 128 KiB (MAX_ARG_STRLEN), so larger graphs spread them over several.
        let templates: Vec<String> = leaves
            .iter()
            .map(|l| l.output_ref("out").template())
            .collect();
        let chunks: Vec<&[String]> = templates.chunks(1000).collect();
        let names: Vec<String> = (0..chunks.len())
            .map(|i| {
                if i == 0 {
                    "deps".into()
                } else {
                    format!("deps{i}")
                }
            })
            .collect();
        let mut env = vec![("salt", salt.to_owned())];
        for (name, chunk) in names.iter().zip(&chunks) {
            env.push((name.as_str(), chunk.join(" ")));
        }
        let vars: Vec<String> = names.iter().map(|n| format!("${n}")).collect();
        let root = self.step(
            "wide-root",
            &format!("echo {} > $out", vars.join(" ")),
            &env,
        );
        let mut all = leaves;
        all.push(root.clone());
        (all, root)
    }

    fn chain(&self, n: usize, salt: &str) -> (Vec<Derivation>, Derivation) {
        let mut all: Vec<Derivation> = Vec::new();
        for i in 0..n {
            let prev = all
                .last()
                .map(|p| p.output_ref("out").template())
                .unwrap_or_default();
            all.push(self.step(
                &format!("chain-{i}"),
                &format!("echo {i} > $out"),
                &[("salt", salt.to_owned()), ("prev", prev)],
            ));
        }
        let root = all.last().unwrap().clone();
        (all, root)
    }

    fn write(&self, file: &str, drvs: &[Derivation], root: &Derivation) -> PathBuf {
        let mut values: Vec<serde_json::Value> =
            vec![serde_json::from_str(&self.busybox.canonical_json()).unwrap()];
        values.extend(
            drvs.iter()
                .map(|d| serde_json::from_str(&d.canonical_json()).unwrap()),
        );
        let doc = serde_json::json!({ "derivations": values, "roots": [root.hash().to_string()] });
        let path = self.dir.path().join(file);
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    /// One `bramble build`, timed, with the peak RSS of bramble and its helpers.
    fn build(&self, file: &Path) -> Run {
        let start = Instant::now();
        let out = self
            .command(&[
                "build",
                "--derivations",
                file.to_str().unwrap(),
                "-j",
                "2",
                "--no-out-link",
            ])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let usage =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
        Run {
            ms,
            max_rss_kib: usage.max_rss(),
        }
    }
}

/// `BENCH_PREPARE`: keep the bootstrapped store and write the workloads into `dir`.
fn prepare(bench: Bench, dir: &Path, wide_n: usize, chain_n: usize, big_n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let salt = format!("{:?}", std::time::SystemTime::now());
    let workloads = [
        ("wide.json", bench.wide(wide_n, &format!("wide-{salt}"))),
        ("chain.json", bench.chain(chain_n, &format!("chain-{salt}"))),
        ("big.json", bench.wide(big_n, &format!("big-{salt}"))),
    ];
    for (file, (drvs, root)) in workloads {
        let written = bench.write(file, &drvs, &root);
        std::fs::rename(&written, dir.join(file)).unwrap();
    }
    let home = bench.home.keep();
    std::fs::rename(&home, dir.join("home")).unwrap();
    eprintln!(
        "prepared {} (home: {})",
        dir.display(),
        dir.join("home").display()
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// `graph.sh <shape> <n> true` with `R=runs`: its last line is JSON.
fn nix(shape: &str, n: usize, runs: usize) -> Option<serde_json::Value> {
    let wanted = std::env::var("BENCH_NIX").map_or(true, |v| v != "0");
    let have = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !wanted || !have || !Path::new(GRAPH_SH).exists() {
        return None;
    }
    let out = Command::new(GRAPH_SH)
        .args([shape, &n.to_string(), "true"])
        .env("R", runs.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last()?).ok()
}

fn nix_cell(v: &Option<serde_json::Value>, key: &str) -> String {
    match v {
        Some(v) => format!(
            "{:.3} (min {:.3})",
            v[key]["median"].as_f64().unwrap_or(f64::NAN),
            v[key]["min"].as_f64().unwrap_or(f64::NAN)
        ),
        None => "skipped (BENCH_NIX=0 or no nix)".into(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a tiny
    // version then so the bench stays compiled and working.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let (wide_n, chain_n, big_n) = if quick {
        (20, 5, 50)
    } else {
        let big = std::env::var("BENCH_WIDE_BIG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        (1000, 100, big)
    };
    let bench = Bench::new();
    if let Some(dir) = std::env::var_os("BENCH_PREPARE") {
        prepare(bench, Path::new(&dir), wide_n, chain_n, big_n);
        return;
    }
    let nanos = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };

    let (mut cold, mut noop, mut chain) = (Vec::new(), Vec::new(), Vec::new());
    let mut rss = 0;
    for r in 0..runs {
        let (drvs, root) = bench.wide(wide_n, &format!("wide-{}", nanos()));
        let file = bench.write(&format!("wide-{r}.json"), &drvs, &root);
        let c = bench.build(&file);
        let w = bench.build(&file);
        eprintln!(
            "run {r}: wide-{wide_n} cold {:.0} ms, no-op {:.1} ms",
            c.ms, w.ms
        );
        cold.push(c.ms / (wide_n + 1) as f64);
        noop.push(w.ms);
        let (drvs, root) = bench.chain(chain_n, &format!("chain-{}", nanos()));
        let file = bench.write(&format!("chain-{r}.json"), &drvs, &root);
        let ch = bench.build(&file);
        eprintln!("run {r}: chain-{chain_n} {:.0} ms", ch.ms);
        chain.push(ch.ms / chain_n as f64);
        rss = rss.max(c.max_rss_kib).max(ch.max_rss_kib);
    }
    let (drvs, root) = bench.wide(big_n, &format!("big-{}", nanos()));
    let file = bench.write("big.json", &drvs, &root);
    let big_cold = bench.build(&file);
    let mut big_noop = Vec::new();
    for _ in 0..runs {
        big_noop.push(bench.build(&file).ms);
    }
    rss = rss.max(big_cold.max_rss_kib);

    let nix_wide = if quick {
        None
    } else {
        nix("wide", wide_n, runs)
    };
    let nix_chain = if quick {
        None
    } else {
        nix("chain", chain_n, runs)
    };

    println!("build_graph: {runs} run(s), -j 2 / --max-jobs 2, sandbox on; median (min)");
    println!("{:<34} {:>26} {:>32}", "workload", "bramble", "nix 2.8");
    println!(
        "{:<34} {:>26} {:>32}",
        format!("wide-{wide_n} cold, ms/drv"),
        format!("{:.3} (min {:.3})", median(cold.clone()), min(&cold)),
        nix_cell(&nix_wide, "cold_ms_per_drv")
    );
    println!(
        "{:<34} {:>26} {:>32}",
        format!("chain-{chain_n}, ms/drv"),
        format!("{:.3} (min {:.3})", median(chain.clone()), min(&chain)),
        nix_cell(&nix_chain, "cold_ms_per_drv")
    );
    println!(
        "{:<34} {:>26} {:>32}",
        format!("wide-{wide_n} no-op rebuild, ms"),
        format!("{:.1} (min {:.1})", median(noop.clone()), min(&noop)),
        nix_cell(&nix_wide, "warm_ms")
    );
    println!(
        "{:<34} {:>26} {:>32}",
        format!("wide-{big_n} no-op rebuild, ms"),
        format!(
            "{:.1} (min {:.1})",
            median(big_noop.clone()),
            min(&big_noop)
        ),
        "-"
    );
    println!(
        "{:<34} {:>26}",
        format!("wide-{big_n} cold, ms/drv"),
        format!("{:.3}", big_cold.ms / (big_n + 1) as f64)
    );
    println!(
        "{:<34} {:>26}",
        "peak RSS (bramble or a helper)",
        format!("{} MiB", rss / 1024)
    );
}
