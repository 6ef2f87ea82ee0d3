//! Build limits through the real `bramble` binary, run by the runner as an ordinary user
//! (65534 when the tests run as root): a build over its time
//! limit, one silent for too long, a fork bomb and a memory hog each fail with a message that
//! names the limit, while a sibling build in the same invocation succeeds, and no process of
//! the failed build is left.

use std::process::{Command, Output, Stdio};

use crate::support::Project;
use crate::support::runner::is_root;

const BB: &str = r#"
def bb():
    return derivation(
        name = "busybox",
        builder = "busybox",
        args = ["sh", "-c", "mkdir -p $out/bin && cp busybox $out/bin/busybox"],
        sources = files(["busybox"]),
    )

def sh(name, script, **limits):
    return derivation(name = name, builder = "%s/bin/busybox" % bb(), args = ["sh", "-c", script], **limits)
"#;

/// A project whose `default.bramble` holds `bb()` plus the test's module, with a store, run
/// through the runner (as uid 65534 when the tests are root).
struct Env {
    project: Project,
    root: bool,
}

impl Env {
    fn new(module: &str) -> Env {
        Env {
            project: Project::new("limits", &format!("{BB}\n{module}")),
            root: is_root(),
        }
    }

    /// `bramble ARGS` in the project, through the runner.
    fn command(&self, args: &[&str]) -> Command {
        self.project.command(args)
    }

