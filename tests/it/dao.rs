//! Derivations as output through the real binary and sandbox: the original scenario, a
//! manifest-driven generator with fetches from a local HTTP server, caching of the document,
//! the lock's record of each generated graph, `--json`, `graph`, and errors.

use crate::support::{ServedProject, built_names as built, sha256_hex, stderr, stdout};

/// A DAO in the middle of a chain: a → b → c (DAO, given b.out) → d → e; c generates y → x, and
/// x uses b's output by its literal path.
const MODULE: &str = r#"
def busybox():
    return derivation(
        "busybox",
        "busybox",
        args = ["sh", "-c", "mkdir -p $out/bin && cp busybox $out/bin/busybox"],
        sources = files(["busybox"]),
    )

def _sh(name, script, **kwargs):
    return derivation(name, busybox().out + "/bin/busybox", args = ["sh", "-c", script], **kwargs)

def a():
    return _sh("a", "echo a > $out")

def b():
    return _sh("b", "cat $A > $out; echo b >> $out", env = {"A": a()})

GEN = r"""
cat > $out <<EOF
{"version": 1, "result": "x", "derivations": {
  "y": {"name": "y", "builder": "$BB", "args": ["sh", "-c", "echo y > \$out"]},
  "x": {"name": "x", "builder": "$BB", "args": ["sh", "-c", "cat {{ y:out }} $B > \$out; echo x >> \$out"]}
}}
EOF
"""

def c():
    return _sh("c", GEN, env = {"B": b(), "BB": busybox().out + "/bin/busybox"}, dao = True)

def d():
    return _sh("d", "cat $C > $out; echo d >> $out", env = {"C": c()})

def e():
    return _sh("e", "cat $D > $out; echo e >> $out", env = {"D": d()})

# A lock-file-like manifest: one fetch per entry (pinned by sha256), one step per entry, and
# a final step combining them — the pattern for Cargo.lock / go.sum.
MANIFEST_GEN = r"""
BB=$BB/bin/busybox
{
  printf '{"version": 1, "result": "all", "derivations": {\n'
  all=""
  while read name sha url; do
    printf '"src-%s": {"name": "%s.txt", "builder": "builtin:fetch_url", "env": {"url": "%s", "sha256": "%s"}},\n' $name $name $url $sha
    printf '"up-%s": {"name": "up-%s", "builder": "%s", "args": ["sh", "-c", "%s tr a-z A-Z < {{ src-%s:out }} > $out"]},\n' $name $name $BB $BB $name
    all="$all {{ up-$name:out }}"
  done < deps.txt
  printf '"all": {"name": "all", "builder": "%s", "args": ["sh", "-c", "cat %s > $out"]}\n}}\n' $BB "$all"
} > $out
"""

def deps():
    gen = derivation(
        "deps",
        busybox().out + "/bin/busybox",
        args = ["sh", "-c", MANIFEST_GEN],
        env = {"BB": busybox()},
        sources = files(["deps.txt"]),
        dao = True,
    )
    return _sh("use-deps", "cat $DEPS > $out", env = {"DEPS": gen})

WIDE = r"""
{
  printf '{"version": 1, "result": "all", "derivations": {\n'
  all=""
  i=0
  while [ $i -lt 30 ]; do
    printf '"s%d": {"name": "s%d", "builder": "%s", "args": ["sh", "-c", "echo %d > $out"]},\n' $i $i $BB $i
    all="$all {{ s$i:out }}"
    i=$((i + 1))
  done
  printf '"all": {"name": "all", "builder": "%s", "args": ["sh", "-c", "cat %s > $out"]}\n}}\n' $BB "$all"
} > $out
"""

def wide():
    return _sh("wide", WIDE, env = {"BB": busybox().out + "/bin/busybox"}, dao = True)

def with_sources():
    script = "echo '{\"version\": 1, \"result\": \"y\", \"derivations\": {\"y\": {\"name\": \"y\", \"builder\": \"/x\", \"sources\": {}}}}' > $out"
    return _sh("with-sources", script, dao = True)

