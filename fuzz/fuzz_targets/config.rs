//! The proxy's configuration parser on arbitrary text: a config or an error, never a panic,
//! and an error's line is a line of the file.

#![no_main]

use std::path::Path;

use examples::proxy::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::parse(text, Path::new("fuzz.toml")) {
        let shown = error.to_string();
        assert!(shown.contains("fuzz.toml"), "{shown}");
        if let Some(line) = error.line {
            assert!(line >= 1 && line <= text.lines().count() + 1, "{shown}");
        }
    }
});
