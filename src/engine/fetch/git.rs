//! `fetch_git(url, rev)`: one pinned commit, checked out without `.git`.
//!
//! # Why the `git` command line
//!
//! gitoxide and libgit2 are large dependencies (libgit2 adds C, OpenSSL and libssh2 for
//! https/ssh); `git` is on every developer machine, speaks every transport and credential
//! helper the user already configured for their shell, and CI installs it with one package.
//! It runs with a clean environment so the user's configuration cannot change the result:
//! only `PATH` is kept, `HOME` is a fresh empty directory, `GIT_CONFIG_NOSYSTEM=1`,
//! `GIT_CONFIG_GLOBAL=/dev/null`, no terminal prompts, hooks disabled, and
//! `protocol.file.allow=always` only when the remote is a local path or `file://` URL.
//!
//! # Steps
//!
//! 1. `rev` must be a full 40-hex commit hash: a branch or tag moves, so it cannot be a pin.
//! 2. `git init --bare` in a scratch directory, then `git fetch --depth 1 <url> <rev>`; when
//!    the server refuses to serve a commit by hash (old servers without
//!    `uploadpack.allowReachableSHA1InWant`), fall back to fetching all branches and tags.
//! 3. Verify that `<rev>^{commit}` resolves to exactly `rev`.
//! 4. `git checkout` the commit into the output with a separate work tree, so the output
//!    never contains `.git`. Submodules are not fetched. (`git archive` is not used: it
//!    applies `export-subst`/`export-ignore` attributes, which can put the current date in
//!    the output.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a git fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(transparent)]
    Invalid(#[from] crate::store::fetch::InvalidFetch),
    #[error("cannot run `git`")]
    Spawn { source: std::io::Error },
    #[error("cannot fetch commit `{rev}` from `{url}`: `git {step}` failed: {stderr}")]
    Failed {
        url: String,
        rev: String,
        step: &'static str,
        stderr: String,
    },
    #[error("fetching `{rev}` from `{url}` gave commit `{got}`")]
    WrongCommit {
        url: String,
        rev: String,
        got: String,
    },
    #[error("cannot {op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::error::Diagnose for GitError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            GitError::Invalid(e) => e.class(),
            GitError::Spawn { .. }
            | GitError::Failed { .. }
            | GitError::WrongCommit { .. }
            | GitError::Io { .. } => Class::Environment,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            GitError::Invalid(e) => e.hint(),
            GitError::Spawn { .. } => Some("install git (e.g. `apt-get install git`)".into()),
            GitError::Failed { .. } => {
                Some("check the URL and that the commit exists there (and was pushed)".into())
            }
            _ => None,
        }
    }
}

fn is_local(url: &str) -> bool {
    url.starts_with('/') || url.starts_with("file://")
}

/// Check the remote and the pin before anything runs ([`crate::store::fetch::check_git`]).
pub fn check(url: &str, rev: &str) -> Result<(), GitError> {
    Ok(crate::store::fetch::check_git(url, rev)?)
}

