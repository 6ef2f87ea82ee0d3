//! The scheduler with derivations as output, on the in-memory fakes.

use serde_json::json;

use super::tests::{Fixture, drv, jobs};
use super::*;
use crate::store::Derivation;

/// A DAO whose fake build writes `document` (templates in it are resolved first, as for
/// any env value: that is how it learns its inputs' paths).
fn dao(name: &str, deps: &[&Derivation], document: serde_json::Value) -> Derivation {
    let mut d = drv(name, deps, &[("document", &document.to_string())]);
    d.dao = true;
    d
}

/// The derivations the fake executor ran, in start order.
fn started(f: &Fixture) -> Vec<String> {
    f.engine.executor.started.lock().unwrap().clone()
}

/// The scenario of the issue: a → b → c (DAO, given b.out) → d → e, where c generates
/// y → x and x uses b.out's path.
fn scenario() -> (Vec<Derivation>, Derivation) {
    let a = drv("a", &[], &[]);
    let b = drv("b", &[&a], &[]);
    let b_out = b.output_ref("out").template();
    let c = dao(
        "c",
        &[&b],
        json!({
            "version": 1,
            "result": "x",
            "derivations": {
                "y": {"name": "y", "builder": "/bin/sh", "args": ["-c", "echo y"]},
                "x": {"name": "x", "builder": "/bin/sh", "args": ["{{ y:out }}", format!("{b_out}/bin")]},
            }
        }),
    );
    let d = drv("d", &[&c], &[]);
    let e = drv("e", &[&d], &[]);
    (vec![a, b, c, d], e)
}

#[tokio::test]
async fn the_original_scenario_runs_a_b_y_x_d_e() {
    let f = Fixture::new();
    let (mut all, e) = scenario();
    all.push(e.clone());
    let refs: Vec<&Derivation> = all.iter().collect();
    let report = f.build(&refs, &[&e], jobs(1)).await;
    assert!(report.success(), "{:?}", report.failures);
    assert_eq!(started(&f), ["a", "b", "c", "y", "x", "d", "e"]);
    assert_eq!(report.built, 7);
    let splice = &report.splices[0];
    assert_eq!(splice.name, "c");
    let generated: Vec<&str> = splice.derivations.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(generated, ["y", "x"]);
    assert_eq!(splice.new, 2);
    // d consumed x's output: its resolved derivation (the fake's output content) names x's
    // realised path, and x's names b's path literally and y's output.
    let store = &f.engine.store;
    let x_key = report.roots[0].build_key.unwrap();
    assert!(store.realisation(x_key, "out").unwrap().is_some());
    let x_path = store
        .contents_matching("\"name\":\"x\",\"outputs\"")
        .expect("x was built");
    let d_content = store
        .contents_matching("\"name\":\"d\",\"outputs\"")
        .unwrap();
    assert!(
        d_content.1.contains(&x_path.0.to_string()),
        "{}",
        d_content.1
    );
    let b_path = store
        .contents_matching("\"name\":\"b\",\"outputs\"")
        .unwrap()
        .0;
    assert!(
        x_path.1.contains(&format!("/bramble/store/{b_path}/bin")),
        "{}",
        x_path.1
    );
}

#[tokio::test]
async fn a_rebuild_splices_the_stored_document_without_running_the_generator() {
    let f = Fixture::new();
    let (mut all, e) = scenario();
    all.push(e.clone());
    let refs: Vec<&Derivation> = all.iter().collect();
    let first = f.build(&refs, &[&e], jobs(2)).await;
    let second = f.build(&refs, &[&e], jobs(2)).await;
    assert!(second.success(), "{:?}", second.failures);
    assert_eq!(f.runs("c"), 1, "the generator ran again");
    assert_eq!((second.built, second.cached), (0, 7));
    assert_eq!(second.splices.len(), 1);
    assert_eq!(second.splices[0].graph, first.splices[0].graph);
    assert_eq!(first.roots[0].outputs, second.roots[0].outputs);
}

