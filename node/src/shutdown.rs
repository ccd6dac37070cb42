//! [`Shutdown`]: the one way every Gatehouse server learns that it must stop.
//!
//! A node runs several servers (gRPC, HTTPS, metrics, the gateway's accept loops, its
//! syncer and housekeeping) and the all-in-one runs several nodes. They all stop the
//! same way: someone triggers one [`Shutdown`] (Ctrl-C, SIGTERM, a test, a failed
//! sibling node), every clone of it sees the trigger, each server stops accepting and
//! drains what is in flight, and whoever triggered it awaits the servers' tasks.
//!
//! # Shared state
//!
//! A `tokio::sync::watch` channel holding one `bool` (false until triggered, then true
//! forever), shared by every clone: triggering is one store, and waiting costs no
//! polling. The sender sits behind an `Arc` so any clone may trigger; receivers are
//! cheap to clone, so every task owns its own.

use std::sync::Arc;

use tokio::sync::watch;

/// A stop signal shared by every server of a process. Clones observe the same signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    trigger: Arc<watch::Sender<bool>>,
    triggered: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that nobody has triggered yet.
    pub fn new() -> Shutdown {
        let (trigger, triggered) = watch::channel(false);
        Shutdown {
            trigger: Arc::new(trigger),
            triggered,
        }
    }

    /// A signal triggered on Ctrl-C or SIGTERM (see [`crate::shutdown_signal`]).
    /// Must be called inside a Tokio runtime: it spawns the task that waits for them.
    pub fn on_signals() -> Shutdown {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            trigger.trigger();
        });
        shutdown
    }

    /// Tells every holder to stop. Idempotent.
    pub fn trigger(&self) {
        self.trigger.send_replace(true);
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        *self.triggered.borrow()
    }

    /// Completes once the signal is triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut triggered = self.triggered.clone();
        // An error means every sender is gone, which cannot happen while `self` holds
        // one: treat it as a trigger anyway.
        let _ = triggered.wait_for(|stop| *stop).await;
    }

    /// [`wait`](Self::wait) as an owned future, for APIs that take `impl Future +
    /// 'static` (tonic's and axum's graceful shutdown).
    pub fn wait_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        let shutdown = self.clone();
        async move { shutdown.wait().await }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let shutdown = Shutdown::new();
        let waiter = shutdown.clone();
        let task = tokio::spawn(async move { waiter.wait().await });
        assert!(!shutdown.is_triggered());
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "waits until triggered");
        shutdown.clone().trigger();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the waiter wakes up")
            .unwrap();
        assert!(shutdown.is_triggered());
        // Waiting after the trigger completes at once.
        shutdown.wait().await;
    }
}
