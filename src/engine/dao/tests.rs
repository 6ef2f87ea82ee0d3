use proptest::prelude::*;
use serde_json::json;

use super::*;

fn store_path(seed: &str, name: &str) -> StorePath {
    StorePath::new(Hash::digest(seed), name).unwrap()
}

struct Case {
    allowed: BTreeSet<StorePath>,
    limits: Limits,
    level: u32,
}

impl Case {
    fn new() -> Case {
        Case {
            allowed: BTreeSet::from([store_path("busybox", "busybox")]),
            limits: Limits::default(),
            level: 1,
        }
    }

    fn origin(&self) -> Origin<'_> {
        Origin {
            name: "gen",
            hash: Hash::digest("the dao"),
            platform: "x86_64-linux",
            level: self.level,
            allowed: &self.allowed,
        }
    }

    fn run(&self, doc: &serde_json::Value) -> Result<Generated, DaoError> {
        validate(doc.to_string().as_bytes(), &self.origin(), &self.limits)
    }

    fn error(&self, doc: &serde_json::Value) -> String {
        self.run(doc).unwrap_err().to_string()
    }
}

fn sh() -> String {
    format!("{}/bin/sh", store_path("busybox", "busybox").in_store_dir())
}

/// The scenario of the issue: y, then x using y's output and an input's path.
fn doc_yx() -> serde_json::Value {
    json!({
        "version": 1,
        "result": "x",
        "derivations": {
            "x": {"name": "x", "builder": sh(), "args": ["-c", "cat {{ y:out }} > $out"]},
            "y": {"name": "y", "builder": sh(), "args": ["-c", "echo y > $out"]},
        }
    })
}

#[test]
fn generated_derivations_get_real_hashes_in_dependency_order() {
    let case = Case::new();
    let generated = case.run(&doc_yx()).unwrap();
    let ids: Vec<&str> = generated
        .derivations
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids, ["y", "x"]);
    let (y, x) = (&generated.derivations[0], &generated.derivations[1]);
    assert_eq!(y.hash, y.drv.hash());
    assert_eq!(x.hash, x.drv.hash());
    assert_eq!(generated.result, x.hash);
    assert_eq!(
        x.drv.args[1],
        format!("cat {{{{ {}:out }}}} > $out", y.hash)
    );
    assert_eq!(x.drv.platform, "x86_64-linux");
    assert_eq!(x.inputs, case.allowed);
    // The same document always gives the same graph; a different one a different hash.
    assert_eq!(
        case.run(&doc_yx()).unwrap().graph_hash,
        generated.graph_hash
    );
    let mut other = doc_yx();
    other["derivations"]["y"]["args"][1] = json!("echo z > $out");
    assert_ne!(case.run(&other).unwrap().graph_hash, generated.graph_hash);
}

#[test]
fn identical_entries_are_one_derivation() {
    let mut doc = doc_yx();
    doc["derivations"]["y2"] = doc["derivations"]["y"].clone();
    let generated = Case::new().run(&doc).unwrap();
    assert_eq!(generated.derivations.len(), 2);
}

#[test]
fn every_validation_error_names_the_dao_and_entry() {
    let case = Case::new();
    let with = |path: &[&str], value: serde_json::Value| {
        let mut doc = doc_yx();
        let mut at = &mut doc;
        for p in path {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        *at = value;
        doc
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            with(&["derivations", "y", "sources"], json!({"files": ["a"]})),
            "DAO `gen`, derivation `y`: generated derivations carry no sources",
        ),
        (
            with(&["derivations", "x", "args", "1"], json!("cat {{ z:out }}")),
            "DAO `gen`, derivation `x`: `{{ z:out }}` names no derivation of the document",
        ),
        (
            with(&["derivations", "x", "args", "1"], json!("cat {{ y:dev }}")),
            "DAO `gen`, derivation `x`: `{{ y:dev }}` names output `dev`, which `y` does not have",
        ),
        (
            with(&["derivations", "x", "args", "1"], json!("cat {{ y:out")),
            "DAO `gen`, derivation `x`: malformed template at byte 4 of `cat {{ y:out`: expected `{{ <id>:<output> }}`",
        ),
        (
            with(
                &["derivations", "y", "builder"],
                json!(format!(
                    "{}/bin/sh",
                    store_path("secret", "secret").in_store_dir()
                )),
            ),
            "is neither in the DAO's input closure nor its own output",
        ),
        (
            with(
                &["derivations", "y", "builder"],
                json!("/bramble/store/nothash-x/bin/sh"),
            ),
            "DAO `gen`, derivation `y`: `/bramble/store/nothash-x` is not a store path",
        ),
        (
            with(&["derivations", "y", "args", "1"], json!("cat {{ x:out }}")),
            "DAO `gen`: dependency cycle: ",
        ),
        (
            with(&["derivations", "y", "args", "1"], json!("cat {{ y:out }}")),
            "DAO `gen`: dependency cycle: y -> y",
        ),
        (
            with(&["result"], json!("nope")),
            "DAO `gen`: the result `nope` is not a derivation of the document",
        ),
        (
            with(&["derivations", "x", "outputs"], json!(["out", "dev"])),
            "DAO `gen`, derivation `x`: the result must have exactly one output, `out` (it has `out`, `dev`)",
        ),
        (
            with(&["version"], json!(2)),
            "DAO `gen`: document version 2 is not supported",
        ),
        (
            with(&["derivations"], json!({})),
            "DAO `gen`: the document has no derivations",
        ),
        (
            with(&["derivations", "y", "colour"], json!("red")),
            "DAO `gen`: malformed document: unknown field `colour`",
        ),
        (
            with(&["derivations", "y", "name"], json!("bad name")),
            "DAO `gen`, derivation `y`: ",
        ),
        (
            with(
                &["derivations", "bad id!"],
                json!({"name": "z", "builder": "b"}),
            ),
            "DAO `gen`: `bad id!` is not a valid id",
        ),
        (
            with(&["derivations", "y", "builder"], json!("builtin:shell")),
            "DAO `gen`, derivation `y`: unknown builtin builder `builtin:shell`",
        ),
        (
            with(
                &["derivations", "y"],
                json!({"name": "src", "builder": "builtin:fetch_url", "env": {"url": "http://127.0.0.1/a.tar"}}),
            ),
            "DAO `gen`, derivation `y`: the fetch is not pinned",
        ),
        (
            with(
                &["derivations", "y"],
                json!({"name": "src", "builder": "builtin:fetch_url", "env": {"url": "ftp://x/a", "hash": Hash::digest("a").to_string()}}),
            ),
            "DAO `gen`, derivation `y`: ",
        ),
    ];
    for (doc, expected) in cases {
        let message = case.error(&doc);
        assert!(
            message.starts_with(expected) || message.contains(expected),
            "expected `{expected}`, got `{message}`"
        );
    }
}

