//! mesh-metrics: golden metrics and tap for the mesh.
//!
//! This crate is not built yet. It will hold a metrics layer recording, per typed label set,
//! request and response counts, successes and failures by `mesh_core::Class` (so gRPC failures
//! reported only in trailers count), latency histograms (hdrhistogram) and in-flight gauges;
//! TCP and TLS counters; Prometheus text exposition; a snapshot API; and tap, a bounded live
//! stream of request and response metadata.
