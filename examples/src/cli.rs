//! What every program of this package does first.

/// Logs to stderr, filtered by `MESH_LOG` (a tracing filter such as `warn` or
/// `mesh_control=debug`; `info` when unset or invalid).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
