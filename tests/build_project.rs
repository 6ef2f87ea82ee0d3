//! `bramble build`, `run`, `test` and `log` on a `.bramble` project that ships a static
//! busybox as a source (copied from `busybox-static` at test time).

mod build_support;

use build_support::{Project, stderr, stdout, with_stdin};

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
        "printf '#!%s/bin/sh\\necho tool says \"$*\"; cat input.txt; echo written > output.txt; exit 3\\n' " +
        "> $out/bin/tool; chmod +x $out/bin/tool"
    )
    return _sh("tool", script % bb.out)

def app():
    return run(tool(), "bin/tool", args = ["a"])

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
    let out = p.bramble(&["run", "./:app", "b", "c"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "tool says a b c\nproject file\n");
    assert_eq!(
        std::fs::read_to_string(p.dir.path().join("output.txt")).unwrap(),
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