/// Fetch commit `rev` of `url` into `dest` (which must not exist), using `scratch` (an
/// empty directory that the caller removes) for the repository and git's `HOME`.
pub fn fetch(url: &str, rev: &str, dest: &Path, scratch: &Path) -> Result<(), GitError> {
    check(url, rev)?;
    let rev = rev.to_ascii_lowercase();
    let home = scratch.join("home");
    let repo = scratch.join("repo.git");
    std::fs::create_dir_all(&home).map_err(|source| GitError::Io {
        op: "create directory",
        path: home.clone(),
        source,
    })?;
    let git = |step: &'static str, args: &[&str]| -> Result<String, GitError> {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .arg("-c")
            .arg("core.hooksPath=/dev/null")
            .arg("-c")
            .arg("protocol.ext.allow=never")
            .arg("-c")
            .arg(if is_local(url) {
                "protocol.file.allow=always"
            } else {
                "protocol.file.allow=never"
            })
            .args(args)
            .stdin(Stdio::null());
        let out = cmd.output().map_err(|source| GitError::Spawn { source })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(GitError::Failed {
                url: url.to_owned(),
                rev: rev.clone(),
                step,
                stderr: stderr.trim().lines().last().unwrap_or("").to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let repo_s = repo.to_string_lossy().into_owned();
    git("init", &["init", "-q", "--bare", &repo_s])?;
    let shallow = git(
        "fetch",
        &[
            "--git-dir",
            &repo_s,
            "fetch",
            "-q",
            "--no-tags",
            "--depth",
            "1",
            "--",
            url,
            &rev,
        ],
    );
    if let Err(first) = shallow {
        tracing::debug!("fetching `{rev}` by hash failed ({first}); fetching every ref");
        git(
            "fetch",
            &[
                "--git-dir",
                &repo_s,
                "fetch",
                "-q",
                "--",
                url,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
        )?;
    }
    let got = git(
        "rev-parse",
        &[
            "--git-dir",
            &repo_s,
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )?;
    if got != rev {
        return Err(GitError::WrongCommit {
            url: url.to_owned(),
            rev,
            got,
        });
    }
    std::fs::create_dir(dest).map_err(|source| GitError::Io {
        op: "create directory",
        path: dest.to_owned(),
        source,
    })?;
    let dest_s = dest.to_string_lossy().into_owned();
    git(
        "checkout",
        &[
            "--git-dir",
            &repo_s,
            "--work-tree",
            &dest_s,
            "-c",
            "core.autocrlf=false",
            "-c",
            "core.symlinks=true",
            "checkout",
            "-q",
            "--force",
            &rev,
            "--",
            ".",
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fetch::test_git::make_repo;
    use crate::error::Diagnose;
    use crate::store::fetch::InvalidFetch;

    #[test]
    fn fetches_a_pinned_commit_without_dot_git() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let (first, second) = make_repo(&repo);
        for (i, (url, rev, text)) in [
            (repo.to_string_lossy().into_owned(), &first, "one\n"),
            (format!("file://{}", repo.display()), &second, "two\n"),
        ]
        .into_iter()
        .enumerate()
        {
            let scratch = tmp.path().join(format!("scratch{i}"));
            std::fs::create_dir(&scratch).unwrap();
            let dest = tmp.path().join(format!("out{i}"));
            fetch(&url, rev, &dest, &scratch).unwrap();
            assert_eq!(
                std::fs::read_to_string(dest.join("hello.txt")).unwrap(),
                text
            );
            assert!(!dest.join(".git").exists());
            assert_eq!(
                std::fs::read_link(dest.join("link")).unwrap(),
                Path::new("hello.txt")
            );
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(dest.join("bin/run"))
                    .unwrap()
                    .permissions(),
            );
            assert_ne!(mode & 0o111, 0);
        }
    }

    #[test]
    fn fetches_over_dumb_http_with_the_full_fetch_fallback() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let (first, _) = make_repo(&repo);
        let bare = tmp.path().join("bare.git");
        let ok = |args: &[&str]| {
            assert!(
                Command::new("git")
                    .args(args)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .status()
                    .unwrap()
                    .success()
            )
        };
        ok(&[
            "clone",
            "-q",
            "--bare",
            &repo.to_string_lossy(),
            &bare.to_string_lossy(),
        ]);
        ok(&["--git-dir", &bare.to_string_lossy(), "update-server-info"]);
        let server = crate::engine::fetch::test_http::Server::start();
        server.dir("/repo.git", &bare);
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let dest = tmp.path().join("out");
        fetch(&server.url("/repo.git"), &first, &dest, &scratch).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("hello.txt")).unwrap(),
            "one\n"
        );
    }

    #[test]
    fn refuses_branches_and_short_hashes() {
        for rev in ["main", "v1.0", "abc1234", &"g".repeat(40)] {
            let err = check("/x", rev).unwrap_err();
            assert!(
                matches!(err, GitError::Invalid(InvalidFetch::NotACommitHash { .. })),
                "{rev}"
            );
            assert!(err.hint().unwrap().contains("git ls-remote"));
        }
    }

    #[test]
    fn refuses_relative_paths_options_and_remote_helpers() {
        let rev = "a".repeat(40);
        for url in [
            "repo",
            "./repo",
            "-uhack",
            "ext::sh -c touch% /tmp/pwned",
            "",
        ] {
            let err = check(url, &rev).unwrap_err();
            assert!(
                matches!(err, GitError::Invalid(InvalidFetch::GitRemote { .. })),
                "{url}"
            );
        }
        for url in [
            "/srv/repo",
            "file:///srv/repo",
            "https://x/r.git",
            "git@example.org:r.git",
        ] {
            check(url, &rev).unwrap();
        }
    }

    #[test]
    fn a_commit_that_does_not_exist_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        make_repo(&repo);
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let err = fetch(
            &repo.to_string_lossy(),
            &"0".repeat(40),
            &tmp.path().join("out"),
            &scratch,
        )
        .unwrap_err();
        assert!(matches!(err, GitError::Failed { .. }), "{err}");
        assert!(!tmp.path().join("out").exists());
    }
}