def foreign():
    script = "echo '{\"version\": 1, \"result\": \"y\", \"derivations\": {\"y\": {\"name\": \"y\", \"builder\": \"/bramble/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-secret/bin/sh\"}}}' > $out"
    return _sh("foreign", script, dao = True)

NESTED = r"""
mkdir -p $out
cat > $out/inner.json <<EOF
{"version": 1, "result": "leaf", "derivations": {"leaf": {"name": "leaf", "builder": "$BB", "args": ["sh", "-c", "echo leaf > \$out"]}}}
EOF
cat > $out/derivations.json <<EOF
{"version": 1, "result": "inner", "derivations": {
  "inner": {"name": "inner", "builder": "$BB", "dao": true, "args": ["sh", "-c", "cp $out/inner.json \$out"]}}}
EOF
"""

def nested():
    return _sh("nested", NESTED, env = {"BB": busybox().out + "/bin/busybox"}, dao = True)

# A DAO whose result is not reproducible (random bytes), directly and one DAO deeper.
RANDOM = r"""
mkdir -p $out
cat > $out/inner.json <<EOF
{"version": 1, "result": "r", "derivations": {"r": {"name": "r", "builder": "$BB", "args": ["sh", "-c", "head -c 16 /dev/urandom > \$out"]}}}
EOF
if [ "$DEPTH" = 1 ]; then cp $out/inner.json $out/derivations.json; else
cat > $out/derivations.json <<EOF
{"version": 1, "result": "inner", "derivations": {
  "inner": {"name": "inner", "builder": "$BB", "dao": true, "args": ["sh", "-c", "cp $out/inner.json \$out"]}}}
EOF
fi
"""

def random():
    return _sh("random", RANDOM, env = {"BB": busybox().out + "/bin/busybox", "DEPTH": "1"}, dao = True)

def random_nested():
    return _sh("random-nested", RANDOM, env = {"BB": busybox().out + "/bin/busybox", "DEPTH": "2"}, dao = True)
"#;

/// The project of [`MODULE`] with `deps.txt` naming three files on its server.
fn project() -> ServedProject {
    let p = ServedProject::new("example.com/daotest", |_| MODULE.to_owned());
    let mut manifest = String::new();
    for name in ["alpha", "beta", "gamma"] {
        let body = format!("{name} fetched\n");
        let path = format!("/{name}.txt");
        p.server.file(&path, body.clone());
        manifest.push_str(&format!(
            "{name} {} {}\n",
            sha256_hex(body.as_bytes()),
            p.server.url(&path)
        ));
    }
    std::fs::write(p.dir.path().join("deps.txt"), manifest).unwrap();
    p
}

