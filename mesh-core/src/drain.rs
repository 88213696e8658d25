//! Graceful shutdown: every listener and connection holds a [`DrainWatch`]; [`Drain::drain`]
//! tells them all to finish what is in flight, and waits until the last one has let go, or
//! the deadline passes.
//!
//! ```
//! use std::time::Duration;
//! use mesh_core::drain::Drain;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let (drain, mut watch) = Drain::new();
//! let connection = tokio::spawn(async move {
//!     watch.signaled().await; // finish what is in flight, then let go of the watch
//! });
//! assert!(drain.drain(Duration::from_secs(1)).await);
//! connection.await.unwrap();
//! # });
//! ```

use std::time::Duration;

use tokio::sync::watch;

/// The sending side, held by whoever shuts the proxy down.
#[derive(Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
}

/// The receiving side, cloned into every listener and connection.
#[derive(Clone, Debug)]
pub struct DrainWatch {
    signal: watch::Receiver<bool>,
}

impl Drain {
    /// A drain and its first watch.
    pub fn new() -> (Self, DrainWatch) {
        let (signal, rx) = watch::channel(false);
        (Self { signal }, DrainWatch { signal: rx })
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// A watch to hand to new work.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            signal: self.signal.subscribe(),
        }
    }

    /// Signals every watch, then waits for all of them to be dropped, at most `deadline`.
    /// Returns whether everything finished in time.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.signal.send_replace(true);
        tokio::time::timeout(deadline, self.signal.closed())
            .await
            .is_ok()
    }
}

impl DrainWatch {
    /// Resolves once draining has begun.
    pub async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|draining| *draining).await;
    }
}
