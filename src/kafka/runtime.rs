//! The Kafka service, as the rest of the crate starts it: [`run`] (and [`run_with`], with
//! observers) runs the service loop on a thread of its own until a shutdown future completes,
//! then drains and commits.
//!
//! The loop (`service`) consumes, runs the pure core, and sends each record's outputs through
//! the delivery guarantee (`delivery`: at least once, or exactly once with Kafka
//! transactions); the consumer's callbacks (`rebalance`) commit what is revoked and restore
//! what is assigned; `shared` holds the state both see; `outbox` produces and settles delivery
//! reports; `plan` is the pure step from a processed record to the records to produce;
//! `health` the heartbeat and readiness; `topics` topic creation; `events` every noteworthy
//! event's log line and metric.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::error::KafkaError;

pub use super::health::{Heartbeat, Readiness};
use super::offsets::TopicPartition;
use super::restore::RestoreFailure;
use super::service;
use crate::config::Config;
use crate::pipeline::Processor;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the Kafka {client}: {source}")]
    Client { client: &'static str, source: KafkaError },
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe { topics: Vec<String>, source: KafkaError },
    #[error("fatal Kafka {client} error: {reason}")]
    Fatal { client: &'static str, reason: String },
    #[error("cannot restore the partition state: {0}")]
    Restore(#[from] RestoreFailure),
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub consumed: u64,
    pub events: u64,
    pub dead_letters: u64,
    /// Outputs refused for good and rerouted to the dead-letter topic.
    pub produce_failed: u64,
    /// True when every output was acknowledged and committed before the process stopped.
    pub drained: bool,
    /// Most records in flight at once (bounded by `kafka.max_in_flight`).
    pub peak_in_flight: usize,
    /// Most bytes held for records in flight at once (bounded by
    /// `kafka.max_in_flight_bytes`, plus the one record that crossed it).
    pub peak_in_flight_bytes: usize,
    /// Input records re-keyed into the repartition topic (processed from there: counted
    /// again in `consumed`, and as an event or dead letter).
    pub repartitioned: u64,
    /// Changelog records produced (state changes and tombstones).
    pub changelog_records: u64,
    /// Flushes of state changes that wrote changelog records.
    pub flushes: u64,
    /// Alerts produced (acknowledged or not).
    pub alerts: u64,
    /// Incident revisions produced (acknowledged or not).
    pub incidents: u64,
    /// Events produced to the tenant topic, for the tenant-scoped rules they match
    /// (acknowledged or not: a refused one is in `produce_failed`).
    pub tenant_forwarded: u64,
    /// Records of the tenant topic counted for their tenant (not in `consumed`; their alerts
    /// are in `alerts`).
    pub tenant_records: u64,
    /// Changelog records read back while restoring assigned partitions.
    pub restored_records: u64,
    /// Entries (sessions) held by the partitions restored, once restored.
    pub restored_entries: u64,
    /// Changelog records that could not be applied while restoring (logged, skipped).
    pub restore_errors: u64,
}

/// The input partitions this processor owns now, published on every rebalance.
pub type Assignment = std::collections::BTreeSet<TopicPartition>;

/// A request for the live state of one session (`GET /sessions/{id}`): answered with the
/// state and its input partition, or `None` when no partition of this instance holds it.
#[derive(Debug)]
pub struct SessionQuery {
    pub id: String,
    pub reply: tokio::sync::oneshot::Sender<Option<serde_json::Value>>,
}

/// What the service publishes while it runs, and the queries it answers.
#[derive(Debug, Default)]
pub struct Observers {
    pub assignment: tokio::sync::watch::Sender<Assignment>,
    pub readiness: tokio::sync::watch::Sender<Readiness>,
    pub queries: Option<tokio::sync::mpsc::Receiver<SessionQuery>>,
    /// Beaten by the service loop at every turn (`/healthz`).
    pub heartbeat: Arc<Heartbeat>,
}

/// Now, in epoch milliseconds (the processing clock of the service).
pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the service until `shutdown` completes, then drains and commits (within
/// `shutdown.grace`). Needs tokio's multi-threaded runtime: the calling worker is handed
/// over to blocking work (`block_in_place`) while the loop runs on its own thread.
pub async fn run(
    config: &Config,
    pipeline: &impl Processor,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, RuntimeError> {
    run_with(config, pipeline, shutdown, Observers::default()).await
}

/// [`run`], publishing the partitions it owns to `assignment` on every rebalance.
pub async fn run_observed<P: Processor>(
    config: &Config,
    pipeline: &P,
    shutdown: impl Future<Output = ()>,
    assignment: tokio::sync::watch::Sender<Assignment>,
) -> Result<RunSummary, RuntimeError> {
    run_with(config, pipeline, shutdown, Observers { assignment, ..Observers::default() }).await
}

/// [`run`], publishing to `observers` and answering their queries.
pub async fn run_with<P: Processor>(
    config: &Config,
    pipeline: &P,
    shutdown: impl Future<Output = ()>,
    observers: Observers,
) -> Result<RunSummary, RuntimeError> {
    let runtime = tokio::runtime::Handle::current();
    let stop = AtomicBool::new(false);
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let (done, finished) = tokio::sync::oneshot::channel::<()>();
            let (stop, handle) = (&stop, runtime.clone());
            let service = std::thread::Builder::new()
                .name("acs-stream-service".to_owned())
                .spawn_scoped(scope, move || {
                    let result = service::run(config, pipeline, observers, stop, handle);
                    let _ = done.send(());
                    result
                })
                // As `std::thread::spawn`: out of threads, the process is in no state to go on.
                .expect("cannot start the service thread");
            runtime.block_on(async {
                tokio::select! {
                    () = shutdown => {}
                    // The loop stopped by itself (an error): nothing to wait for.
                    _ = finished => {}
                }
            });
            stop.store(true, Ordering::Relaxed);
            service.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}
