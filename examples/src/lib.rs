//! Examples of the mesh: small programs under `examples/` that link mesh layers into a service.
//! The reference proxy ([`proxy`]) and the demo's gRPC API ([`grpc`]) live here, so that the
//! `mesh-proxy` and `demo` examples and the end-to-end tests share them.
//!
//! Run one with `cargo run -p examples --example classify_and_timeout`.

/// The code blocks of README.md, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub mod alloc;
pub mod cli;
pub mod grpc;
pub mod init;
pub mod proxy;
