//! The Go bootstrap chain of `lib/go.bramble`, evaluated (never built here: the real chain
//! downloads Debian's Go packages and runs three `make.bash`, `.ci/example-go` builds it).
//! The graph must be the documented chain: go1.24.4 bootstraps from go1.23.5, which
//! bootstraps from go1.21.13, which bootstraps from Debian's go1.19.8 package set; each step
//! pins its `-src` package by sha256 under `mirror://debian`, builds offline with cgo off and
//! no toolchain downloads, and gets `zoneinfo.zip` made from `tzdata` where Debian strips it.

use serde_json::Value;

use crate::support::project::Project;
use crate::support::{stderr, stdout};

const MODULE: &str = r#"
load("bramble/go", "go_env", "go_toolchain")

def chain():
    return go_toolchain("1.24")

def env():
    return derivation("uses-go", "/bin/sh", env = go_env("1.21"))

def unknown():
    return go_toolchain("1.22")
"#;

/// The derivation a template `{{ <hash>:out }}` (possibly with a suffix) names.
fn named<'a>(drvs: &'a serde_json::Map<String, Value>, template: &str) -> &'a Value {
    let hash = template
        .strip_prefix("{{ ")
        .and_then(|t| t.split(':').next())
        .unwrap_or_else(|| panic!("`{template}` is not a template"));
    &drvs[hash]
}

#[test]
fn the_chain_bootstraps_each_go_from_the_previous_one() {
    let p = Project::new("go-chain", MODULE);
    let out = p.ok(&["eval", "--json", "./:chain"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let drvs = doc["derivations"].as_object().unwrap();
    let mut step = &drvs[doc["roots"][0]["derivations"][0].as_str().unwrap()];
    let mut seen = Vec::new();
    for (name, minor, deb, zoneinfo) in [
        (
            "go1.24.4",
            "1.24",
            "golang-1.24-src_1.24.4-1_all.deb",
            false,
        ),
        (
            "go1.23.5",
            "1.23",
            "golang-1.23-src_1.23.5-1~bpo12+1_all.deb",
            true,
        ),
        (
            "go1.21.13",
            "1.21",
            "golang-1.21-src_1.21.13-1~bpo12+1_all.deb",
            true,
        ),
    ] {
        assert_eq!(step["name"], name);
        let env = &step["env"];
        assert_eq!(env["MINOR"], minor);
        assert_eq!(env["VERSION"], format!("go{}", &name[2..]));
        for (key, value) in [
            ("CGO_ENABLED", "0"),
            ("GOTOOLCHAIN", "local"),
            ("GOPROXY", "off"),
            ("HOME", "/build"),
        ] {
            assert_eq!(env[key], value, "{name}: {key}");
        }
        assert!(env["GOCACHE"].as_str().unwrap().starts_with("/build/"));
        let src = named(drvs, env["SRC"].as_str().unwrap());
        assert_eq!(src["builder"], "builtin:fetch_url");
        let url = src["env"]["url"].as_str().unwrap();
        assert!(
            url.starts_with("mirror://debian/pool/main/g/golang-") && url.ends_with(deb),
            "{url}"
        );
        assert_eq!(src["env"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(src["env"]["unpack"], "deb");
        assert_eq!(env.get("ZONEINFO").is_some(), zoneinfo, "{name}: ZONEINFO");
        if zoneinfo {
            let zip = named(drvs, env["ZONEINFO"].as_str().unwrap());
            assert_eq!(zip["name"], "go-zoneinfo.zip");
            let tzdata = named(drvs, zip["env"]["TZDATA"].as_str().unwrap());
            assert_eq!(tzdata["name"], "tzdata-set");
            assert_eq!(tzdata["builder"], "builtin:bramble-debian@1");
        }
        assert_eq!(
            named(drvs, step["root"].as_str().unwrap())["name"],
            "go-tools-set"
        );
        seen.push(name);
        let boot = env["GOROOT_BOOTSTRAP"].as_str().unwrap();
        let goroot = if minor == "1.21" {
            " }}/usr/lib/go-1.19"
        } else {
            " }}"
        };
        assert!(boot.ends_with(goroot), "{name}: GOROOT_BOOTSTRAP `{boot}`");
        step = named(drvs, boot);
    }
    // The first Go: Debian's binary packages, GOROOT below the package set.
    assert_eq!(step["name"], "go1.19.8-set");
    assert_eq!(step["builder"], "builtin:bramble-debian@1");
    let args: Vec<&str> = step["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.ends_with(&["golang-1.19-go", "golang-1.19-src"]),
        "{args:?}"
    );
    assert_eq!(seen.len(), 3);
}

#[test]
fn go_env_names_the_toolchain_and_keeps_the_build_offline() {
    let p = Project::new("go-env", MODULE);
    let out = p.ok(&["eval", "--json", "./:env"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let drvs = doc["derivations"].as_object().unwrap();
    let env = &drvs[doc["roots"][0]["derivations"][0].as_str().unwrap()]["env"];
    let goroot = env["GOROOT"].as_str().unwrap();
    assert_eq!(named(drvs, goroot)["name"], "go1.21.13");
    assert_eq!(env["PATH"], format!("{goroot}/bin:/usr/bin:/bin"));
    for (key, value) in [
        ("CGO_ENABLED", "0"),
        ("GOTOOLCHAIN", "local"),
        ("GOPROXY", "off"),
        ("GOENV", "off"),
    ] {
        assert_eq!(env[key], value, "{key}");
    }
}

#[test]
fn an_unknown_go_version_is_refused_with_the_known_ones() {
    let p = Project::new("go-unknown", MODULE);
    let out = p.bramble(&["eval", "./:unknown"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("go: no toolchain `1.22`; known: 1.19, 1.21, 1.23, 1.24"),
        "{err}"
    );
}
