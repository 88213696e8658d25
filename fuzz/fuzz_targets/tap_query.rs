//! The tap's query string (`/tap?authority=&path_prefix=&method=&status=&limit=`), which the
//! admin listener takes from anyone who can reach it: a filter or a typed error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_metrics::tap::TapFilter;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        if let Err(error) = TapFilter::from_query(query) {
            let _ = error.to_string();
        }
    }
});
