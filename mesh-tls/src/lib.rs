//! mesh-tls: mutual TLS for the mesh, with rustls.
//!
//! This crate is not built yet. It will hold a server side that requires and verifies client
//! certificates and records the peer's `mesh_core::PeerIdentity` on every request (strict and
//! permissive modes); a client connector that checks the server presents the expected
//! `mesh_core::Identity`; certificate rotation without restarts; an authorization layer by peer
//! identity; and a small development CA (rcgen) for tests, the demo and first steps.
