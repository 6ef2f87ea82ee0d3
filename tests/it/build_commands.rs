//! `bramble shell`, cancellation and `bramble log` by store path: the real binary and the
//! real sandbox, each test with its own `BRAMBLE_HOME`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bramble::store::{Sources, StorePath};

use crate::support::{Fixture, stderr, stdout, with_stdin};

#[test]
fn shell_runs_in_the_build_environment() {
    let f = Fixture::new();
    let src = f.project.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("data.txt"), "from the sources\n").unwrap();
    let out = f.ok(&["store", "add", src.to_str().unwrap(), "--name", "source"]);
    let mut d = f.sh("with-sources", "cp data.txt $out");
    d.env.insert("GREETING".into(), "hello".into());
    d.sources = Some(Sources {
        files: vec!["data.txt".into()],
        path: StorePath::from_path_str(stdout(&out).trim()).unwrap(),
    });
    let file = f.write("drvs.json", &[&d], &[&d]);
    let out = with_stdin(
        f.command(&["shell", "--derivations", file.to_str().unwrap()]),
        b"pwd; cat data.txt; echo $GREETING; echo $out; ls /bramble/store; exit 7\n",
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "/build");
    assert_eq!(lines[1], "from the sources");
    assert_eq!(lines[2], "hello");
    assert!(lines[3].starts_with("/bramble/store/") && lines[3].ends_with("-with-sources"));
    // The input closure (busybox) is there; the derivation itself was not built.
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[4].ends_with("-busybox"), "{text}");
}

#[test]
fn interrupt_cancels_running_builds_and_cleans_up() {
    let f = Fixture::new();
    let bb = f.build(&[], &[&f.busybox], &["--no-out-link"]);
    assert!(bb.status.success(), "{}", stderr(&bb));
    let slow = f.sh("slow", "sleep 60; echo done > $out");
    let file = f.write("drvs.json", &[&slow], &[&slow]);
    let child = f
        .command(&["build", "--derivations", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the build directory exists: the sandbox is starting or running.
    let tmp = f.home().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the build was cancelled"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // Nothing was registered: a rebuild builds it (here: checked with --dry-run).
    let dry = f.build(&[&slow], &[&slow], &["--dry-run"]);
    assert_eq!(stdout(&dry), format!("{} slow\n", slow.hash()));
}

#[test]
fn log_by_store_path() {
    let f = Fixture::new();
    let d = f.sh("talks", "echo building now; echo result > $out");
    let out = f.build(&[&d], &[&d], &["--no-out-link"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out).trim().to_owned();
    let log = f.bramble(&["log", &path]);
    assert!(log.status.success(), "{}", stderr(&log));
    assert_eq!(stdout(&log), "building now\n");
    // busybox was built too (an input), printing nothing: its log exists and is empty.
    let silent = f.ok(&["log", &f.busybox.hash().to_string()]);
    assert_eq!(stdout(&silent), "");
    assert_eq!(stderr(&silent), "");
    let never = f.sh("never", "true");
    let none = f.bramble(&["log", &never.hash().to_string()]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("no build log of derivation"));
}
