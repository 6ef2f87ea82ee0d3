//! `bramble build`, `run`, `test` and `log` on a `.bramble` project that ships a static
//! busybox as a source (copied from `busybox-static` at test time).

use crate::support::{Project, stderr, stdout, with_stdin};

const MODULE: &str = r#"
def busybox():
    return derivation(
        "busybox",
        "busybox",
        args = ["sh", "-c", "mkdir -p $out/bin && cp busybox $out/bin/busybox && ln -s busybox $out/bin/sh"],
        sources = files(["busybox"]),
    )

def _sh(name, script, **kwargs):
    return derivation(name, busybox().out + "/bin/busybox", args = ["sh", "-c", script, name], **kwargs)

def greeting():
    return _sh("greeting", "echo hello from $NAME > $out", env = {"NAME": "bramble"})

def tool():
    bb = busybox()
    script = (
        "mkdir -p $out/bin; " +
        "printf '#!%s/bin/sh\\necho tool says \"$*\"; cat input.txt; echo written > out/output.txt; exit 3\\n' " +
        "> $out/bin/tool; chmod +x $out/bin/tool"
    )
    return _sh("tool", script % bb.out)

def app():
    return run(tool(), "bin/tool", args = ["a"], paths = ["out"])

def checker():
    return _sh("checker", "echo checking $1; [ \"$1\" = good ]")

def tests():
    test(checker(), args = ["good"])
    test(checker(), args = ["bad"])

def good_tests():
    test(checker(), args = ["good"])
"#;

fn project() -> Project {
    Project::new("example.com/buildtest", MODULE)
}