#[tokio::test]
async fn a_plan_names_the_daos_not_generated_and_splices_the_stored_ones() {
    let f = Fixture::new();
    let (mut all, e) = scenario();
    all.push(e.clone());
    let refs: Vec<&Derivation> = all.iter().collect();
    let graph = |drvs: &[&Derivation]| {
        BuildGraph::from_derivations(drvs.iter().map(|d| (*d).clone()), &[e.hash()]).unwrap()
    };
    let names = |list: &[(Hash, String)]| list.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>();
    f.build(&refs[..2], &[&all[1]], jobs(1)).await;
    let before = plan(f.engine.store.clone(), graph(&refs), &jobs(1))
        .await
        .unwrap();
    assert_eq!(names(&before.cached), ["a", "b"]);
    assert_eq!(names(&before.to_build), ["c", "d", "e"]);
    assert_eq!(names(&before.not_generated), ["c"]);

    f.build(&refs, &[&e], jobs(1)).await;
    let runs = f.engine.executor.total_runs();
    let after = plan(f.engine.store.clone(), graph(&refs), &jobs(1))
        .await
        .unwrap();
    assert!(after.to_build.is_empty() && after.not_generated.is_empty());
    let mut cached = names(&after.cached);
    let at = |n: &str| cached.iter().position(|c| c == n).unwrap();
    assert!(at("y") < at("x") && at("x") < at("d") && at("b") < at("c"));
    cached.sort();
    assert_eq!(cached, ["a", "b", "c", "d", "e", "x", "y"]);
    assert_eq!(
        f.engine.executor.total_runs(),
        runs,
        "a plan builds nothing"
    );
}

#[tokio::test]
async fn a_dao_root_reports_its_results_outputs() {
    let f = Fixture::new();
    let (all, _) = scenario();
    let c = &all[2];
    let refs: Vec<&Derivation> = all.iter().collect();
    let report = f.build(&refs, &[c], jobs(2)).await;
    assert!(report.success(), "{:?}", report.failures);
    assert_eq!(report.roots[0].name, "c");
    let out = &report.roots[0].outputs.as_ref().unwrap()["out"];
    assert_eq!(out.name(), "x");
}

/// A DAO generating `n` independent steps and a result combining them.
fn wide_dao(n: usize) -> Derivation {
    let mut derivations = serde_json::Map::new();
    let mut args = Vec::new();
    for i in 0..n {
        derivations.insert(
            format!("s{i}"),
            json!({"name": format!("s{i}"), "builder": "/bin/sh", "args": [i.to_string()]}),
        );
        args.push(format!("{{{{ s{i}:out }}}}"));
    }
    derivations.insert(
        "all".into(),
        json!({"name": "all", "builder": "/bin/sh", "args": args}),
    );
    dao(
        "wide",
        &[],
        json!({"version": 1, "result": "all", "derivations": derivations}),
    )
}

#[tokio::test]
async fn waiting_for_the_subgraph_holds_no_slot() {
    for slots in [1, 4] {
        let f = Fixture::new();
        let generator = wide_dao(100);
        let top = drv("top", &[&generator], &[]);
        let report = f.build(&[&generator, &top], &[&top], jobs(slots)).await;
        assert!(report.success(), "{:?}", report.failures);
        assert_eq!(report.built, 103);
        assert!(
            f.engine
                .executor
                .max_running
                .load(std::sync::atomic::Ordering::SeqCst)
                <= slots
        );
    }
}

#[tokio::test]
async fn generated_derivations_equal_to_graph_nodes_are_shared() {
    let f = Fixture::new();
    let shared = drv("shared", &[], &[]);
    let mut generator = dao(
        "gen",
        &[],
        json!({"version": 1, "result": "shared", "derivations": {
            "shared": {"name": "shared", "builder": "/bin/sh", "platform": shared.platform},
        }}),
    );
    generator.env.insert("order".into(), "1".into());
    let top = drv("top", &[&generator, &shared], &[]);
    let report = f
        .build(&[&shared, &generator, &top], &[&top], jobs(2))
        .await;
    assert!(report.success(), "{:?}", report.failures);
    assert_eq!(f.runs("shared"), 1);
    assert_eq!(report.splices[0].new, 0);
    assert_eq!(f.runs("top"), 1);
}

fn nested(levels: usize) -> Derivation {
    // Innermost document: one plain derivation.
    let mut doc = json!({"version": 1, "result": "leaf", "derivations": {
        "leaf": {"name": "leaf", "builder": "/bin/sh"},
    }});
    for level in (1..levels).rev() {
        doc = json!({"version": 1, "result": "inner", "derivations": {
            "inner": {"name": format!("inner{level}"), "builder": "/bin/sh", "dao": true,
                      "env": {"document": doc.to_string()}},
        }});
    }
    dao("outer", &[], doc)
}

