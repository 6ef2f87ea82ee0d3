//! The git fixture of the fetcher tests: a local repository with two commits (a file that
//! changes, an executable, a symlink). Shared by the library's unit tests and the integration
//! tests (`tests/it/support`), which include this file by path.

use std::path::Path;
use std::process::Command;

/// Make a repository in `dir` with two commits and return them (first, second): `hello.txt`
/// ("one\n", then "two\n"), an executable `bin/run` and a symlink `link` to `hello.txt`.
pub fn make_repo(dir: &Path) -> (String, String) {
    let run = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    std::fs::create_dir_all(dir).unwrap();
    run(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("hello.txt"), "one\n").unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("bin/run"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        dir.join("bin/run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("hello.txt", dir.join("link")).unwrap();
    run(&["add", "-A"]);
    run(&["commit", "-q", "-m", "one"]);
    let first = run(&["rev-parse", "HEAD"]);
    std::fs::write(dir.join("hello.txt"), "two\n").unwrap();
    run(&["commit", "-q", "-am", "two"]);
    let second = run(&["rev-parse", "HEAD"]);
    (first, second)
}
