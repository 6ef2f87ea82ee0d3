//! Start-to-exit latency of a trivial builder (`/bin/true`): `bramble-sandbox` side by side
//! with `bwrap` of an equivalent configuration, `unshare` with the same namespaces, and a bare
//! exec (the command lines of `/work/shared/bench/sandbox-startup.sh`).
//!
//! `cargo bench --bench sandbox_startup` (env `RUNS`, default 300). As root, the whole table is
//! measured twice: as root, and as uid 65534 (the rootless case: the bench re-executes itself
//! under `setpriv` from a world-readable copy). A missing peer is reported and skipped.
//!
//! Two builds of the helper are measured: the one that is installed, statically linked (built
//! here with `cargo static-helper`, see `.cargo/config.toml`), and the one `cargo build` links
//! dynamically. `-- --helper LABEL=PATH` (repeatable) adds another build as a row of its own.
//! One more row is the installed helper as the build engine runs it: started ahead with
//! `--warm --status-fd 0` and given a moment to set up (not timed), then timed from writing the
//! spec to reading the early status (the part left on a build's path; the teardown after it
//! is not waited for).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bramble_sandbox::{Bind, Spec, Symlink};

#[path = "../../benches/support/static_helper.rs"]
mod static_helper;

const BWRAP: &str = "bwrap --unshare-all --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --proc /proc --dev /dev /bin/true";
const UNSHARE: &str =
    "unshare --user --map-root-user --mount --pid --net --ipc --uts --fork /bin/true";
const WARMUP: usize = 20;