#[test]
fn the_original_scenario_and_a_cached_rebuild() {
    let p = project();
    let out = p.ok(&["build", "-j", "1", "./:e"]);
    assert_eq!(built(&out), ["busybox", "a", "b", "c", "y", "x", "d", "e"]);
    assert!(
        stderr(&out).contains("spliced c: 2 derivations generated, 2 new"),
        "{}",
        stderr(&out)
    );
    let path = stdout(&out).trim().to_owned();
    // d and e consumed x's out, which read y's out and b's output by its literal path.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "y\na\nb\nx\nd\ne\n"
    );
    assert!(p.lock().contains("[[dao]]"), "{}", p.lock());
    assert!(p.lock().contains("name = \"c\""), "{}", p.lock());

    // Again: nothing runs, not even the generator; its stored document is spliced.
    let again = p.ok(&["build", "--json", "./:e"]);
    assert!(built(&again).is_empty(), "{}", stderr(&again));
    let json: serde_json::Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(json["built"], 0);
    let daos = json["daos"].as_array().unwrap();
    assert_eq!(daos.len(), 1);
    assert_eq!(daos[0]["name"], "c");
    let names: Vec<&str> = daos[0]["derivations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["y", "x"]);
    assert_eq!(json["roots"][0]["outputs"]["out"]["path"], path.as_str());

    // The DAO as a root stands for its result.
    let c = p.ok(&["build", "./:c"]);
    assert_eq!(
        std::fs::read_to_string(stdout(&c).trim()).unwrap(),
        "y\na\nb\nx\n"
    );

    // `graph` draws the spliced subgraph in the DAO's cluster, and d depending on x.
    let dot = stdout(&p.ok(&["graph", "./:e"]));
    assert!(dot.starts_with("digraph bramble {"), "{dot}");
    let cluster = dot.split("subgraph").nth(1).expect("a cluster");
    assert!(cluster.contains("label=\"generated by c\""), "{dot}");
    assert!(
        cluster.contains("label=\"y\"") && cluster.contains("label=\"x\""),
        "{dot}"
    );
    let id = |name: &str| {
        let line = dot
            .lines()
            .find(|l| l.contains(&format!("[label=\"{name}\"")))
            .unwrap_or_else(|| panic!("no node {name}: {dot}"));
        line.trim().split(' ').next().unwrap().to_owned()
    };
    assert!(
        dot.contains(&format!("{} -> {};", id("d"), id("x"))),
        "{dot}"
    );
    assert!(
        dot.contains(&format!(
            "{} -> {} [style=dashed, label=\"spliced\"];",
            id("c\\n(DAO)"),
            id("x")
        )),
        "{dot}"
    );

    // --dry-run knows the spliced graph: everything is in the store.
    let dry = p.ok(&["build", "--dry-run", "./:e"]);
    assert!(
        stderr(&dry).contains("nothing to build: 8 derivations in the store"),
        "{}",
        stderr(&dry)
    );

    // --check re-runs the generator and compares: it is reproducible.
    let check = p.ok(&["build", "--check", "./:e"]);
    assert!(
        built(&check).contains(&"c".to_owned()),
        "{}",
        stderr(&check)
    );
}

#[test]
fn graph_marks_a_dao_not_generated_yet() {
    let p = project();
    let dry = p.ok(&["build", "--dry-run", "./:e"]);
    assert!(
        stderr(&dry).contains("note: DAO `c` has not run yet"),
        "{}",
        stderr(&dry)
    );
    let listed = stdout(&dry);
    let names: Vec<&str> = listed
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(names, ["busybox", "a", "b", "c", "d", "e"]);
    let dot = stdout(&p.ok(&["graph", "./:e"]));
    assert!(dot.contains("c\\n(DAO, not generated yet)"), "{dot}");
    assert!(!dot.contains("subgraph"), "{dot}");
    assert!(p.lock().is_empty(), "graph records nothing");
}

