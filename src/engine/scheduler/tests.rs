//! The scheduler on the in-memory fakes ([`super::fake`]): caching and early cutoff, the
//! jobs limit, failures with and without keep-going, cancellation, `--check`, two runs
//! sharing a store, and the dry-run plan.

use std::sync::atomic::Ordering;

use super::fake::{FakeExecutor, FakeStore};
use crate::engine::report::NullReporter;
use crate::store::Derivation;

use super::*;

pub(super) fn drv(name: &str, deps: &[&Derivation], env: &[(&str, &str)]) -> Derivation {
    let mut d = Derivation::new(name, "/bin/sh");
    d.args = deps
        .iter()
        .map(|dep| dep.output_ref("out").template())
        .collect();
    d.env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    d
}

pub(super) struct Fixture {
    pub(super) engine: Engine<FakeStore, FakeExecutor>,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        Fixture {
            engine: Engine {
                store: Arc::new(FakeStore::default()),
                executor: Arc::new(FakeExecutor::default()),
                reporter: Arc::new(NullReporter),
            },
        }
    }

    pub(super) async fn build(
        &self,
        drvs: &[&Derivation],
        roots: &[&Derivation],
        options: BuildOptions,
    ) -> BuildReport {
        let graph = BuildGraph::from_derivations(
            drvs.iter().map(|d| (*d).clone()),
            &roots.iter().map(|d| d.hash()).collect::<Vec<_>>(),
        )
        .unwrap();
        run(&self.engine, graph, &options, Cancel::new())
            .await
            .unwrap()
    }

    pub(super) fn runs(&self, name: &str) -> usize {
        self.engine.executor.runs_of(name)
    }
}

pub(super) fn jobs(n: usize) -> BuildOptions {
    BuildOptions {
        jobs: n,
        ..BuildOptions::default()
    }
}

#[tokio::test]
async fn diamond_builds_shared_base_once() {
    let f = Fixture::new();
    let base = drv("base", &[], &[]);
    let left = drv("left", &[&base], &[]);
    let right = drv("right", &[&base], &[]);
    let top = drv("top", &[&left, &right], &[]);
    // Two roots sharing the base: one graph.
    let report = f
        .build(&[&base, &left, &right, &top], &[&top, &left], jobs(4))
        .await;
    assert!(report.success(), "{:?}", report.failures);
    assert_eq!(report.built, 4);
    assert_eq!(f.runs("base"), 1);
    assert_eq!(f.engine.executor.total_runs(), 4);
    // Dependencies ran before dependents.
    let order = f.engine.executor.started.lock().unwrap().clone();
    assert_eq!(order[0], "base");
    assert_eq!(order[3], "top");
    let roots: Vec<_> = report.roots.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(roots, ["top", "left"]);
    assert!(report.roots.iter().all(|r| r.outputs.is_some()));
}

#[tokio::test]
async fn unchanged_rebuild_builds_nothing() {
    let f = Fixture::new();
    let base = drv("base", &[], &[]);
    let top = drv("top", &[&base], &[]);
    let first = f.build(&[&base, &top], &[&top], jobs(2)).await;
    let second = f.build(&[&base, &top], &[&top], jobs(2)).await;
    assert_eq!((second.built, second.cached), (0, 2));
    assert_eq!(f.engine.executor.total_runs(), 2);
    assert_eq!(first.roots[0].outputs, second.roots[0].outputs);
}

#[tokio::test]
async fn jobs_limit_is_respected() {
    for limit in [1, 3] {
        let f = Fixture::new();
        // Each leaf holds its slot until `limit` builds have run at once: the peak is reached
        // whatever the timing, and a scheduler over the limit would start more meanwhile.
        let hold = limit.to_string();
        let leaves: Vec<Derivation> = (0..8)
            .map(|i| drv(&format!("leaf{i}"), &[], &[("hold_until_running", &hold)]))
            .collect();
        let refs: Vec<&Derivation> = leaves.iter().collect();
        let root = drv("root", &refs, &[]);
        let mut all = refs.clone();
        all.push(&root);
        let report = f.build(&all, &[&root], jobs(limit)).await;
        assert!(report.success());
        assert_eq!(report.built, 9);
        let max = f.engine.executor.max_running.load(Ordering::SeqCst);
        assert_eq!(
            max, limit,
            "at most (and, with 8 held leaves, exactly) {limit} at once"
        );
    }
}

#[tokio::test]
async fn failure_stops_new_work() {
    let f = Fixture::new();
    let bad = drv("bad", &[], &[("fail", "1")]);
    let others: Vec<Derivation> = (0..4).map(|i| drv(&format!("ok{i}"), &[], &[])).collect();
    let mut all: Vec<&Derivation> = vec![&bad];
    all.extend(others.iter());
    let top = drv("top", &all, &[]);
    all.push(&top);
    let report = f.build(&all, &[&top], jobs(1)).await;
    assert!(!report.success());
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].name, "bad");
    assert!(matches!(
        report.failures[0].kind,
        FailureKind::Exec(ExecError::Failed { .. })
    ));
    // With one slot, nothing started after the failure; the root was never attempted.
    let started = f.engine.executor.started.lock().unwrap().clone();
    let failed_at = started.iter().position(|n| n == "bad").unwrap();
    assert_eq!(failed_at, started.len() - 1, "{started:?}");
    assert_eq!(f.runs("top"), 0);
    assert!(report.roots[0].outputs.is_none());
    assert_eq!(report.skipped, 6 - 1 - report.built);
}