    /// `bramble build --no-out-link -k ARGS` as the unprivileged uid.
    fn build(&self, args: &[&str]) -> Output {
        let mut all = vec!["build", "--no-out-link", "--keep-going"];
        all.extend_from_slice(args);
        self.command(&all).output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Names of the derivations built (`built <name> in …` lines), but busybox (built first where
/// the store was not seeded).
fn built(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("built "))
        .filter_map(|l| l.split(' ').next())
        .filter(|name| *name != "busybox")
        .map(str::to_owned)
        .collect()
}

/// Processes whose command line contains `token` anywhere.
fn processes_with(token: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.windows(token.len()).any(|w| w == token.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn token(name: &str) -> String {
    format!("bramble-limits-{name}-{}", std::process::id())
}

#[test]
fn a_build_over_its_time_limit_fails_naming_it_and_the_others_finish() {
    let slow = token("slow");
    let env = Env::new(&format!(
        r#"
def slow():
    return sh("slow", "echo started; sleep 60 # {slow}", timeout = "2s")

def after_slow():
    return sh("after-slow", "cat %s > $out" % slow())

def flagged():
    return sh("flagged", "sleep 60 # {slow}")

def quick():
    return sh("quick", "echo fine > $out")
"#
    ));
    // The derivation's own limit wins over the command line's default.
    let out = env.build(&["--timeout", "1h", "./:after_slow", "./:quick"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: building `slow` failed: builder exceeded its time limit of 2s and was killed"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("  > started"), "{stderr}");
    assert!(
        stderr.contains("hint: raise it with `--timeout DURATION`"),
        "{stderr}"
    );
    assert_eq!(built(&out), ["quick"], "{stderr}");
    assert_eq!(
        processes_with(&slow),
        Vec::<u32>::new(),
        "the builder survived"
    );

    // `--timeout` bounds a derivation that sets no limit of its own.
    let out = env.build(&["--timeout", "1s", "./:flagged"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("building `flagged` failed: builder exceeded its time limit of 1s"),
        "{stderr}"
    );
    assert_eq!(
        processes_with(&slow),
        Vec::<u32>::new(),
        "the builder survived"
    );

    let out = env.build(&["--timeout", "soon", "./:quick"]);
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("`--timeout`: `soon` is not a duration"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_silent_build_is_stopped_by_max_silent_time_and_a_chatty_one_is_not() {
    let quiet = token("quiet");
    let env = Env::new(&format!(
        r#"
def quiet():
    return sh("quiet", "echo started; sleep 60 # {quiet}")

def chatty():
    return sh("chatty", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do echo $i; sleep 0.2; done; echo done > $out")

def own():
    return sh("own", "sleep 60 # {quiet}", max_silent_time = 1)
"#
    ));
    let out = env.build(&["--max-silent-time", "1s", "./:quiet", "./:chatty"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "building `quiet` failed: builder printed nothing for 1s (its silence limit) and was killed"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("  > started"), "{stderr}");
    // Three seconds of output, never a second without: not stopped.
    assert_eq!(built(&out), ["chatty"], "{stderr}");
    assert_eq!(
        processes_with(&quiet),
        Vec::<u32>::new(),
        "the builder survived"
    );

    let out = env.build(&["./:own"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("building `own` failed: builder printed nothing for 1s"),
        "{stderr}"
    );
    assert_eq!(
        processes_with(&quiet),
        Vec::<u32>::new(),
        "the builder survived"
    );
}

#[test]
fn a_fork_bomb_fails_its_build_at_the_process_limit_and_a_sibling_builds() {
    let bomb = token("bomb");
    let env = Env::new(&format!(
        r#"
def bomb():
    return sh("bomb", "b() {{ b & b; }}; b # {bomb}", processes = 32)

def flagged():
    return sh("flagged", "b() {{ b & b; }}; b # {bomb}")

def sibling():
    return sh("sibling", "sleep 1; echo fine > $out")
"#
    ));
    // A safety net for the machine should the sandbox's limit not hold: uid 65534 may not
    // have more than 2000 processes (the sandbox's own limit is far lower). Not applied to
    // an ordinary user running the tests, whose desktop may have more threads than that.
    let run = |args: &[&str]| {
        if !env.root {
            return env.build(args);
        }
        let mut all = vec!["--nproc=2000:2000", "--"];
        let cmd = env.command(&[&["build", "--no-out-link", "--keep-going"], args].concat());
        let program = cmd.get_program().to_owned();
        let rest: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        all.push(program.to_str().unwrap());
        let mut prlimit = Command::new("prlimit");
        prlimit.args(&all).args(&rest);
        // The runner's policy: a cleared environment plus its variables.
        prlimit.env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                prlimit.env(k, v);
            }
        }
        prlimit
            .current_dir(cmd.get_current_dir().unwrap())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["./:bomb", "./:sibling"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "building `bomb` failed: builder reached its limit of 32 processes (a fork failed)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: raise it with `--max-processes N`"),
        "{stderr}"
    );
    assert_eq!(built(&out), ["sibling"], "{stderr}");
    assert_eq!(
        processes_with(&bomb),
        Vec::<u32>::new(),
        "the bomb survived"
    );

    let out = run(&["--max-processes", "16", "./:flagged"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("building `flagged` failed: builder reached its limit of 16 processes"),
        "{stderr}"
    );
    assert_eq!(
        processes_with(&bomb),
        Vec::<u32>::new(),
        "the bomb survived"
    );
}

#[test]
fn a_memory_hog_fails_its_build_at_the_memory_limit_and_a_sibling_builds() {
    let hog = token("hog");
    let env = Env::new(&format!(
        r#"
def hog():
    # `tail` keeps the last line in memory: /dev/zero has no newline.
    return sh("hog", "set -e; head -c 300m /dev/zero | tail > /dev/null; echo no > $out # {hog}", memory = "64M")

def sibling():
    return sh("sibling", "head -c 16m /dev/zero | tail > /dev/null; echo fine > $out", memory = "64M")

def flagged():
    return sh("flagged", "set -e; head -c 300m /dev/zero | tail > /dev/null; echo no > $out # {hog}")
"#
    ));
    let out = env.build(&["./:hog", "./:sibling"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "building `hog` failed: builder exceeded its memory limit of 64 MiB per process (exited with code 1: an allocation failed)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: raise it with `--max-memory SIZE`"),
        "{stderr}"
    );
    assert_eq!(built(&out), ["sibling"], "{stderr}");
    assert_eq!(processes_with(&hog), Vec::<u32>::new(), "the hog survived");

    let out = env.build(&["--max-memory", "100M", "./:flagged"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("building `flagged` failed: builder exceeded its memory limit of 100 MiB"),
        "{stderr}"
    );
    // Without a limit (0) the same build succeeds: it was the limit that stopped it.
    let out = env.build(&["--max-memory", "0", "./:flagged"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
