//! The build engine end to end: the real `bramble` binary, the real sandbox, a project that
//! ships a static busybox. Each test has its own `BRAMBLE_HOME`.

use crate::support::{Fixture, built_names, stderr, stdout};

#[test]
fn multi_output_derivation_and_result_links() {
    let f = Fixture::new();
    let mut d = f.sh(
        "multi",
        "echo main > $out; mkdir -p $doc/share; echo manual > $doc/share/readme",
    );
    d.outputs = vec!["out".into(), "doc".into()];
    let out = f.build(&[&d], &[&d], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let paths: Vec<&str> = text.lines().collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    let doc = paths.iter().find(|p| p.ends_with("-multi-doc")).unwrap();
    let main = paths.iter().find(|p| p.ends_with("-multi")).unwrap();
    assert_eq!(std::fs::read_to_string(main).unwrap(), "main\n");
    assert_eq!(
        std::fs::read_to_string(format!("{doc}/share/readme")).unwrap(),
        "manual\n"
    );
    // One result link per output, pointing at the store paths.
    let link = f.project.path().join("result");
    let link_doc = f.project.path().join("result-doc");
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some(*main));
    assert_eq!(std::fs::read_link(&link_doc).unwrap().to_str(), Some(*doc));
    // Outputs are read-only.
    let meta = std::fs::metadata(main).unwrap();
    assert!(meta.permissions().readonly());
    // `--out-link` names the links elsewhere; they are gc roots too.
    let links = f.bramble.tempdir();
    let base = links.path().join("custom");
    let out = f.build(&[&d], &[&d], &["--out-link", base.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_link(&base).unwrap().to_str(), Some(*main));
    let custom_doc = links.path().join("custom-doc");
    assert_eq!(
        std::fs::read_link(&custom_doc).unwrap().to_str(),
        Some(*doc)
    );
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&link_doc).unwrap();
    let gc = f.bramble(&["gc"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(std::path::Path::new(main).exists() && std::path::Path::new(doc).exists());
    // Without any link, gc collects them.
    std::fs::remove_file(&base).unwrap();
    std::fs::remove_file(&custom_doc).unwrap();
    let gc = f.bramble(&["gc"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(!std::path::Path::new(main).exists());
}

#[test]
fn json_output_names_derivation_and_paths() {
    let f = Fixture::new();
    let d = f.sh("hello", "echo hello > $out");
    let out = f.build(&[&d], &[&d], &["--json", "--no-out-link"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let root = &doc["roots"][0];
    assert_eq!(root["drv"], d.hash().to_string());
    let path = root["outputs"]["out"]["path"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "hello\n");
    assert!(!f.project.path().join("result").exists());
}

#[test]
fn diamond_builds_base_once_and_rebuild_does_nothing() {
    let f = Fixture::new();
    let base = f.sh("base", "echo base > $out");
    let left = f.sh(
        "left",
        &format!(
            "cat {} > $out; echo left >> $out",
            base.output_ref("out").template()
        ),
    );
    let right = f.sh(
        "right",
        &format!(
            "cat {} > $out; echo right >> $out",
            base.output_ref("out").template()
        ),
    );
    let top = f.sh(
        "top",
        &format!(
            "cat {} {} > $out",
            left.output_ref("out").template(),
            right.output_ref("out").template()
        ),
    );
    let all = [&base, &left, &right, &top];
    let out = f.build(&all, &[&top], &["-j", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut built = built_names(&out);
    built.sort();
    assert_eq!(built, ["base", "busybox", "left", "right", "top"]);
    let path = stdout(&out).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "base\nleft\nbase\nright\n"
    );
    // Unchanged: nothing is built, same result.
    let again = f.build(&all, &[&top], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(built_names(&again).is_empty(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), path);
}

#[test]
fn changed_leaf_rebuilds_dependents_until_output_is_identical() {
    let f = Fixture::new();
    let chain = |leaf_script: &str| {
        let leaf = f.sh("leaf", leaf_script);
        // `mid` keeps only the first line of the leaf: a change on line two stops there.
        let mid = f.sh(
            "mid",
            &format!("head -n 1 {} > $out", leaf.output_ref("out").template()),
        );
        let top = f.sh(
            "top",
            &format!(
                "cat {} > $out; echo top >> $out",
                mid.output_ref("out").template()
            ),
        );
        (leaf, mid, top)
    };
    let (leaf, mid, top) = chain("echo one > $out; echo a >> $out");
    let out = f.build(&[&leaf, &mid, &top], &[&top], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Line one changes: everything above the leaf rebuilds.
    let (leaf, mid, top) = chain("echo two > $out; echo a >> $out");
    let out = f.build(&[&leaf, &mid, &top], &[&top], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(built_names(&out), ["leaf", "mid", "top"]);
    let top_path = stdout(&out).trim().to_owned();
    assert_eq!(std::fs::read_to_string(&top_path).unwrap(), "two\ntop\n");

    // Line two changes: the leaf and mid rebuild, mid's output is byte-identical, so top is
    // not rebuilt (early cutoff) and the result is the same path.
    let (leaf, mid, top) = chain("echo two > $out; echo b >> $out");
    let out = f.build(&[&leaf, &mid, &top], &[&top], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(built_names(&out), ["leaf", "mid"]);
    assert_eq!(stdout(&out).trim(), top_path);
}

#[test]
fn failing_builder_shows_log_tail_and_log_command() {
    let f = Fixture::new();
    let ok = f.sh("fine", "echo fine > $out");
    let bad = f.sh(
        "broken",
        "echo first line; echo 'something went wrong' >&2; exit 3",
    );
    let top = f.sh(
        "top",
        &format!(
            "cat {} {} > $out",
            ok.output_ref("out").template(),
            bad.output_ref("out").template()
        ),
    );
    let out = f.build(&[&ok, &bad, &top], &[&top], &["--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("building `broken` failed: builder exited with code 3"),
        "{err}"
    );
    assert!(err.contains("> something went wrong"), "{err}");
    let hint = format!("`bramble log {}`", bad.hash());
    assert!(err.contains(&hint), "{err}");
    assert!(built_names(&out).contains(&"fine".to_owned()));
    assert!(stdout(&out).is_empty());
    // The log command prints the whole log.
    let log = f.bramble(&["log", &bad.hash().to_string()]);
    assert!(log.status.success(), "{}", stderr(&log));
    assert_eq!(stdout(&log), "first line\nsomething went wrong\n");
    // Nothing writable or partial is left in the store's temporary area.
    let tmp = f.home().join("tmp");
    if tmp.exists() {
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn keep_failed_keeps_the_build_directory() {
    let f = Fixture::new();
    let bad = f.sh("broken", "echo partial > /build/marker; exit 1");
    let out = f.build(&[&bad], &[&bad], &["--keep-failed"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("note: the build directory was kept at `"))
        .and_then(|l| l.strip_suffix('`'))
        .unwrap_or_else(|| panic!("{err}"));
    let marker = std::path::Path::new(kept).join("marker");
    assert_eq!(std::fs::read_to_string(marker).unwrap(), "partial\n");
}

#[test]
fn two_processes_on_one_store_build_each_derivation_once() {
    let f = Fixture::new();
    let slow = f.sh("slow", "sleep 1; echo slow > $out");
    let top = f.sh(
        "top",
        &format!("cat {} > $out", slow.output_ref("out").template()),
    );
    let file = f.write("drvs.json", &[&slow, &top], &[&top]);
    let args = [
        "build",
        "--derivations",
        file.to_str().unwrap(),
        "--no-out-link",
    ];
    let a = f
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = f
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let mut built = built_names(&a);
    built.extend(built_names(&b));
    built.sort();
    assert_eq!(
        built,
        ["busybox", "slow", "top"],
        "{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn check_detects_a_non_reproducible_derivation() {
    let f = Fixture::new();
    let stable = f.sh("stable", "echo same > $out");
    let random = f.sh("random", "echo $RANDOM$RANDOM > $out");
    let out = f.build(&[&stable, &random], &[&stable, &random], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let check = f.build(&[&stable, &random], &[&stable], &["--check"]);
    assert!(check.status.success(), "{}", stderr(&check));
    let check = f.build(&[&stable, &random], &[&random], &["--check"]);
    assert_eq!(check.status.code(), Some(104), "{}", stderr(&check));
    let err = stderr(&check);
    assert!(
        err.contains("building `random` failed: output `out` differs from the registered one"),
        "{err}"
    );
}

#[test]
fn dry_run_lists_what_would_be_built() {
    let f = Fixture::new();
    let a = f.sh("a", "echo a > $out");
    let b = f.sh(
        "b",
        &format!("cat {} > $out", a.output_ref("out").template()),
    );
    let out = f.build(&[&a], &[&a], &["--no-out-link"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dry = f.build(&[&a, &b], &[&b], &["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_eq!(stdout(&dry), format!("{} b\n", b.hash()));
    assert!(stderr(&dry).contains("2 derivations are already in the store"));
    assert!(!f.project.path().join("result").exists());
}

#[test]
fn builder_sees_only_its_input_closure() {
    let f = Fixture::new();
    let unrelated = f.sh("unrelated", "echo x > $out");
    let out = f.build(&[&unrelated], &[&unrelated], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let probe = f.sh("probe", "ls /bramble/store > $out");
    let out = f.build(&[&probe], &[&probe], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = std::fs::read_to_string(stdout(&out).trim()).unwrap();
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(names.len(), 2, "{listing}");
    assert!(names.iter().any(|n| n.ends_with("-busybox")), "{listing}");
    assert!(!listing.contains("unrelated"), "{listing}");
}
