//! Benchmarks of the mesh: criterion benches under `benches/` (run with `cargo bench -p
//! benches`), and later the load harness.
