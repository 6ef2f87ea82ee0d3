//! The DAO document of a package set: one pinned fetch per `.deb` and the assembly step
//! (the format is [`crate::engine::dao`]'s).

use serde_json::{Value, json};

use super::index::Package;

/// The mirror every `.deb` is fetched from (`mirror://debian/<Filename>`).
pub const MIRROR: &str = "mirror://debian/";

/// The document id of a package's fetch: `deb-<name>` (`+` spelt `_`; ids allow
/// `A-Za-z0-9_.-`, Debian names `a-z0-9+.-`, so the map is one-to-one).
pub fn fetch_id(p: &Package) -> String {
    format!("deb-{}", p.name.replace('+', "_"))
}

/// The document for `packages` (the closure, sorted), assembled into a tree named `name` by
/// `builtin:bramble-debian@N assemble` (the tool by name and version, never by bytes, so the
/// graph and its hash in `bramble.lock` are the same for every build of bramble).
pub fn document(name: &str, packages: &[&Package]) -> Value {
    let mut derivations = serde_json::Map::new();
    let mut trees = Vec::new();
    for p in packages {
        let id = fetch_id(p);
        trees.push(format!("{{{{ {id}:out }}}}"));
        derivations.insert(
            id,
            json!({
                "name": p.name,
                "builder": "builtin:fetch_url",
                "env": {
                    "url": format!("{MIRROR}{}", p.filename),
                    "sha256": p.sha256,
                    "unpack": "deb",
                },
            }),
        );
    }
    let mut args = vec!["assemble".to_owned()];
    args.extend(trees);
    let listing = packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect::<Vec<_>>()
        .join("\n");
    derivations.insert(
        "tree".into(),
        json!({
            "name": name,
            "builder": crate::engine::tool::DEBIAN_BUILDER,
            "args": args,
            "env": {"PACKAGES": listing},
        }),
    );
    json!({"version": 1, "result": "tree", "derivations": derivations})
}
