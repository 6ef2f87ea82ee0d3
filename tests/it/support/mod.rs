//! What the integration tests share: the one runner of the `bramble` binary and its
//! environment policy ([`runner`]), project scaffolds ([`project`]), archive makers
//! ([`archive`]), the HTTP fixture server ([`http`]) and the git fixture ([`git`]). The last two
//! are the library's own test fixtures, included by path.

pub mod archive;
pub mod project;
pub mod runner;

/// The HTTP fixture server on 127.0.0.1 (shared with the fetchers' unit tests, which use the
/// routes these tests do not: failing, flaky and truncated answers).
#[allow(dead_code)]
#[path = "../../../src/engine/fetch/test_http.rs"]
pub mod http;

/// The git fixture: a repository with two commits.
#[path = "../../../src/engine/fetch/test_git.rs"]
pub mod git;

use std::process::{Command, Output, Stdio};

pub use project::{Fixture, Project, ServedProject};
pub use runner::Bramble;

/// Run `cmd` with `input` on its stdin, capturing stdout and stderr.
pub fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Lines of stderr that say a derivation was built: `built <name> in …`.
pub fn built_names(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter_map(|l| l.strip_prefix("built "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// The sha256 of `data` in lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    bramble::engine::fetch::sha256_hex(&sha2::Sha256::digest(data).into())
}
