//! mesh-balance: request-level load balancing for the mesh.
//!
//! This crate is not built yet. It will hold a balancer service over a live endpoint set fed by
//! discovery (`tower::discover::Change`): power of two choices among ready endpoints, scored by
//! a peak-EWMA latency estimate times outstanding requests; failure accrual that ejects an
//! endpoint after consecutive failures (judged by `mesh_core::Class`) and probes it back with
//! backoff; endpoint weights; bounded waits for a ready endpoint that fail with
//! `mesh_core::error::UnavailableError` (a 503); and a snapshot of every endpoint's state.
