//! Tests of the executor as a whole: its directories, made ahead of time and removed after.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::{Derivation, Hash};

/// A store in `home` and an executor over it (whose helper does not exist: nothing runs).
fn executor(home: &std::path::Path) -> (Arc<LocalStore>, SandboxExecutor) {
    let store = Arc::new(LocalStore::open(home).unwrap());
    let config = SandboxConfig {
        helper: PathBuf::from("/nonexistent/bramble-sandbox"),
        keep_failed: false,
        limits: DefaultLimits::default(),
    };
    (store.clone(), SandboxExecutor::new(config, store))
}

/// `drv` as a job with no inputs.
fn job(drv: Derivation) -> Job {
    Job {
        drv_hash: drv.hash(),
        build_key: Hash::digest(b"key"),
        drv: Arc::new(drv),
        inputs: Default::default(),
    }
}

#[test]
fn spare_directories_are_made_after_a_removal_used_once_and_removed_with_the_executor() {
    let home = tempfile::tempdir().unwrap();
    let (store, executor) = executor(home.path());
    let job = job(Derivation::new("spare", "/bin/sh"));
    let first = executor.prepare(&job).unwrap();
    let (first_dir, first_staging) = (
        first.dirs.dir.path().to_owned(),
        first.dirs.staging.path().to_owned(),
    );
    // Removing the first build's directories leaves a fresh pair behind.
    executor.deferred.submit(Deferred::RemoveDirs(first.dirs));
    let spare = loop {
        let ready = executor
            .spares
            .ready
            .lock()
            .unwrap()
            .last()
            .map(|d| d.dir.path().to_owned());
        if let Some(path) = ready {
            break path;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(!first_dir.exists() && !first_staging.exists());
    assert_ne!(spare, first_dir);
    let second = executor.prepare(&job).unwrap();
    assert_eq!(second.dirs.dir.path(), spare);
    for dir in [second.dirs.dir.path(), second.dirs.staging.path()] {
        let meta = std::fs::symlink_metadata(dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    }
    assert_eq!(second.spec.binds[0].source, second.dirs.staging.path());
    assert!(
        executor.spares.take().is_none(),
        "a spare is handed out once"
    );
    // Another spare, never used: it goes with the executor, as does the temp dir.
    executor.spares.refill(executor.tmp().unwrap());
    drop(second);
    drop(executor);
    let left: Vec<_> = std::fs::read_dir(store.home().join("tmp"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_setup_failure_names_what_failed_and_its_cause_once() {
    let home = tempfile::tempdir().unwrap();
    let (store, executor) = executor(home.path());
    let mut d = Derivation::new("gone", "/bin/sh");
    let missing: crate::store::StorePath =
        format!("{}-src", Hash::digest(b"gone")).parse().unwrap();
    d.sources = Some(crate::store::Sources {
        files: vec!["a".into()],
        path: missing.clone(),
    });
    let job = job(d);
    let err = executor.prepare(&job).unwrap_err();
    let ExecError::Setup(SetupError::CopySources { path, source }) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(path, &store.host_path(&missing));
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "cannot run the build: cannot copy sources from `{}`: {source}",
            path.display()
        )
    );
    // The cause is in the message, so it is not also the error's source.
    assert!(std::error::Error::source(&err).is_none());
}
