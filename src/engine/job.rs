//! One derivation outside the scheduler's graph: the commands that run something in a
//! build's environment rather than build it (`bramble shell`, `bramble test`) first build its
//! inputs ([`prepare_root`]), then run it once ([`run_job`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::store::local::LocalStore;
use crate::store::{Derivation, DerivationError, Hash, OutputRef, StorePath};

use super::{BuildReport, Built, Cancel, ExecError, Executor, Job};

/// Why a derivation could not be made a job (besides building its inputs, which is the
/// caller's to report).
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("derivation `{drv}` is not in the request")]
    UnknownRoot { drv: Hash },
    /// Its templates do not parse, or name an output the build did not produce.
    #[error(transparent)]
    Derivation(DerivationError),
    /// Reading the input closure from the store failed.
    #[error(transparent)]
    Closure(crate::store::local::Error),
}

impl crate::error::Diagnose for RootError {
    fn class(&self) -> crate::error::Class {
        match self {
            RootError::UnknownRoot { .. } => crate::error::Class::Internal,
            RootError::Derivation(e) => e.class(),
            RootError::Closure(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            RootError::UnknownRoot { .. } => None,
            RootError::Derivation(e) => e.hint(),
            RootError::Closure(e) => e.hint(),
        }
    }
}

/// Build everything derivation `root` of `derivations` needs and return it as a resolved
/// job whose inputs are its input closure.
///
/// `build` builds the derivations whose hashes it is given (the root's direct
/// dependencies, each once) with everything they need, and returns the report of a build
/// that succeeded (the caller renders progress and failures); its error is returned as it
/// is.
pub fn prepare_root<E: From<RootError>>(
    store: &LocalStore,
    derivations: &HashMap<Hash, Arc<Derivation>>,
    root: Hash,
    build: impl FnOnce(Vec<Hash>) -> Result<BuildReport, E>,
) -> Result<Job, E> {
    let drv = derivations
        .get(&root)
        .ok_or(RootError::UnknownRoot { drv: root })?;
    let deps = drv.dependencies().map_err(RootError::Derivation)?;
    let mut dep_roots: Vec<Hash> = deps.iter().map(|r| r.drv).collect();
    dep_roots.dedup();
    let report = build(dep_roots)?;
    let mut realised: HashMap<OutputRef, StorePath> = HashMap::new();
    for r in &report.roots {
        for (output, path) in r.outputs.iter().flatten() {
            let reference = OutputRef {
                drv: r.drv,
                output: output.clone(),
            };
            realised.insert(reference, path.clone());
        }
    }
    let resolved = drv
        .resolve(|r| realised.get(r).cloned())
        .map_err(RootError::Derivation)?;
    let direct: Vec<StorePath> = realised.into_values().collect();
    let closure: BTreeSet<StorePath> = store.closure(&direct).map_err(RootError::Closure)?;
    Ok(Job {
        drv_hash: root,
        build_key: resolved.hash(),
        drv: Arc::new(resolved),
        inputs: closure,
    })
}

/// Run one job outside a graph: [`Executor::prepare`], then [`Executor::execute`] until it
/// ends or `cancel` fires. Nothing is added to the store: the caller decides what the
/// outcome means (a test passes when its builder exits with 0).
pub async fn run_job<E: Executor>(
    executor: &E,
    job: Job,
    cancel: Cancel,
) -> Result<Built, ExecError> {
    let prepared = executor.prepare(&job)?;
    executor.execute(job, prepared, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RootResult;
    use crate::engine::fake::FakeExecutor;

    #[test]
    fn a_root_is_resolved_against_its_built_inputs_with_their_closure() {
        let home = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&home.path().join("home")).unwrap();
        let src = home.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("file"), "dep").unwrap();
        let out = store.add_dir(&src, "dep").unwrap();
        std::fs::write(src.join("file"), "dev").unwrap();
        let dev = store.add_dir(&src, "dep-dev").unwrap();
        let mut dep = Derivation::new("dep", "/bin/sh");
        dep.outputs = vec!["out".into(), "dev".into()];
        let output = |name: &str| OutputRef {
            drv: dep.hash(),
            output: name.into(),
        };
        let mut root = Derivation::new("root", "/bin/sh");
        root.env.insert("OUT".into(), output("out").template());
        root.env.insert("DEV".into(), output("dev").template());
        let derivations: HashMap<Hash, Arc<Derivation>> = [
            (dep.hash(), Arc::new(dep.clone())),
            (root.hash(), Arc::new(root.clone())),
        ]
        .into();
        let mut asked = Vec::new();
        let job = prepare_root(&store, &derivations, root.hash(), |roots| {
            asked = roots;
            Ok::<_, RootError>(BuildReport {
                roots: vec![RootResult {
                    drv: dep.hash(),
                    name: "dep".into(),
                    build_key: None,
                    outputs: Some(
                        [
                            ("out".to_owned(), out.clone()),
                            ("dev".to_owned(), dev.clone()),
                        ]
                        .into(),
                    ),
                }],
                ..Default::default()
            })
        })
        .unwrap();
        assert_eq!(asked, vec![dep.hash()], "each dependency is built once");
        assert_eq!(job.drv_hash, root.hash());
        assert_eq!(job.drv.env["OUT"], out.in_store_dir());
        assert_eq!(job.drv.env["DEV"], dev.in_store_dir());
        assert_eq!(job.build_key, job.drv.hash());
        assert_eq!(job.inputs, BTreeSet::from([out, dev]));
    }

    #[test]
    fn a_failed_input_build_and_an_unknown_root_are_errors() {
        #[derive(Debug)]
        enum Failed {
            Build,
            Root(RootError),
        }
        impl From<RootError> for Failed {
            fn from(e: RootError) -> Failed {
                Failed::Root(e)
            }
        }
        let home = tempfile::tempdir().unwrap();
        let store = LocalStore::open(home.path()).unwrap();
        let root = Derivation::new("root", "/bin/sh");
        let derivations: HashMap<Hash, Arc<Derivation>> =
            [(root.hash(), Arc::new(root.clone()))].into();
        let err = prepare_root(&store, &derivations, root.hash(), |_| Err(Failed::Build));
        assert!(matches!(err, Err(Failed::Build)), "{err:?}");
        let unknown = Hash::digest(b"unknown");
        let err = prepare_root(&store, &derivations, unknown, |_| -> Result<_, Failed> {
            panic!("nothing is built for an unknown root")
        })
        .unwrap_err();
        let Failed::Root(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            e.to_string(),
            format!("derivation `{unknown}` is not in the request")
        );
    }

    #[tokio::test]
    async fn run_job_prepares_and_runs_one_job() {
        let executor = FakeExecutor::default();
        let drv = Derivation::new("one", "/bin/sh");
        let job = Job {
            drv_hash: drv.hash(),
            build_key: drv.hash(),
            drv: Arc::new(drv.clone()),
            inputs: BTreeSet::new(),
        };
        let built = run_job(&executor, job.clone(), Cancel::new())
            .await
            .unwrap();
        assert_eq!(executor.runs_of("one"), 1);
        assert_eq!(built.outputs.len(), 1);
        assert_eq!(
            built.outputs[0].placeholder,
            drv.placeholder(drv.hash(), "out")
        );
        // A failing builder's error comes back as it is.
        let mut failing = drv.clone();
        failing.env.insert("fail".into(), "1".into());
        let job = Job {
            drv: Arc::new(failing),
            ..job
        };
        let err = run_job(&executor, job, Cancel::new()).await.unwrap_err();
        assert!(matches!(err, ExecError::Failed { .. }), "{err:?}");
    }
}