#[tokio::test]
async fn failure_cancels_running_builds() {
    let f = Fixture::new();
    let bad = drv("bad", &[], &[("fail", "1")]);
    let slow = drv("slow", &[], &[("sleep_ms", "60000")]);
    let top = drv("top", &[&slow, &bad], &[]);
    let report = f.build(&[&bad, &slow, &top], &[&top], jobs(2)).await;
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.built, 0);
    assert_eq!(f.engine.store.registrations.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn keep_going_builds_independent_branches() {
    let f = Fixture::new();
    let bad = drv("bad", &[], &[("fail", "1")]);
    let above_bad = drv("above-bad", &[&bad], &[]);
    let good = drv("good", &[], &[]);
    let above_good = drv("above-good", &[&good], &[]);
    let options = BuildOptions {
        keep_going: true,
        ..jobs(1)
    };
    let report = f
        .build(
            &[&bad, &above_bad, &good, &above_good],
            &[&above_bad, &above_good],
            options,
        )
        .await;
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.built, 2);
    assert_eq!(report.skipped, 1);
    assert_eq!(f.runs("above-good"), 1);
    assert_eq!(f.runs("above-bad"), 0);
    assert!(report.roots[0].outputs.is_none());
    assert!(report.roots[1].outputs.is_some());
}

#[tokio::test]
async fn early_cutoff_stops_at_identical_output() {
    let f = Fixture::new();
    let leaf = drv("leaf", &[], &[("content", "same"), ("version", "1")]);
    let mid = drv("mid", &[&leaf], &[]);
    let top = drv("top", &[&mid], &[]);
    f.build(&[&leaf, &mid, &top], &[&top], jobs(2)).await;
    // A changed leaf whose output is byte-identical: it rebuilds, its dependents do not.
    let leaf2 = drv("leaf", &[], &[("content", "same"), ("version", "2")]);
    let mid2 = drv("mid", &[&leaf2], &[]);
    let top2 = drv("top", &[&mid2], &[]);
    assert_ne!(mid.hash(), mid2.hash());
    let report = f.build(&[&leaf2, &mid2, &top2], &[&top2], jobs(2)).await;
    assert_eq!((report.built, report.cached), (1, 2));
    assert_eq!((f.runs("leaf"), f.runs("mid"), f.runs("top")), (2, 1, 1));
    // A leaf whose output changes rebuilds everything above it.
    let leaf3 = drv("leaf", &[], &[("content", "different")]);
    let mid3 = drv("mid", &[&leaf3], &[]);
    let top3 = drv("top", &[&mid3], &[]);
    let report = f.build(&[&leaf3, &mid3, &top3], &[&top3], jobs(2)).await;
    assert_eq!(report.built, 3);
}

#[tokio::test]
async fn check_detects_non_reproducible_output() {
    let f = Fixture::new();
    let stable = drv("stable", &[], &[]);
    let random = drv("random", &[&stable], &[("random", "1")]);
    f.build(&[&stable, &random], &[&random], jobs(1)).await;
    let check = BuildOptions {
        check: true,
        ..jobs(1)
    };
    let report = f
        .build(&[&stable, &random], &[&random], check.clone())
        .await;
    assert_eq!(report.failures.len(), 1);
    let FailureKind::NotDeterministic {
        output,
        registered,
        rebuilt,
    } = &report.failures[0].kind
    else {
        panic!("{:?}", report.failures)
    };
    assert_eq!(output, "out");
    assert_ne!(registered, rebuilt);
    // Only the requested root is re-checked; a reproducible one passes.
    assert_eq!(f.runs("stable"), 1);
    let report = f.build(&[&stable], &[&stable], check).await;
    assert!(report.success());
    assert_eq!(f.runs("stable"), 2);
}

#[tokio::test]
async fn cancellation_stops_everything() {
    let f = Fixture::new();
    let slow = drv("slow", &[], &[("sleep_ms", "60000")]);
    let top = drv("top", &[&slow], &[]);
    let graph = BuildGraph::from_derivations([slow.clone(), top.clone()], &[top.hash()]).unwrap();
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        trigger.cancel();
    });
    let report = run(&f.engine, graph, &jobs(2), cancel).await.unwrap();
    assert!(report.cancelled);
    assert!(report.failures.is_empty());
    assert_eq!(report.built, 0);
    assert_eq!(f.runs("top"), 0);
}

#[tokio::test]
async fn concurrent_runs_share_the_build_lock() {
    // Two schedulers on one store (two processes on one store): each derivation runs once.
    let f = Fixture::new();
    let base = drv("base", &[], &[("sleep_ms", "30")]);
    let top = drv("top", &[&base], &[]);
    let g1 = BuildGraph::from_derivations([base.clone(), top.clone()], &[top.hash()]).unwrap();
    let g2 = BuildGraph::from_derivations([base.clone(), top.clone()], &[top.hash()]).unwrap();
    let options = jobs(2);
    let (a, b) = tokio::join!(
        run(&f.engine, g1, &options, Cancel::new()),
        run(&f.engine, g2, &options, Cancel::new()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(f.runs("base"), 1);
    assert_eq!(f.runs("top"), 1);
    assert_eq!(a.built + b.built, 2);
    assert_eq!(a.roots[0].outputs, b.roots[0].outputs);
}

#[tokio::test]
async fn dry_run_plan() {
    let f = Fixture::new();
    let base = drv("base", &[], &[]);
    let top = drv("top", &[&base], &[]);
    f.build(&[&base], &[&base], jobs(1)).await;
    let graph = BuildGraph::from_derivations([base.clone(), top.clone()], &[top.hash()]).unwrap();
    let p = plan(f.engine.store.clone(), graph, &jobs(1)).await.unwrap();
    assert_eq!(p.cached, vec![(base.hash(), "base".to_owned())]);
    assert_eq!(p.to_build, vec![(top.hash(), "top".to_owned())]);
    assert!(p.not_generated.is_empty());
    assert_eq!(f.engine.executor.total_runs(), 1);
}
