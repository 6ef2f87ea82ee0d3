//! Fuzz the DAO document parser and validator: any bytes must give a generated graph or a
//! `DaoError`, never a panic, and an accepted document's derivations must be valid and
//! hashed as the rest of bramble hashes them.
#![no_main]

use std::collections::BTreeSet;

use bramble::engine::dao::{Limits, Origin, validate};
use bramble::store::{Hash, StorePath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let allowed: BTreeSet<StorePath> =
        BTreeSet::from([StorePath::new(Hash::digest(b"input"), "input").unwrap()]);
    let origin = Origin {
        name: "fuzz",
        hash: Hash::digest(b"dao"),
        platform: "x86_64-linux",
        level: 1,
        allowed: &allowed,
    };
    let limits = Limits {
        max_bytes: 1 << 20,
        max_derivations: 1000,
        max_depth: 4,
    };
    if let Ok(generated) = validate(data, &origin, &limits) {
        let hashes: BTreeSet<Hash> = generated.derivations.iter().map(|d| d.hash).collect();
        assert!(hashes.contains(&generated.result));
        for d in &generated.derivations {
            assert_eq!(d.drv.hash(), d.hash);
            d.drv.validate().expect("generated derivations are valid");
            for dep in d.drv.dependencies().unwrap() {
                assert!(hashes.contains(&dep.drv), "a dependency outside the document");
            }
            assert!(d.inputs.is_subset(&allowed));
        }
    }
});
