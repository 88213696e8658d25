//! Examples of the mesh: small programs under `examples/` that link mesh layers into a service.
//! The reference proxy and the meshed demo will live here too.
//!
//! Run one with `cargo run -p examples --example classify_and_timeout`.

/// The code blocks of README.md, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
