//! Archive + hash throughput of a store object, side by side with the peers of
//! `/work/shared/bench/hash.sh`, on the same tree: 5,000 files in 50 directories, 1 KiB to
//! 207 KiB of random content each (~534 MB), generated once under `/var/tmp` exactly as
//! `hash.sh` does (so either reuses the other's tree).
//!
//! Ours runs in this process on one core (`store::local::hash_tree`: dump through fds into
//! the archive writer into sha256). Page cache warm: one warm-up run each, then the median
//! of 5. Run with `cargo bench --bench archive_hash`; `TREE=dir` and `R=runs` override.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bramble::store::local::hash_tree;

const GENERATE: &str = r#"
tree="$1"
rm -rf "$tree"; mkdir -p "$tree"
awk 'BEGIN { srand(42); for (i = 0; i < 5000; i++)
  printf "d%02d/f%04d %d\n", i % 50, i, 1024 + int(rand() * 2 * 103 * 1024) }' |
while read -r f sz; do mkdir -p "$tree/${f%/*}"; head -c "$sz" /dev/urandom > "$tree/$f"; done
echo 0 > "$tree/.salt"; touch "$tree/.complete"
"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_runs(runs: usize, mut f: impl FnMut() -> bool) -> Option<Duration> {
    if !f() {
        return None; // the warm-up failed: tool missing or broken
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        if !f() {
            return None;
        }
        times.push(start.elapsed());
    }
    Some(median(times))
}

fn shell(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn have(tool: &str) -> bool {
    shell(&format!("command -v {tool} >/dev/null 2>&1"))
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not support.
    let tree = PathBuf::from(
        std::env::var("TREE").unwrap_or_else(|_| "/var/tmp/bench-peers/tree500".to_owned()),
    );
    let runs: usize = std::env::var("R")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    if !tree.join(".complete").exists() {
        eprintln!("generating {} (once)...", tree.display());
        let ok = Command::new("bash")
            .arg("-c")
            .arg(GENERATE)
            .arg("generate")
            .arg(&tree)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "could not generate the benchmark tree");
    }
    let bytes = du_bytes(&tree);
    let t = tree.display();
    println!(
        "archive_hash: {} ({} bytes), warm page cache, median of {runs}",
        t, bytes
    );
    let report = |name: &str, d: Option<Duration>| match d {
        Some(d) => println!(
            "  {name:<40} {:>8.0} ms  {:>6.0} MB/s",
            d.as_secs_f64() * 1e3,
            bytes as f64 / 1e6 / d.as_secs_f64()
        ),
        None => println!("  {name:<40} failed"),
    };
    let mut hash = None;
    let ours = time_runs(runs, || {
        hash = Some(hash_tree(&tree).expect("archive the benchmark tree"));
        true
    });
    report("bramble archive+sha256 (1 core)", ours);
    if let Some((h, size)) = hash {
        println!("    archive hash {h}, archive size {size} bytes");
    }
    if have("nix") {
        report(
            "nix hash path",
            time_runs(runs, || shell(&format!("nix hash path {t} >/dev/null"))),
        );
    } else {
        println!(
            "  {:<40} skipped: install with /work/shared/bench/setup.sh",
            "nix hash path"
        );
    }
    report(
        "find|sort|xargs sha256sum",
        time_runs(runs, || {
            shell(&format!(
                "find {t} -type f -print0 | sort -z | xargs -0 sha256sum >/dev/null"
            ))
        }),
    );
    if have("openssl") {
        report(
            "tar --sort=name | openssl dgst -sha256",
            time_runs(runs, || {
                shell(&format!(
                    "tar -c --sort=name -C {t} . | openssl dgst -sha256 >/dev/null"
                ))
            }),
        );
    } else {
        println!("  {:<40} skipped: openssl not installed", "tar | openssl");
    }
}

fn du_bytes(tree: &Path) -> u64 {
    let out = Command::new("du")
        .arg("-sb")
        .arg(tree)
        .output()
        .expect("run du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
