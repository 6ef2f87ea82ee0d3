//! The `go.mod` and `go.sum` parsers, the module zip check and hash (`h1`) and the GOPROXY
//! path escaping never panic on any input; escaping round-trips.
#![no_main]

use bramble::engine::fetch::h1;
use bramble::golang;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = h1::hash_zip(std::io::Cursor::new(data), None);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sums = golang::parse_go_sum("go.sum", text);
    if let (Ok(gomod), Ok(sums)) = (golang::parse_go_mod("go.mod", text), &sums)
        && let Ok(modules) = golang::modules(&gomod, sums)
    {
        let _ = golang::document::document("fuzz", &modules);
    }
    if let Some(escaped) = h1::escape(text) {
        assert_eq!(h1::unescape(&escaped).as_deref(), Some(text));
    }
    let _ = h1::module_of_url(text);
});