#[test]
fn a_cycle_is_named_along_its_path() {
    let doc = json!({
        "version": 1,
        "result": "a",
        "derivations": {
            "a": {"name": "a", "builder": "{{ b:out }}"},
            "b": {"name": "b", "builder": "{{ c:out }}"},
            "c": {"name": "c", "builder": "{{ b:out }}"},
        }
    });
    let message = Case::new().error(&doc);
    assert!(
        message.ends_with("dependency cycle: b -> c -> b")
            || message.ends_with("dependency cycle: c -> b -> c"),
        "{message}"
    );
}

#[test]
fn duplicate_ids_are_refused() {
    let text = r#"{"version":1,"result":"a","derivations":{"a":{"name":"a","builder":"b"},"a":{"name":"a","builder":"c"}}}"#;
    let case = Case::new();
    let err = validate(text.as_bytes(), &case.origin(), &case.limits).unwrap_err();
    assert!(err.to_string().contains("id `a` appears twice"), "{err}");
}

#[test]
fn pinned_fetches_are_allowed() {
    let doc = json!({
        "version": 1,
        "result": "use",
        "derivations": {
            "src": {"name": "src.tar", "builder": "builtin:fetch_url",
                    "env": {"url": "http://127.0.0.1:1/src.tar", "sha256": "ab".repeat(32)}},
            "use": {"name": "use", "builder": sh(), "args": ["{{ src:out }}"]},
        }
    });
    let generated = Case::new().run(&doc).unwrap();
    assert_eq!(generated.derivations[0].drv.builder, FETCH_URL);
}

#[test]
fn limits_are_enforced() {
    let mut case = Case::new();
    case.limits.max_derivations = 1;
    assert!(
        case.error(&doc_yx())
            .contains("2 derivations, over the limit of 1")
    );
    case.limits = Limits::default();
    case.limits.max_bytes = 100;
    assert!(case.error(&doc_yx()).contains("over the limit of 100"));
}

#[test]
fn nested_daos_are_bounded_by_the_depth_limit() {
    let mut doc = doc_yx();
    doc["derivations"]["y"]["dao"] = json!(true);
    let mut case = Case::new();
    case.level = 3;
    assert!(case.run(&doc).unwrap().derivations[0].drv.dao);
    case.level = 4;
    assert_eq!(
        case.error(&doc),
        "DAO `gen`, derivation `y`: is a DAO of level 5, over the nesting limit of 4"
    );
}

#[test]
fn the_dao_cannot_generate_itself() {
    let doc = doc_yx();
    let case = Case::new();
    let x = case.run(&doc).unwrap().result;
    let origin = Origin {
        hash: x,
        ..case.origin()
    };
    let err = validate(doc.to_string().as_bytes(), &origin, &case.limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "DAO `gen`, derivation `x`: is the DAO itself"
    );
}

#[test]
fn ordinary_braces_are_text() {
    let mut doc = doc_yx();
    let text = "echo '{{ not a template }}' '{{' > $out";
    doc["derivations"]["y"]["args"][1] = json!(text);
    let generated = Case::new().run(&doc).unwrap();
    let y = &generated.derivations[0];
    assert_eq!(y.id, "y");
    // The braces are kept as written, and y depends on nothing.
    assert_eq!(y.drv.args[1], text);
    assert!(y.drv.dependencies().unwrap().is_empty());
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let case = Case::new();
        let _ = validate(&bytes, &case.origin(), &case.limits);
    }

    #[test]
    fn mutated_documents_never_panic(pos in 0usize..400, byte in any::<u8>()) {
        let case = Case::new();
        let mut text = doc_yx().to_string().into_bytes();
        let at = pos % text.len();
        text[at] = byte;
        let _ = validate(&text, &case.origin(), &case.limits);
    }
}
