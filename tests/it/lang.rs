//! The Starlark frontend end to end: the real `bramble` binary against the fixture projects
//! in `tests/fixtures/lang/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::Bramble;
use crate::support::runner::copy_tree;

/// A store and a copy of `tests/fixtures/lang/` that the user bramble runs as can read.
struct Lang {
    bramble: Bramble,
    fixtures: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Lang {
    fn new() -> Lang {
        let bramble = Bramble::new();
        let fixtures = bramble.tempdir();
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lang"),
            fixtures.path(),
        );
        Lang { bramble, fixtures }
    }

    fn fixture(&self, name: &str) -> PathBuf {
        self.fixtures.path().join(name)
    }

    fn bramble_in(&self, dir: &Path, args: &[&str], stdin: Option<&str>) -> Out {
        let mut child = self
            .bramble
            .command(dir, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bramble runs");
        {
            let mut pipe = child.stdin.take().unwrap();
            if let Some(input) = stdin {
                pipe.write_all(input.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn bramble(&self, dir: &Path, args: &[&str]) -> Out {
        self.bramble_in(dir, args, None)
    }

    fn eval_json(&self, dir: &Path, reference: &str) -> serde_json::Value {
        let out = self.bramble(dir, &["eval", "--json", reference]);
        assert_eq!(out.code, 0, "stderr: {}", out.stderr);
        serde_json::from_str(&out.stdout).expect("eval --json prints JSON")
    }

    fn error_of(&self, dir: &Path, reference: &str) -> String {
        let out = self.bramble(dir, &["eval", reference]);
        assert_eq!(out.code, 1, "{reference}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.is_empty());
        out.stderr
    }
}

fn root_hashes(v: &serde_json::Value, reference: &str) -> Vec<String> {
    v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reference"] == reference)
        .unwrap_or_else(|| panic!("no root {reference} in {v}"))["derivations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn derivation_values_strings_and_outputs() {
    let t = Lang::new();
    let v = t.eval_json(&t.fixture("basic"), "./:hello");
    let hello = &root_hashes(&v, "default.bramble:hello")[0];
    let drv = &v["derivations"][hello];
    assert_eq!(drv["name"], "hello");
    let busybox = v["derivations"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, d)| d["name"] == "busybox")
        .map(|(h, _)| h.clone())
        .expect("the dependency is in the graph");
    let template = format!("{{{{ {busybox}:out }}}}");
    assert_eq!(drv["builder"], format!("{template}/bin/sh"));
    assert_eq!(
        drv["args"],
        serde_json::json!(["-c", "echo hello > $out", "1", "True"])
    );
    assert_eq!(drv["env"]["BB"], template);
    assert_eq!(drv["env"]["FMT"], format!("{template}/bin"));
    assert_eq!(drv["env"]["PCT"], template);
    assert_eq!(drv["env"]["N"], "3");
    assert_eq!(drv["outputs"], serde_json::json!(["out"]));
    assert_eq!(v["derivations"].as_object().unwrap().len(), 2);
}

#[test]
fn dao_flag() {
    let t = Lang::new();
    let v = t.eval_json(&t.fixture("basic"), "./:generator");
    let hash = &root_hashes(&v, "default.bramble:generator")[0];
    assert_eq!(v["derivations"][hash]["dao"], true);
    let v = t.eval_json(&t.fixture("basic"), "./:hello");
    let hello = &root_hashes(&v, "default.bramble:hello")[0];
    assert!(
        v["derivations"][hello].get("dao").is_none(),
        "absent unless set"
    );
    let err = t.error_of(&t.fixture("errors"), "./:two_output_dao");
    assert!(
        err.contains("derivation `gen`: a DAO has exactly one output, `out`"),
        "{err}"
    );
}

#[test]
fn asserts_tests_and_print() {
    let t = Lang::new();
    let out = t.bramble(&t.fixture("basic"), &["eval", "--json", "./:checks"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("default.bramble:47: checked True"),
        "{}",
        out.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let tests = v["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0]["args"], serde_json::json!(["--check"]));
    assert_eq!(tests[0]["location"], "default.bramble:48");
    // The tested derivation is part of the graph.
    assert!(v["derivations"][tests[0]["derivation"].as_str().unwrap()].is_object());
}

#[test]
fn sources_are_sorted_files_with_a_content_address() {
    let t = Lang::new();
    let v = t.eval_json(&t.fixture("basic"), "./:with_sources");
    let h = &root_hashes(&v, "default.bramble:with_sources")[0];
    let drv = &v["derivations"][h];
    assert_eq!(
        drv["sources"]["files"],
        serde_json::json!(["src/a.txt", "src/run.sh", "src/sub/b.txt"])
    );
    assert!(
        drv["sources"]["path"]
            .as_str()
            .unwrap()
            .ends_with("-source")
    );
    assert_eq!(drv["outputs"], serde_json::json!(["out", "doc"]));

    // Changing a listed file changes the hash; changing an unlisted one does not.
    let tmp = t.bramble.tempdir();
    copy_tree(&t.fixture("basic"), tmp.path());
    std::fs::write(tmp.path().join("src/x.md"), "other").unwrap();
    assert_eq!(
        root_hashes(
            &t.eval_json(tmp.path(), "./:with_sources"),
            "default.bramble:with_sources"
        )[0],
        *h
    );
    std::fs::write(tmp.path().join("src/a.txt"), "changed").unwrap();
    assert_ne!(
        root_hashes(
            &t.eval_json(tmp.path(), "./:with_sources"),
            "default.bramble:with_sources"
        )[0],
        *h
    );
}

#[test]
fn run_values() {
    let t = Lang::new();
    let v = t.eval_json(&t.fixture("basic"), "./:runner");
    let run = &v["roots"][0]["run"];
    assert_eq!(run["cmd"], "bin/hello");
    assert_eq!(run["args"], serde_json::json!(["x"]));
    assert_eq!(run["paths"], serde_json::json!(["/tmp"]));
    assert_eq!(run["network"], true);
    assert!(v["derivations"][run["derivation"].as_str().unwrap()].is_object());
}

#[test]
fn reference_syntax() {
    let t = Lang::new();
    let dir = t.fixture("basic");
    // `./path`: every public zero-argument function of that module.
    let v = t.eval_json(&dir, "./");
    let refs: Vec<&str> = v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        refs,
        [
            "default.bramble:both",
            "default.bramble:checks",
            "default.bramble:generator",
            "default.bramble:hello",
            "default.bramble:runner",
            "default.bramble:with_sources"
        ]
    );
    // `./...` adds every module below; module names work like load paths.
    let all = t.eval_json(&dir, "./...");
    assert_eq!(all["roots"].as_array().unwrap().len(), 7);
    let by_name = t.eval_json(&dir, "example.com/basic/lib/shell:busybox");
    let by_path = t.eval_json(&dir.join("lib"), "./shell:busybox");
    assert_eq!(by_name["derivations"], by_path["derivations"]);
    assert_eq!(
        t.eval_json(&dir, "example.com/basic/lib/...")["roots"][0]["reference"],
        "lib/shell.bramble:busybox"
    );
    for bad in [
        "./:_private",
        "./:needs_arg",
        "./nope:f",
        "./...:f",
        "other.org/x:f",
    ] {
        let out = t.bramble(&dir, &["eval", bad]);
        assert_eq!(out.code, 1, "{bad}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: "), "{bad}: {}", out.stderr);
    }
}

#[test]
fn hashes_are_stable_across_directories() {
    let t = Lang::new();
    let a = t.bramble.tempdir();
    let b = t.bramble.tempdir();
    let b_nested = b.path().join("some/deeper/place");
    copy_tree(&t.fixture("basic"), a.path());
    copy_tree(&t.fixture("basic"), &b_nested);
    let va = t.eval_json(a.path(), "./...");
    let vb = t.eval_json(&b_nested, "./...");
    assert_eq!(va, vb);
    // Golden: the whole graph's hashes depend only on the fixture's content.
    let hello = root_hashes(&va, "default.bramble:hello");
    let mut expected = root_hashes(&va, "default.bramble:both");
    expected.truncate(1);
    assert_eq!(hello, expected);
    let text = serde_json::to_string(&va).unwrap();
    assert!(
        !text.contains(a.path().to_str().unwrap()),
        "host path leaked: {text}"
    );
    let with_sources = &root_hashes(&va, "default.bramble:with_sources")[0];
    let platform = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    if platform == "x86_64-linux" {
        assert_eq!(hello[0], GOLDEN_HELLO);
        assert_eq!(*with_sources, GOLDEN_WITH_SOURCES);
    }
}

// Part of the hash format: a change here changes every store path. Only x86_64-linux.
const GOLDEN_HELLO: &str = "kuf6r73r7nvcaevylhyynb4wmjydpoey";
const GOLDEN_WITH_SOURCES: &str = "hg4s2xro7rdsv2kydedltz3fxpfeodwg";

#[test]
fn ls_lists_modules_functions_and_docstrings() {
    let t = Lang::new();
    let out = t.bramble(&t.fixture("basic"), &["ls"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("ls_basic", out.stdout);
}

#[test]
fn repl_reads_statements_from_stdin() {
    let t = Lang::new();
    let input = "x = 1\ndef f(a):\n    return a + 1\n\nf(x)\nload(\"example.com/basic/lib/shell\")\nshell.busybox().name\nprint(\"hi\")\n";
    let out = t.bramble_in(&t.fixture("basic"), &["repl"], Some(input));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "2\n\"busybox\"\n");
    assert!(out.stderr.contains("<repl>:1: hi"), "{}", out.stderr);
    let bad = t.bramble_in(&t.fixture("basic"), &["repl"], Some("1 +\n"));
    assert_eq!(bad.code, 1);
}

#[test]
fn error_messages() {
    let t = Lang::new();
    let dir = t.fixture("errors");
    let root = dir.to_str().unwrap().to_owned();
    insta::with_settings!({filters => vec![(root.as_str(), "[FIXTURE]")]}, {
        insta::assert_snapshot!("unknown_function", t.error_of(&dir, "./unknown:f"));
        insta::assert_snapshot!("wrong_argument_type", t.error_of(&dir, "./:nested_type"));
        insta::assert_snapshot!("missing_file", t.error_of(&dir, "./:missing_file"));
        insta::assert_snapshot!("load_cycle", t.error_of(&dir, "./a:f"));
        insta::assert_snapshot!("top_level_derivation", t.error_of(&dir, "./toplevel:f"));
        insta::assert_snapshot!("bad_glob", t.error_of(&dir, "./:bad_glob"));
        insta::assert_snapshot!("absolute_glob", t.error_of(&dir, "./:absolute_glob"));
        insta::assert_snapshot!("syntax_error", t.error_of(&dir, "./syntax:f"));
        insta::assert_snapshot!("private_load", t.error_of(&dir, "./private:f"));
        insta::assert_snapshot!("deep_recursion", t.error_of(&dir, "./:recurse"));
        insta::assert_snapshot!("bad_return", t.error_of(&dir, "./:returns_int"));
        insta::assert_snapshot!("missing_module", t.error_of(&dir, "./missing_load:f"));
    });
}

#[test]
fn big_values_evaluate() {
    let t = Lang::new();
    let v = t.eval_json(&t.fixture("errors"), "./:huge");
    assert_eq!(v["derivations"].as_object().unwrap().len(), 1);
}

#[test]
fn missing_or_bad_manifest() {
    let t = Lang::new();
    let tmp = t.bramble.tempdir();
    let out = t.bramble(tmp.path(), &["eval", "./:f"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no `bramble.toml` found"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    for (toml, expect) in [
        ("[package\n", "invalid `"),
        ("[package]\nversion = \"1\"\n", "missing field `name`"),
        (
            "[package]\nname = \"a/b\"\ncolour = 1\n",
            "unknown field `colour`",
        ),
        (
            "[package]\nname = \"a/b\"\n[extra]\n",
            "unknown field `extra`",
        ),
        ("[package]\nname = \"../x\"\n", "not a module path"),
    ] {
        std::fs::write(tmp.path().join("bramble.toml"), toml).unwrap();
        let out = t.bramble(tmp.path(), &["eval", "./:f"]);
        assert_eq!(out.code, 1, "{toml}");
        assert!(out.stderr.contains(expect), "{toml}: {}", out.stderr);
    }
}

#[test]
fn files_rejects_sockets() {
    let t = Lang::new();
    let tmp = t.bramble.tempdir();
    copy_tree(&t.fixture("basic"), tmp.path());
    let _socket = std::os::unix::net::UnixListener::bind(tmp.path().join("src/sock.txt")).unwrap();
    let out = t.bramble(tmp.path(), &["eval", "./:with_sources"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("matched `src/sock.txt`, which is a socket"),
        "{}",
        out.stderr
    );
}
