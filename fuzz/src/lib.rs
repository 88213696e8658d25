//! What the fuzz targets share: one runtime per process, with paused time, so that every
//! deadline a target meets (detection, request heads, idle connections) passes at once when
//! the target has nothing left to do, instead of being waited for.

use std::sync::OnceLock;

/// The targets' runtime: current-thread, time paused (auto-advancing when idle).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
    })
}