#[test]
fn the_lock_detects_a_different_graph() {
    let p = project();
    p.ok(&["build", "./:e"]);
    let lock = p.lock();
    let graph_line = lock
        .lines()
        .find(|l| l.starts_with("graph = "))
        .unwrap()
        .to_owned();
    let tampered = lock.replace(&graph_line, "graph = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"");
    std::fs::write(p.dir.path().join("bramble.lock"), &tampered).unwrap();
    let out = p.bramble(&["build", "./:e"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("DAO `c`: generated graph `")
            && stderr(&out)
                .contains("but `bramble.lock` records `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint: "), "{}", stderr(&out));
    // Without the entry, --locked refuses to record a new graph.
    let without: String = tampered.split("[[dao]]").next().unwrap().to_owned();
    std::fs::write(p.dir.path().join("bramble.lock"), without).unwrap();
    let out = p.bramble(&["build", "--locked", "./:e"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not recorded in `bramble.lock`"),
        "{}",
        stderr(&out)
    );
    // A plain build records it again.
    p.ok(&["build", "./:e"]);
    assert!(p.lock().contains(&graph_line), "{}", p.lock());
}

#[test]
fn a_manifest_generates_pinned_fetches_and_one_step_per_entry() {
    let p = project();
    let out = p.ok(&["build", "./:deps"]);
    let path = stdout(&out).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "ALPHA FETCHED\nBETA FETCHED\nGAMMA FETCHED\n"
    );
    assert!(
        stderr(&out).contains("spliced deps: 7 derivations generated, 7 new"),
        "{}",
        stderr(&out)
    );
    for name in ["alpha", "beta", "gamma"] {
        assert_eq!(p.server.hits(&format!("/{name}.txt")), 1);
    }
    // Cached: no download, no build.
    let again = p.ok(&["build", "./:deps"]);
    assert!(built(&again).is_empty(), "{}", stderr(&again));
    assert_eq!(p.server.hits("/alpha.txt"), 1);
    // A changed manifest is a new generator run and a new graph.
    let manifest = std::fs::read_to_string(p.dir.path().join("deps.txt")).unwrap();
    let first = manifest.lines().next().unwrap();
    std::fs::write(p.dir.path().join("deps.txt"), format!("{first}\n")).unwrap();
    let changed = p.ok(&["build", "./:deps"]);
    assert_eq!(
        std::fs::read_to_string(stdout(&changed).trim()).unwrap(),
        "ALPHA FETCHED\n"
    );
    assert_eq!(p.server.hits("/alpha.txt"), 1, "the fetch was shared");
    assert_eq!(p.lock().matches("[[dao]]").count(), 2, "{}", p.lock());
}

#[test]
fn generated_steps_build_with_one_or_four_slots() {
    for jobs in ["1", "4"] {
        let p = project();
        let out = p.ok(&["build", "-j", jobs, "./:wide"]);
        let content = std::fs::read_to_string(stdout(&out).trim()).unwrap();
        let expected: String = (0..30).map(|i| format!("{i}\n")).collect();
        assert_eq!(content, expected);
        assert_eq!(built(&out).len(), 1 + 1 + 30 + 1, "{}", stderr(&out));
    }
}

#[test]
fn invalid_documents_are_refused_with_the_dao_and_entry_named() {
    let p = project();
    let out = p.bramble(&["build", "./:with_sources"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "error: building `with-sources` failed: DAO `with-sources`, derivation `y`: generated derivations carry no sources"
        ),
        "{}",
        stderr(&out)
    );
    let out = p.bramble(&["build", "./:foreign"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "DAO `foreign`, derivation `y`: `/bramble/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-secret` is neither in the DAO's input closure nor its own output"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn nested_daos_within_and_beyond_the_limit() {
    let p = project();
    let out = p.ok(&["build", "./:nested"]);
    assert_eq!(
        std::fs::read_to_string(stdout(&out).trim()).unwrap(),
        "leaf\n"
    );
    assert!(
        stderr(&out).contains("spliced inner: 1 derivations generated"),
        "{}",
        stderr(&out)
    );
    let p = project();
    let out = p.bramble(&["build", "--max-dao-depth", "1", "./:nested"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "DAO `nested`, derivation `inner`: is a DAO of level 2, over the nesting limit of 1"
        ),
        "{}",
        stderr(&out)
    );
}

/// `--check` of a DAO asked for by name checks what it stands for, its result (and the result
/// of a DAO it generates in its place), not only the generator: a result that differs on
/// rebuild is reported. (It used to re-run the generator only and pass.)
#[test]
fn check_of_a_dao_root_rebuilds_its_result() {
    let p = project();
    for target in ["./:random", "./:random_nested"] {
        p.ok(&["build", target]);
        let check = p.bramble(&["build", "--check", target]);
        assert!(!check.status.success(), "{target}: {}", stderr(&check));
        assert!(
            stderr(&check)
                .contains("building `r` failed: output `out` differs from the registered one"),
            "{target}: {}",
            stderr(&check)
        );
    }
}
