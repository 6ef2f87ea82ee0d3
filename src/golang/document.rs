//! The DAO document of a Go module's dependencies: one pinned fetch per module file and the
//! step that lays them out as a module proxy (the format is [`crate::engine::dao`]'s).

use serde_json::{Value, json};

use super::{ModuleVersion, Sums};
use crate::engine::fetch::h1::escape;

/// The mirror every module file is fetched from (`mirror://goproxy/<module>/@v/<file>`).
pub const MIRROR: &str = "mirror://goproxy/";

/// The `mirror://goproxy/...` URL of a module's `.zip` or `.mod` (`ext`), escaped as the
/// GOPROXY protocol says. `None` for a path that cannot be escaped (holds `!`; `go.sum`
/// parsing refuses those).
pub fn url(module: &str, version: &str, ext: &str) -> Option<String> {
    Some(format!(
        "{MIRROR}{}/@v/{}.{ext}",
        escape(module)?,
        escape(version)?
    ))
}

/// A store name for a module file: `<module>@<version>.<ext>` with `/` as `-`, other bytes
/// a store name cannot hold as `_`, and at most 200 bytes (the end kept).
pub fn store_name(module: &str, version: &str, ext: &str) -> String {
    let full: String = format!("{module}-{version}.{ext}")
        .chars()
        .map(|c| match c {
            '/' => '-',
            c if c.is_ascii_alphanumeric() || "+-._?=".contains(c) => c,
            _ => '_',
        })
        .collect();
    let cut = full.len().saturating_sub(200);
    full[cut..].trim_start_matches('.').to_owned()
}

/// The document for `modules` (sorted), the proxy step named `<name>-goproxy`.
pub fn document(name: &str, modules: &[(ModuleVersion, Sums)]) -> Value {
    let mut derivations = serde_json::Map::new();
    let mut args = vec!["proxy".to_owned()];
    for (i, ((module, version), sums)) in modules.iter().enumerate() {
        args.push(escape(module).unwrap_or_default());
        args.push(escape(version).unwrap_or_default());
        for (ext, hash) in [("zip", sums.zip), ("mod", sums.go_mod)] {
            let Some(hash) = hash else {
                args.push("-".to_owned());
                continue;
            };
            let id = format!("{ext}-{i}");
            args.push(format!("{{{{ {id}:out }}}}"));
            derivations.insert(
                id,
                json!({
                    "name": store_name(module, version, ext),
                    "builder": "builtin:fetch_url",
                    "env": {
                        "url": url(module, version, ext),
                        "h1": hash.to_string(),
                    },
                }),
            );
        }
    }
    derivations.insert(
        "proxy".into(),
        json!({
            "name": format!("{name}-goproxy"),
            "builder": crate::engine::tool::GO_BUILDER,
            "args": args,
        }),
    );
    json!({"version": 1, "result": "proxy", "derivations": derivations})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::parse_go_sum;

    #[test]
    fn one_pinned_fetch_per_module_file() {
        let sums = parse_go_sum(
            "go.sum",
            "example.com/A v1.0.0 h1:OA7LnY1oYP1T3IvELMcxEsinjuvi0jU+H+9bS2wl0j4=\n\
             example.com/A v1.0.0/go.mod h1:ZAUd/2yOBdp2YItVB+WY5e20QrjfDEAN5lnHVh0qm7A=\n\
             example.com/b v0.1.0/go.mod h1:ZAUd/2yOBdp2YItVB+WY5e20QrjfDEAN5lnHVh0qm7A=\n",
        )
        .unwrap();
        let modules: Vec<_> = sums.into_iter().collect();
        let doc = document("hello", &modules);
        let d = &doc["derivations"];
        assert_eq!(doc["result"], "proxy");
        assert_eq!(
            d["zip-0"]["env"]["url"],
            "mirror://goproxy/example.com/!a/@v/v1.0.0.zip"
        );
        assert_eq!(
            d["zip-0"]["env"]["h1"],
            "h1:OA7LnY1oYP1T3IvELMcxEsinjuvi0jU+H+9bS2wl0j4="
        );
        assert_eq!(d["mod-0"]["name"], "example.com-A-v1.0.0.mod");
        assert!(d.get("zip-1").is_none(), "a go.mod-only module has no zip");
        assert_eq!(
            d["mod-1"]["env"]["url"],
            "mirror://goproxy/example.com/b/@v/v0.1.0.mod"
        );
        assert_eq!(d["proxy"]["builder"], "builtin:bramble-go@1");
        assert_eq!(
            d["proxy"]["args"],
            json!([
                "proxy",
                "example.com/!a",
                "v1.0.0",
                "{{ zip-0:out }}",
                "{{ mod-0:out }}",
                "example.com/b",
                "v0.1.0",
                "-",
                "{{ mod-1:out }}"
            ])
        );
        assert_eq!(store_name("a/b~c", "v1", "zip"), "a-b_c-v1.zip");
    }
}