/// One measured command: argv, and a spec to write on stdin (the helper only).
struct Case {
    name: String,
    argv: Vec<String>,
    stdin: Option<String>,
    /// `argv` is a helper started `--warm --status-fd 0`: time spec to status only.
    warm: bool,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// The helper's spec equivalent to the bwrap line: /usr read-only, the usual symlinks, fresh
/// /proc and /dev, no network.
fn spec() -> Spec {
    let mut spec = Spec::new("/bin/true");
    spec.cwd = "/".into();
    spec.binds.push(Bind {
        source: "/usr".into(),
        target: "/usr".into(),
        writable: false,
    });
    for (path, to) in [
        ("/bin", "usr/bin"),
        ("/lib", "usr/lib"),
        ("/lib64", "usr/lib64"),
    ] {
        spec.symlinks.push(Symlink {
            path: path.into(),
            to: to.into(),
        });
    }
    spec
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A warm helper: started and left to set up untimed, then spec to early status timed.
fn run_warm(case: &Case) -> Result<Duration, String> {
    use std::io::Read;
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
    let mut child = Command::new(&case.argv[0])
        .args(["--warm", "--status-fd", "0"])
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stdout(Stdio::null())
        .current_dir("/")
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", case.argv[0]))?;
    std::thread::sleep(Duration::from_millis(20));
    let json = case.stdin.as_deref().unwrap_or_default();
    let start = Instant::now();
    ours.write_all(json.as_bytes())
        .and_then(|()| ours.shutdown(std::net::Shutdown::Write))
        .map_err(|e| e.to_string())?;
    // The status record of a builder that exited 0 (see `bramble_sandbox::Status`).
    let mut status = [0u8; 2];
    ours.read_exact(&mut status).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    let exited = child.wait().map_err(|e| e.to_string())?;
    if status != *b"B\0" || !exited.success() {
        return Err(format!("warm `{}` failed: {exited}", case.argv[0]));
    }
    Ok(elapsed)
}

fn run_once(case: &Case) -> Result<Duration, String> {
    if case.warm {
        return run_warm(case);
    }
    let start = Instant::now();
    let mut child = Command::new(&case.argv[0])
        .args(&case.argv[1..])
        .stdin(if case.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .current_dir("/")
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", case.argv[0]))?;
    if let Some(json) = &case.stdin {
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        stdin
            .write_all(json.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("`{}` exited with {status}", case.argv.join(" ")));
    }
    Ok(elapsed)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Measures every case, interleaved round by round so machine noise hits all alike.
/// `helpers`: (row name, path) of each helper build, the default one first.
fn measure(helpers: &[(String, PathBuf)], runs: usize, who: &str) {
    let mut cases: Vec<Case> = helpers
        .iter()
        .map(|(name, path)| Case {
            name: name.clone(),
            argv: vec![path.display().to_string()],
            stdin: Some(spec().to_json()),
            warm: false,
        })
        .collect();
    if let Some((name, path)) = helpers.first() {
        cases.push(Case {
            name: format!("{name}, warm: spec to status"),
            argv: vec![path.display().to_string()],
            stdin: Some(spec().to_json()),
            warm: true,
        });
    }
    for (name, line, program, install) in [
        (
            "bwrap (unshare-all)",
            BWRAP,
            "bwrap",
            "apt-get install -y bubblewrap",
        ),
        (
            "unshare (same ns)",
            UNSHARE,
            "unshare",
            "apt-get install -y util-linux",
        ),
        ("bare exec", "/bin/true", "true", ""),
    ] {
        if on_path(program) || program == "true" {
            cases.push(Case {
                name: name.to_owned(),
                argv: words(line),
                stdin: None,
                warm: false,
            });
        } else {
            println!("{who}: {name} skipped: `{program}` not found (install: {install})");
        }
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); cases.len()];
    let mut failed: Vec<Option<String>> = vec![None; cases.len()];
    for round in 0..WARMUP + runs {
        for (i, case) in cases.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            match run_once(case) {
                Ok(t) if round >= WARMUP => times[i].push(t),
                Ok(_) => {}
                Err(e) => failed[i] = Some(e),
            }
        }
    }
    println!("\n{who}: start-to-exit of /bin/true, {runs} runs each");
    println!(
        "{:<48} {:>9} {:>9} {:>9}",
        "command", "p50 ms", "p95 ms", "min ms"
    );
    for (i, case) in cases.iter().enumerate() {
        if let Some(e) = &failed[i] {
            println!("{:<48} skipped: {e}", case.name);
            continue;
        }
        let t = &mut times[i];
        t.sort();
        println!(
            "{:<48} {:>9.2} {:>9.2} {:>9.2}",
            case.name,
            percentile(t, 0.50),
            percentile(t, 0.95),
            percentile(t, 0.0)
        );
    }
}

/// `--helper LABEL=PATH` (or `--helper PATH`, labelled by its file name) arguments.
fn extra_helpers(args: &[String]) -> Vec<(String, PathBuf)> {
    args.windows(2)
        .filter(|w| w[0] == "--helper")
        .map(|w| match w[1].split_once('=') {
            Some((label, path)) => (label.to_owned(), path.into()),
            None => {
                let path = PathBuf::from(&w[1]);
                let label = path
                    .file_name()
                    .map_or_else(|| w[1].clone(), |n| n.to_string_lossy().into_owned());
                (label, path)
            }
        })
        .collect()
}

/// The measured helpers: (row name, path) of each `--helper`.
fn helpers(args: &[String]) -> Vec<(String, PathBuf)> {
    extra_helpers(args)
        .into_iter()
        .map(|(label, path)| (format!("bramble-sandbox ({label})"), path))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    // Re-executed as the unprivileged user with every helper as `--helper LABEL=PATH`.
    if args.iter().any(|a| a == "--as-user") {
        measure(&helpers(&args), runs, "uid 65534");
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("sandbox_startup: bench");
        return;
    }

    // A world-readable copy of each helper and of this bench (the target dir may be rebuilt
    // meanwhile, and uid 65534 may not enter it).
    let dir = tempfile::Builder::new()
        .prefix("bramble-bench-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let chmod = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    chmod(dir.path(), 0o755);
    let copy = |from: &Path, name: &str| {
        let to = dir.path().join(name);
        std::fs::copy(from, &to).expect("copy binary");
        chmod(&to, 0o755);
        to
    };
    // The installed helper (static) first, then the one `cargo build` links dynamically.
    let mut builds = vec![
        (
            "static".to_owned(),
            static_helper::static_helper().to_owned(),
        ),
        (
            "dynamic".to_owned(),
            env!("CARGO_BIN_EXE_bramble-sandbox").into(),
        ),
    ];
    builds.extend(extra_helpers(&args));
    let mut as_args = Vec::new();
    for (i, (label, path)) in builds.iter().enumerate() {
        as_args.push("--helper".to_owned());
        as_args.push(format!(
            "{label}={}",
            copy(path, &format!("helper-{i}")).display()
        ));
    }
    let me = copy(&std::env::current_exe().expect("current exe"), "bench");

    let is_root = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        .unwrap_or(false);
    measure(
        &helpers(&as_args),
        runs,
        if is_root { "root" } else { "current user" },
    );
    if is_root {
        let status = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&me)
            .arg("--as-user")
            .args(&as_args)
            .env("RUNS", runs.to_string())
            .current_dir("/")
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            println!("uid 65534: skipped ({status:?})");
        }
    }
}
