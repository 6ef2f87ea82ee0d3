//! Debian versions and relation fields from an untrusted index: any three lines give
//! versions whose ordering is a total order (reflexive, antisymmetric, transitive, equality
//! agreeing with the ordering), a version's text parses back to an equal version, and a
//! relation's text (`name[:arch] (op version)`) parses back to the same relation.
#![no_main]

use std::cmp::Ordering;

use bramble::debian::{Version, index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let versions: Vec<Version> = text
        .splitn(3, '\n')
        .filter_map(|line| Version::parse(line).ok())
        .collect();
    for a in &versions {
        assert_eq!(a.cmp(a), Ordering::Equal, "{a}");
        let again = Version::parse(&a.to_string()).expect("a version's text parses");
        assert_eq!(a.cmp(&again), Ordering::Equal, "{a}");
        assert_eq!(again.as_str(), a.as_str());
        for b in &versions {
            assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{a} {b}");
            assert_eq!(a == b, a.cmp(b).is_eq(), "{a} {b}");
            for c in &versions {
                if a <= b && b <= c {
                    assert!(a <= c, "{a} <= {b} <= {c}");
                }
            }
        }
    }
    if let Ok(groups) = index::parse_relations(text) {
        for relation in groups.iter().flatten() {
            let shown = relation.to_string();
            let again = index::parse_relations(&shown)
                .unwrap_or_else(|e| panic!("`{shown}` does not parse again: {e}"));
            let [alternatives] = &again[..] else {
                panic!("`{shown}` parses as {again:?}");
            };
            let [again] = &alternatives[..] else {
                panic!("`{shown}` parses as {alternatives:?}");
            };
            assert_eq!(again.name, relation.name);
            assert_eq!(again.arch_qualifier, relation.arch_qualifier);
            assert_eq!(
                again.constraint.as_ref().map(|(op, v)| (*op, v.as_str())),
                relation.constraint.as_ref().map(|(op, v)| (*op, v.as_str())),
                "{shown}"
            );
        }
    }
});
