//! The endpoints-file parser on arbitrary text: every non-blank, non-comment line is either an
//! endpoint or an error naming a line of the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_balance::discover::file::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (endpoints, errors) = parse(text);
    let lines = text.lines().count();
    assert!(endpoints.len() + errors.len() <= lines);
    for error in &errors {
        assert!(error.line >= 1 && error.line <= lines, "{error}");
    }
});
