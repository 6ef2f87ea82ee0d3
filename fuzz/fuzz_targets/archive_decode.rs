//! Fuzz the archive decoder with arbitrary bytes: it must never panic, and whatever it
//! accepts must be canonical (re-encode to the same bytes) and restorable on disk without
//! escaping the destination.
#![no_main]

use bramble::store::archive::{Limits, Node};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_depth: 64,
        max_total_size: 1 << 20,
        max_entries: 10_000,
    };
    // Most inputs fail the magic check; prepend a valid header half of the time so the
    // fuzzer explores the node grammar.
    let mut with_header = bramble::store::archive::MAGIC.to_vec();
    with_header.extend_from_slice(&bramble::store::archive::VERSION.to_le_bytes());
    with_header.extend_from_slice(data);
    for input in [data, with_header.as_slice()] {
        if let Ok(node) = Node::from_archive(input, &limits) {
            assert_eq!(node.to_archive().unwrap(), input, "accepted a non-canonical archive");
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("out");
            let _ = bramble::store::local::fs::restore(
                input,
                &dest,
                &limits,
                bramble::store::local::fs::RestoreOptions {
                    read_only: false,
                    fsync: false,
                },
            );
            // Nothing may appear next to the destination.
            let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
            assert!(names.len() <= 1);
        }
    }
});
