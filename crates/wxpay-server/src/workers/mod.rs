//! Background workers, one module each. Every worker claims its rows with a lease (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`), so any number of `wxpay serve` processes can run them side by side;
//! a killed process's leases expire and its work is picked up by another.
//!
//! Shutdown: `Workers::shutdown` tells every loop to stop claiming, waits for the job in hand to
//! finish, then returns.

use crate::startup::AppState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod expirer;
pub mod reconciler;
pub mod sweeper;
pub mod webhooks;

/// What every worker loop gets.
#[derive(Clone)]
pub struct WorkerContext {
    pub state: Arc<AppState>,
    /// Flips to true when the process is shutting down.
    pub stop: watch::Receiver<bool>,
    /// This process's lease owner id.
    pub owner: String,
}

impl WorkerContext {
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d`, or less if shutdown begins. Returns false when shutting down.
    pub async fn idle(&mut self, d: Duration) -> bool {
        if self.stopping() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = self.stop.changed() => false,
        }
    }
}

/// How long a claimed row stays ours before another process may take it (ms).
pub const LEASE_MS: i64 = 60_000;
/// How often an idle worker looks for work.
pub const POLL: Duration = Duration::from_millis(500);
/// Rows claimed per round.
pub const BATCH: i64 = 50;

/// The running workers of this process.
pub struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts every worker loop; they stop when `shutdown` is called.
    pub fn spawn(state: Arc<AppState>) -> Workers {
        let (stop, rx) = watch::channel(false);
        Self::spawn_with(state, stop, rx)
    }

    /// Starts every worker loop, stopping when `stop` flips to true (e.g. on SIGTERM).
    pub fn spawn_with(
        state: Arc<AppState>,
        stop: watch::Sender<bool>,
        rx: watch::Receiver<bool>,
    ) -> Workers {
        let ctx = WorkerContext {
            state,
            stop: rx,
            owner: wxpay_store::new_id("w"),
        };
        let handles = vec![
            tokio::spawn(sweeper::run(ctx.clone())),
            tokio::spawn(expirer::run(ctx.clone())),
            tokio::spawn(webhooks::run(ctx.clone())),
            tokio::spawn(reconciler::run(ctx.clone())),
        ];
        Workers { stop, handles }
    }

    /// Stops claiming, lets in-flight jobs finish, and waits for every loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}