#[tokio::test]
async fn nested_daos_splice_up_to_the_depth_limit() {
    let f = Fixture::new();
    let ok = nested(4);
    let top = drv("top", &[&ok], &[]);
    let report = f.build(&[&ok, &top], &[&top], jobs(2)).await;
    assert!(report.success(), "{:?}", report.failures);
    assert_eq!(report.splices.len(), 4);
    assert_eq!(f.runs("leaf"), 1);

    let f = Fixture::new();
    let deep = nested(5);
    let top = drv("top", &[&deep], &[]);
    let report = f.build(&[&deep, &top], &[&top], jobs(2)).await;
    assert_eq!(report.failures.len(), 1);
    assert_eq!(
        report.failures[0].kind.to_string(),
        "DAO `inner3`, derivation `inner`: is a DAO of level 5, over the nesting limit of 4"
    );
    assert_eq!(f.runs("top"), 0);
}

#[tokio::test]
async fn an_invalid_document_fails_the_dao_and_builds_no_dependent() {
    let f = Fixture::new();
    let generator = dao(
        "gen",
        &[],
        json!({"version": 1, "result": "x", "derivations": {
            "x": {"name": "x", "builder": "/bin/sh", "args": ["{{ nope:out }}"]},
        }}),
    );
    let top = drv("top", &[&generator], &[]);
    let report = f.build(&[&generator, &top], &[&top], jobs(2)).await;
    assert_eq!(report.failures.len(), 1);
    assert_eq!(
        report.failures[0].kind.to_string(),
        "DAO `gen`, derivation `x`: `{{ nope:out }}` names no derivation of the document"
    );
    assert_eq!(f.runs("top"), 0);
    assert!(report.roots[0].outputs.is_none());
}

#[tokio::test]
async fn recorded_graphs_are_enforced() {
    let f = Fixture::new();
    let (mut all, e) = scenario();
    all.push(e.clone());
    let refs: Vec<&Derivation> = all.iter().collect();
    let c = all[2].hash();
    let first = f.build(&refs, &[&e], jobs(2)).await;
    let graph = first.splices[0].graph;
    // The recorded graph: fine.
    let options = BuildOptions {
        dao_graphs: Arc::new(HashMap::from([(c, graph)])),
        dao_locked: true,
        ..jobs(2)
    };
    assert!(f.build(&refs, &[&e], options).await.success());
    // Another recorded graph: refused before anything is spliced.
    let options = BuildOptions {
        dao_graphs: Arc::new(HashMap::from([(c, Hash::digest("other"))])),
        ..jobs(2)
    };
    let report = f.build(&refs, &[&e], options).await;
    assert!(
        report.failures[0]
            .kind
            .to_string()
            .contains("but `bramble.lock` records"),
        "{:?}",
        report.failures
    );
    assert!(report.splices.is_empty());
    // Nothing recorded under --locked: refused.
    let options = BuildOptions {
        dao_locked: true,
        ..jobs(2)
    };
    let report = f.build(&refs, &[&e], options).await;
    assert!(
        report.failures[0]
            .kind
            .to_string()
            .contains("is not recorded")
    );
}

#[tokio::test]
async fn check_reruns_the_generator_and_compares() {
    let f = Fixture::new();
    let (mut all, e) = scenario();
    all.push(e.clone());
    let refs: Vec<&Derivation> = all.iter().collect();
    f.build(&refs, &[&e], jobs(2)).await;
    let check = BuildOptions {
        check: true,
        ..jobs(2)
    };
    let report = f.build(&refs, &[&e], check).await;
    assert!(report.success(), "{:?}", report.failures);
    assert_eq!(f.runs("c"), 2, "--check re-runs the generator");
    assert_eq!(report.splices.len(), 1);

    // A generator whose document differs on every run is caught.
    let f = Fixture::new();
    let mut flaky = wide_dao(2);
    flaky.env.insert("random".into(), "1".into());
    let top = drv("top", &[&flaky], &[]);
    f.build(&[&flaky, &top], &[&top], jobs(2)).await;
    let check = BuildOptions {
        check: true,
        ..jobs(2)
    };
    let report = f.build(&[&flaky, &top], &[&top], check).await;
    assert!(matches!(
        report.failures[0].kind,
        FailureKind::NotDeterministic { .. }
    ));
}
