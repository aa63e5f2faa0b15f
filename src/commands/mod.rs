//! The drivers of the core: each moves bytes between the outside world and
//! [`crate::pipeline::Pipeline`].

pub mod check_config;
pub mod demo;
pub mod generate;
pub mod process;
pub mod reload;
pub mod replay;
pub mod rules_diff;
pub mod tail;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many times the user asked a command to stop (SIGINT or SIGTERM, counted by
/// `main`): the long-running tools (`generate` to a cluster, `tail`) check it between
/// records. Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct StopRequests(Arc<AtomicU32>);

impl StopRequests {
    /// Records one more request.
    pub fn request(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far.
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// True once a stop was requested.
    pub fn requested(&self) -> bool {
        self.count() > 0
    }
}