#[test]
fn build_a_reference_prints_the_path_and_links_result() {
    let p = project();
    let out = p.bramble(&["build", "./:greeting"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out).trim().to_owned();
    assert!(path.ends_with("-greeting"), "{path}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "hello from bramble\n"
    );
    let link = p.dir.path().join("result");
    assert_eq!(
        std::fs::read_link(&link).unwrap().to_str(),
        Some(path.as_str())
    );
    // The link is a gc root: gc keeps the output.
    let gc = p.bramble(&["gc"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(std::path::Path::new(&path).exists());
    // gc removed busybox (only a build-time input): building again rebuilds it, to the same
    // content, so the greeting's build key is unchanged and it is not rebuilt.
    let again = p.bramble(&["build", "./:greeting"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), path);
    assert!(
        !stderr(&again).contains("built greeting"),
        "{}",
        stderr(&again)
    );
    // Nothing changed: nothing is built.
    let third = p.bramble(&["build", "./:greeting"]);
    assert_eq!(stdout(&third).trim(), path);
    assert!(!stderr(&third).contains("built "), "{}", stderr(&third));
}

#[test]
fn run_passes_args_binds_the_project_and_exit_code() {
    let p = project();
    std::fs::write(p.dir.path().join("input.txt"), "project file\n").unwrap();
    std::fs::create_dir(p.dir.path().join("out")).unwrap();
    let out = p.bramble(&["run", "./:app", "b", "c"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "tool says a b c\nproject file\n");
    assert_eq!(
        std::fs::read_to_string(p.dir.path().join("out/output.txt")).unwrap(),
        "written\n"
    );
    // A derivation reference takes the command from the arguments.
    let out = p.bramble(&["run", "./:tool", "bin/tool", "x"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("tool says x\n"));
}

#[test]
fn run_reads_stdin() {
    let p = project();
    let out = with_stdin(
        p.command(&["run", "./:busybox", "bin/busybox", "sh"]),
        b"echo from stdin; exit 5\n",
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from stdin\n");
}

#[test]
fn test_reports_each_test_and_fails_if_one_fails() {
    let p = project();
    let out = p.bramble(&["test", "./:tests"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("pass checker"), "{text}");
    assert!(text.contains("FAIL checker"), "{text}");
    assert!(stderr(&out).contains("> checking bad"), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 passed, 1 failed"));
    let good = p.bramble(&["test", "./:good_tests"]);
    assert!(good.status.success(), "{}", stderr(&good));
    assert_eq!(stdout(&good).lines().count(), 1);
}

#[test]
fn log_of_a_reference() {
    let p = project();
    let out = p.bramble(&["build", "./:checker", "--no-out-link"]);
    assert!(!out.status.success());
    let log = p.bramble(&["log", "./:checker"]);
    assert!(log.status.success(), "{}", stderr(&log));
    assert_eq!(stdout(&log), "checking\n");
}

/// Stands for the path of the test's directory outside the project in its module.
const EXTRA: &str = "@EXTRA@";

/// `run()`'s `paths` (read-write, also outside the project), `read_only_paths`, `hidden_paths`
/// and `network`, checked from inside the sandbox and on the host afterwards.
#[test]
fn run_honours_paths_read_only_hidden_and_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            use std::io::Write;
            let _ = stream.and_then(|mut s| s.write_all(b"hello from the host\n"));
        }
    });
    let module = format!(
        r#"{MODULE}
SCRIPT = """
echo new > rw/new && echo rw-written
echo changed > ro/file 2>/dev/null && echo RO-WRITTEN || echo ro-refused
busybox cat ro/file
[ -e secret/key ] && echo SECRET-VISIBLE || echo secret-hidden
busybox ls -A secret | busybox wc -l
echo outside > {extra}/from-sandbox && echo extra-written
[ -e /etc/passwd ] && echo HOST-VISIBLE || echo host-hidden
"""

def paths():
    return run(busybox(), "bin/sh", args = ["-c", SCRIPT],
        paths = ["rw", "{extra}"], read_only_paths = ["ro"], hidden_paths = ["secret"])

def online():
    return run(busybox(), "bin/busybox", args = ["nc", "127.0.0.1", "{port}"], network = True)

def offline():
    return run(busybox(), "bin/busybox", args = ["nc", "127.0.0.1", "{port}"])

def missing():
    return run(busybox(), "bin/busybox", args = ["true"], paths = ["nope"])

def hidden_missing():
    return run(busybox(), "bin/busybox", args = ["true"], hidden_paths = ["not-there"])
"#,
        extra = EXTRA,
    );
    let p = Project::new("example.com/runpaths", MODULE);
    // A directory outside the project, writable by the user bramble runs as.
    let extra = p.bramble.tempdir();
    let module = module.replace(EXTRA, extra.path().to_str().unwrap());
    std::fs::write(p.dir.path().join("default.bramble"), module).unwrap();
    for dir in ["rw", "ro", "secret"] {
        std::fs::create_dir(p.dir.path().join(dir)).unwrap();
    }
    std::fs::write(p.dir.path().join("ro/file"), "read only\n").unwrap();
    std::fs::write(p.dir.path().join("secret/key"), "top secret\n").unwrap();

    // A missing path is reported before anything is built; a missing hidden path is skipped
    // (mounting over it would create it in the project).
    let missing = p.bramble(&["run", "./:missing"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stdout(&missing));
    let err = stderr(&missing);
    assert!(
        err.contains("`paths` entry `nope` of `run()` does not exist") && err.contains("hint:"),
        "{err}"
    );
    assert!(!err.contains("built "), "{err}");
    let hidden = p.bramble(&["run", "./:hidden_missing"]);
    assert!(hidden.status.success(), "{}", stderr(&hidden));
    assert!(!p.dir.path().join("not-there").exists());

    let out = p.bramble(&["run", "./:paths"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "rw-written\nro-refused\nread only\nsecret-hidden\n0\nextra-written\nhost-hidden\n"
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(&p.dir.path().join("rw/new")), "new\n");
    assert_eq!(read(&p.dir.path().join("ro/file")), "read only\n");
    assert_eq!(read(&p.dir.path().join("secret/key")), "top secret\n");
    assert_eq!(read(&extra.path().join("from-sandbox")), "outside\n");

    let online = with_stdin(p.command(&["run", "./:online"]), b"");
    assert!(online.status.success(), "{}", stderr(&online));
    assert_eq!(stdout(&online), "hello from the host\n");
    let offline = with_stdin(p.command(&["run", "./:offline"]), b"");
    assert!(!offline.status.success(), "{}", stdout(&offline));
    assert!(
        stderr(&offline).contains("Connection refused"),
        "{}",
        stderr(&offline)
    );
}

/// On a terminal, progress shows done/total, the cached count and each running build with its
/// name and elapsed time (util-linux `script` gives `bramble` a pseudo-terminal). The build
/// waits until the test has seen its one-second line, then the test releases it: no race with
/// the progress redraw.
#[test]
fn progress_on_a_terminal_shows_running_builds_and_counts() {
    let module = format!(
        r#"{MODULE}
def slow():
    return _sh("slow-step", "touch /build/waiting; while [ ! -e /build/release ]; do sleep 0.1; done; cat $GREETING > $out", env = {{"GREETING": greeting()}})
"#
    );
    let p = Project::new("example.com/progress", &module);
    // The greeting is cached when `slow` builds.
    p.ok(&["build", "./:greeting", "--no-out-link"]);

    let cmd = p.command(&["build", "./:slow", "--no-out-link"]);
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_str().unwrap()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = std::process::Command::new("script");
    script
        .args(["-qfec", &line, "/dev/null"])
        .current_dir(p.dir.path())
        // The runner's policy: a cleared environment plus its variables.
        .env_clear()
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            script.env(key, value);
        }
    }
    let mut child = script.spawn().expect("run `script` (util-linux)");
    let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let screen = screen.clone();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // A running line: the derivation's name and its elapsed time.
    let running_for_a_second = |text: &str| {
        text.split(['\n', '\r'])
            .any(|l| l.contains("slow-step") && l.contains("1s"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let seen = loop {
        let text = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
        if running_for_a_second(&text) {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Release the build: `release` beside the `waiting` the builder left in its `/build`.
    let waiting = walkdir::WalkDir::new(p.home().join("tmp"))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_name() == "waiting")
        .expect("the build directory with `waiting`");
    std::fs::write(waiting.path().with_file_name("release"), "").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let screen = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    assert!(seen, "no running line `slow-step … 1s`: {screen}");
    assert!(status.success(), "{screen}");
    // The bar: done/total with the built and cached counts.
    assert!(screen.contains("/3"), "{screen}");
    assert!(screen.contains("cached 2"), "{screen}");
    // Not the plain per-derivation lines of a non-terminal.
    assert!(!screen.contains("built slow-step in"), "{screen}");
}
