//! Benchmarks of the mesh: criterion benches under `benches/` (run with `cargo bench -p
//! benches`), and later the load harness. This library holds what the benches share.

use std::hint::black_box;
use std::pin::pin;

use http_body::Body;
use http_body_util::BodyExt;

/// Reads a body to its end without allocating, so that body wrappers are paid for in full.
pub async fn drain<B: Body>(body: B) {
    let mut body = pin!(body);
    while let Some(frame) = body.frame().await {
        let _ = black_box(frame.is_ok());
    }
}
