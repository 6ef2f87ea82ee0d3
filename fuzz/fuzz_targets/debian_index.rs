//! The `Packages` index parser, relation parser, version ordering and resolver never panic
//! on any input.
#![no_main]

use bramble::debian::{Universe, Version, index, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = index::parse_relations(text);
    if let Ok(packages) = index::parse(text) {
        let universe = Universe::new(&packages, "amd64");
        let wanted: Vec<String> = packages.iter().take(3).map(|p| p.name.clone()).collect();
        let _ = resolve::closure(&universe, &wanted);
        // Ordering is total and consistent on what the index held.
        for w in packages.windows(2) {
            let (a, b) = (&w[0].version, &w[1].version);
            assert_eq!(a.cmp(b), b.cmp(a).reverse());
        }
    }
    for line in text.lines().take(4) {
        if let Ok(v) = Version::parse(line) {
            assert_eq!(v.cmp(&v), std::cmp::Ordering::Equal);
        }
    }
});
