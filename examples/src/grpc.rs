//! The demo's gRPC API (`proto/demo.proto`), generated at build time by tonic.

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("mesh.demo");
