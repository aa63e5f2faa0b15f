//! The Kafka service: consume → pure core → produce, at-least-once.
//!
//! One task consumes, runs the core and sends outputs to one shared idempotent producer.
//! Every output carries a [`Ticket`] of its input record; the producer's delivery callback
//! (on librdkafka's own thread) hands the outcome back through a channel. An input offset
//! is committed only when the [`OffsetTracker`] says every output of it and of every
//! earlier record of its partition is acknowledged: on a timer, on revoke (only the revoked
//! partitions are drained) and on shutdown. A record whose output the broker refuses for
//! good (too large, invalid topic, not authorized) goes to the dead-letter topic with code
//! `produce_failed`; a dead letter refused as too large is sent again without the original
//! value (header `acs.value.omitted`: the record is still in the input at its source offset);
//! a dead letter refused otherwise stops its partition (never committed past, processed
//! again after a restart). Retriable errors are retried by librdkafka without end
//! (backpressure, never loss). The consumer pauses while `kafka.max_in_flight` records or
//! `kafka.max_in_flight_bytes` bytes are unacknowledged, and its prefetch queue is bounded
//! (`kafka.max_prefetch_kbytes`).
//!
//! Partition state (the sessions) is durable when the processor names a changelog topic.
//! Its changes are coalesced and flushed on the commit timer, on revoke (before the drain)
//! and at shutdown: the latest state of each entry changed since the previous flush goes to
//! the changelog partition of the input partition's number. Each processed record is held
//! in the tracker ([`OffsetTracker::begin_held`]) until the flush covering it is
//! acknowledged, so no offset is committed past a state change that is not durable; after a
//! crash, the records processed again are recognised by the state restored (each entry
//! remembers the last offset it applied). A newly assigned partition stays paused while its state
//! is read back from the changelog on a blocking thread; records fetched before the pause
//! took hold are not processed, and the partition resumes where the group committed.
//!
//! Input not keyed by session is re-keyed first ([`super::repartition`]): records of the
//! input topics are only produced to the repartition topic keyed by their session (one
//! output each, same offset discipline), and the records of the repartition topic, consumed
//! in the same group, are the ones processed, with state and changelog.
//!
//! Alerts are more outputs of the record that fired them. An event matching a tenant-scoped
//! rule is also produced to the tenant topic, keyed by tenant, with its upstream position and
//! the rules it matched in headers; the tenant topic is consumed in the same group, and its
//! records are counted for their tenant (state and changelog as for sessions), their only
//! outputs the alerts they fire.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::client;
use super::offsets::{OffsetTracker, Ticket, TopicPartition};
use super::repartition;
use super::restore::{self, Rebuild, Rebuilt, RestoreFailure};
use crate::config::Config;
use crate::decode::{ErrorCode, Rejection};
use crate::encode::{DeadLetter, Headers as OutputHeaders, Output};
use crate::model::Source;
use crate::pipeline::{Alerted, Alerts, Outcome, PartitionState, Processor, Record};
use crate::telemetry::{self, DeliveryMeters, Meters, Published};
use rdkafka::config::ClientConfig;

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
    #[error("kafka.guarantee = \"{0}\" is not supported by this build")]
    Unsupported(&'static str),
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

/// The original record, kept until its outputs are acknowledged: a produce failure
/// dead-letters the ORIGINAL key and value.
#[derive(Debug)]
struct Input {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    source: Source,
}

/// What to do when the brokers refuse a produced record for good.
#[derive(Debug)]
enum Fallback {
    /// An event: dead-letter the original record with `produce_failed`.
    Event(Arc<Input>),
    /// A dead letter carrying the original value: refused as too large, it is sent again
    /// without the value (the headers still say where the record is in the input).
    DeadLetter { dead: Box<DeadLetter>, key: Option<Box<[u8]>> },
    /// Nothing left to try: the record is lost, its partition stopped.
    Nothing,
}

/// Travels with each produced record (the delivery opaque).
#[derive(Debug)]
struct Pending {
    ticket: Ticket,
    /// The input record's partition (stopped if the output is lost for good).
    tp: TopicPartition,
    /// Bytes held for this record (input copy and output), released with its report.
    bytes: usize,
    fallback: Fallback,
    /// What it is (the metrics' kind).
    kind: Published,
    /// When its input record was consumed: set on the record's own output (event, dead
    /// letter, re-keyed record), not on its changelog records.
    consumed_at: Option<Instant>,
}

/// A delivery report, moved from librdkafka's thread to the runtime.
#[derive(Debug)]
struct Delivery {
    pending: Box<Pending>,
    error: Option<KafkaError>,
}

/// Delivery callbacks: forward to the runtime, wake it.
struct ProducerCtx {
    deliveries: Sender<Delivery>,
    wake: Arc<tokio::sync::Notify>,
}

impl ClientContext for ProducerCtx {
    /// A client-level error (a broker unreachable, a request timed out): librdkafka retries
    /// the records concerned without end, so it is counted as retriable.
    fn error(&self, error: KafkaError, reason: &str) {
        metrics::counter!(telemetry::PRODUCE_ERRORS, "retriable" => "true").increment(1);
        warn!(%error, reason, "Producer error; retrying.");
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let error = result.as_ref().err().map(|(error, _)| error.clone());
        // The receiver lives as long as the runtime; a send can only fail during teardown,
        // when nothing is committed any more.
        let _ = self.deliveries.send(Delivery { pending, error });
        self.wake.notify_one();
    }
}

type SharedProducer = ThreadedProducer<ProducerCtx>;

/// State shared by the consuming task and the rebalance callback.
struct Shared {
    state: Mutex<State>,
    deliveries: Mutex<Receiver<Delivery>>,
    producer: OnceLock<SharedProducer>,
    dead_letter_topic: String,
    /// The changelog topic of the partition state, if durable.
    changelog_topic: Option<String>,
    /// The topic input is re-keyed through, if it is: only its partitions have state.
    repartition_topic: Option<String>,
    /// The internal topic tenant-scoped rules are counted from, if any.
    tenant_topic: Option<String>,
    /// Wakes the consuming loop (deliveries, assignments to restore).
    wake: Arc<tokio::sync::Notify>,
    /// Set when the service stops: a restore still retrying gives up.
    stopping: std::sync::atomic::AtomicBool,
    /// How long a revoke may wait for the revoked partitions' outputs (at most
    /// `REVOKE_DRAIN_MAX`: the whole group waits for this member meanwhile).
    revoke_timeout: Duration,
    /// Records published, processing latency.
    meters: DeliveryMeters,
    /// An assigned partition lagging without progress for this long is stuck.
    stuck_after: Duration,
    /// How long sending an output may wait for room in the producer's queue.
    grace: Duration,
    /// Writes the state changes of the given partitions to the changelog (the revoke
    /// callback's way to the partition states the consuming loop keeps).
    flusher: OnceLock<Flusher>,
}

/// See [`Shared::flusher`].
type Flusher = Box<dyn Fn(&Shared, &mut State, &[TopicPartition]) + Send + Sync>;

/// The processor's state of each partition (its sessions), made on the partition's first
/// record, dropped when it is revoked. Locked after [`Shared::state`], never before.
type States<S> = Mutex<HashMap<TopicPartition, S>>;

fn lock_states<S>(states: &States<S>) -> MutexGuard<'_, HashMap<TopicPartition, S>> {
    states.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes the state changes of the assigned partitions in `only` (every one when `None`) to
/// the changelog: the latest state of each entry changed since the previous flush, and
/// tombstones of the entries expired meanwhile (expiry runs here, changelog or not), as one
/// flush of the tracker: the records processed since the previous flush are committed only
/// once it is acknowledged. Coalescing the changes (as Kafka Streams' store caches do until
/// a commit) writes a busy session once per flush instead of once per event.
fn flush_states<S: PartitionState>(
    shared: &Shared,
    state: &mut State,
    states: &mut HashMap<TopicPartition, S>,
    only: Option<&[TopicPartition]>,
) {
    let now = now_ms();
    let deadline = Instant::now() + shared.grace;
    for (tp, partition_state) in states.iter_mut() {
        // Only a partition processed now: not one revoked and not forgotten yet (nor assigned
        // again and restoring: its state here is the old assignment's).
        let current = state.assigned.contains(tp) && !state.restoring.contains_key(tp) && !state.revoked.contains(tp);
        if !current || only.is_some_and(|only| !only.contains(tp)) {
            continue;
        }
        let changes = partition_state.changes(&tp.topic, tp.partition, now);
        let Some(changelog) = shared.changelog_topic.as_deref() else { continue };
        let Some(ticket) = state.tracker.flush(tp, changes.len()) else { continue };
        state.summary.changelog_records += changes.len() as u64;
        state.summary.flushes += 1;
        for (key, value) in &changes {
            let bytes = key.len() + value.as_ref().map_or(0, Vec::len);
            let change = Raw {
                topic: changelog,
                key: Some(key.as_bytes()),
                value: value.as_deref(),
                headers: None,
                partition: Some(tp.partition),
            };
            // Never rerouted: a lost state change stops the partition (not committed past,
            // processed again after a restart); a lost tombstone stops nothing (the expired
            // entry, if restored, expires again).
            let pending = Box::new(Pending {
                ticket,
                tp: tp.clone(),
                bytes,
                fallback: Fallback::Nothing,
                kind: Published::Changelog,
                consumed_at: None,
            });
            shared.dispatch_raw(state, change, pending, deadline);
        }
    }
}

/// Longest wait of a revoke for the revoked partitions' outputs.
const REVOKE_DRAIN_MAX: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    tracker: OffsetTracker,
    summary: RunSummary,
    /// Partitions assigned to this member: records of any other partition (a stale fetch
    /// after a revoke) are not processed, so no position can be committed for them.
    assigned: HashSet<TopicPartition>,
    /// Bytes held for the records in flight (see `Pending::bytes`).
    in_flight_bytes: usize,
    /// Partitions stopped by an output lost for good: paused, never committed past; the
    /// records are processed again after a restart.
    poisoned: HashSet<TopicPartition>,
    /// Set once the shutdown drain is over: the revoke of the closing consumer only commits.
    closing: bool,
    /// Partitions revoked since the consuming loop last looked: their processor state is
    /// dropped (another member may process them meanwhile).
    revoked: Vec<TopicPartition>,
    /// Assigned partitions whose state is not restored yet (paused meanwhile), with the
    /// number of their assignment: a restore finished for an earlier assignment is dropped.
    restoring: HashMap<TopicPartition, u64>,
    /// Assignments made so far (numbers the entries of `restoring`).
    assignments: u64,
    /// What the consumer's statistics say: brokers reachable, partitions progressing.
    health: Health,
    /// Positions of revoked partitions whose commit failed (a broker may refuse commits
    /// while the group rebalances), kept for the partitions assigned back to this member in
    /// that rebalance: they resume there and commit it, instead of processing again from the
    /// older committed offset.
    unsaved: HashMap<TopicPartition, i64>,
}

/// The service's health, from the consumer's statistics.
#[derive(Default)]
struct Health {
    /// No broker was reachable at the last statistics.
    brokers_down: bool,
    /// Per assigned partition: the position last seen, and since when it has not moved.
    progress: HashMap<TopicPartition, (i64, Instant)>,
    /// Assigned partitions with a lag and no progress for `stuck_after`.
    stuck: BTreeSet<TopicPartition>,
}

impl Health {
    /// Records the position of `tp` seen at `now`; how long it has not moved.
    fn observe(&mut self, tp: &TopicPartition, position: i64, now: Instant) -> Duration {
        let since = match self.progress.get(tp) {
            Some(&(seen, since)) if seen == position => since,
            _ => now,
        };
        self.progress.insert(tp.clone(), (position, since));
        now.duration_since(since)
    }
}

impl State {
    /// Assigned partitions that may be fetched: not stopped, state restored.
    fn runnable(&self) -> HashSet<TopicPartition> {
        self.assigned
            .iter()
            .filter(|tp| !self.poisoned.contains(*tp) && !self.restoring.contains_key(*tp))
            .cloned()
            .collect()
    }

    /// Records in flight on partitions that can still complete.
    fn live_in_flight(&self) -> usize {
        let stuck: usize = self.poisoned.iter().map(|tp| self.tracker.in_flight_partition(tp)).sum();
        self.tracker.in_flight().saturating_sub(stuck)
    }

    /// The current position of every assigned partition (committing an unchanged one again
    /// is harmless, and retries a commit that failed).
    fn positions(&self) -> Vec<(TopicPartition, i64)> {
        self.assigned
            .iter()
            .filter_map(|tp| Some((tp.clone(), self.tracker.position(tp).or_else(|| self.unsaved.get(tp).copied())?)))
            .collect()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would already have stopped the service.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn producer(&self) -> &SharedProducer {
        self.producer.get().expect("the producer is set before consuming starts")
    }

    /// Applies every delivery report received so far.
    fn settle_ready(&self, state: &mut State) {
        let reports: Vec<Delivery> = {
            let receiver = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
            receiver.try_iter().collect()
        };
        for delivery in reports {
            self.settle(state, delivery);
        }
    }

    /// Waits up to `timeout` for one delivery report and applies it.
    fn settle_one(&self, state: &mut State, timeout: Duration) -> bool {
        let report = {
            let receiver = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
            receiver.recv_timeout(timeout)
        };
        match report {
            Ok(delivery) => {
                self.settle(state, delivery);
                true
            }
            Err(_) => false,
        }
    }

    fn settle(&self, state: &mut State, delivery: Delivery) {
        let Delivery { pending, error } = delivery;
        state.in_flight_bytes = state.in_flight_bytes.saturating_sub(pending.bytes);
        match error {
            None => {
                self.meters.published(pending.kind, pending.consumed_at);
                state.tracker.ack(pending.ticket);
            }
            Some(error) => self.refused(state, *pending, error),
        }
    }

    /// Sends one output of an input record; a refusal before it leaves is handled like a
    /// refused delivery.
    fn dispatch(&self, state: &mut State, output: &Output<'_>, pending: Box<Pending>, deadline: Instant) {
        let raw = Raw {
            topic: &output.topic,
            key: output.key.as_deref(),
            value: Some(&output.value),
            headers: (!output.headers.is_empty()).then(|| headers(&output.headers)),
            partition: None,
        };
        self.dispatch_raw(state, raw, pending, deadline);
    }

    /// [`Shared::dispatch`], with these Kafka headers instead of the output's own when given
    /// (the lineage headers of a re-keyed record).
    fn dispatch_with(
        &self,
        state: &mut State,
        output: &Output<'_>,
        headers: Option<OwnedHeaders>,
        pending: Box<Pending>,
        deadline: Instant,
    ) {
        match headers {
            Some(headers) => {
                let raw = Raw {
                    topic: &output.topic,
                    key: output.key.as_deref(),
                    value: Some(&output.value),
                    headers: Some(headers),
                    partition: None,
                };
                self.dispatch_raw(state, raw, pending, deadline);
            }
            None => self.dispatch(state, output, pending, deadline),
        }
    }

    fn dispatch_raw(&self, state: &mut State, raw: Raw<'_>, pending: Box<Pending>, deadline: Instant) {
        let bytes = pending.bytes;
        match send(self.producer(), raw, pending, deadline) {
            Ok(()) => state.in_flight_bytes += bytes,
            // The local queue stayed full until the deadline: not a refusal, but the record
            // must never be skipped: stop its partition.
            Err((error @ KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), pending)) => {
                self.lose(state, pending.ticket, &pending.tp, &error);
            }
            Err((error, pending)) => self.refused(state, *pending, error),
        }
    }

    /// The brokers (or the client) refused an output for good: fall back, or stop.
    fn refused(&self, state: &mut State, pending: Pending, error: KafkaError) {
        let Pending { ticket, tp, bytes, fallback, consumed_at, .. } = pending;
        let deadline = Instant::now() + self.revoke_timeout;
        metrics::counter!(telemetry::PRODUCE_ERRORS, "retriable" => "false").increment(1);
        match fallback {
            Fallback::Event(input) => {
                warn!(topic = %input.source.topic, partition = input.source.partition, offset = input.source.offset,
                      %error, "Output refused; dead-lettering the record.");
                state.summary.produce_failed += 1;
                Meters::dead_letter(ErrorCode::ProduceFailed);
                let dead = DeadLetter {
                    rejection: Rejection::new(ErrorCode::ProduceFailed, error.to_string()),
                    source: input.source.clone(),
                    processed_at: now_ms(),
                };
                let record = dead.to_record(&self.dead_letter_topic, input.key.as_deref(), &input.value);
                let key = input.key.as_deref().map(Box::from);
                let fallback = Fallback::DeadLetter { dead: Box::new(dead), key };
                let pending = Pending { ticket, tp, bytes, fallback, kind: Published::DeadLetter, consumed_at };
                self.dispatch(state, &record, Box::new(pending), deadline);
            }
            Fallback::DeadLetter { dead, key } if is_size_error(&error) => {
                warn!(topic = %dead.source.topic, partition = dead.source.partition, offset = dead.source.offset,
                      code = dead.rejection.code.as_str(), %error,
                      "Dead letter refused; sending it without the original value.");
                let record = dead.to_record_without_value(&self.dead_letter_topic, key.as_deref(), &error.to_string());
                let kind = Published::DeadLetter;
                let pending = Box::new(Pending { ticket, tp, bytes, fallback: Fallback::Nothing, kind, consumed_at });
                self.dispatch(state, &record, pending, deadline);
            }
            Fallback::DeadLetter { .. } | Fallback::Nothing => self.lose(state, ticket, &tp, &error),
        }
    }

    fn lose(&self, state: &mut State, ticket: Ticket, tp: &TopicPartition, error: &KafkaError) {
        // An output of an earlier assignment of the partition (revoked since): nothing of the
        // current one is concerned, and the record is processed again by whoever owns it.
        if !state.tracker.fail(ticket) {
            warn!(topic = %tp.topic, partition = tp.partition, %error,
                  "Output of an earlier assignment, or a tombstone, lost; nothing to stop (a record of an earlier assignment is processed again from the committed offset, an expired entry expires again).");
            return;
        }
        error!(topic = %tp.topic, partition = tp.partition, %error, dead_letter_topic = %self.dead_letter_topic,
               "Output lost; the partition is paused and not committed past it until restart.");
        state.poisoned.insert(tp.clone());
    }

    /// Whether the partitions of `topic` have a durable state, restored on assignment: with a
    /// changelog, those processed (not the input topics' when input is re-keyed).
    fn durable(&self, topic: &str) -> bool {
        self.changelog_topic.is_some()
            && (self.repartition_topic.as_deref().is_none_or(|r| r == topic)
                || self.tenant_topic.as_deref() == Some(topic))
    }

    /// Commits the position of every assigned partition.
    fn commit(&self, state: &mut State, consumer: &impl Consumer<ConsumerCtx>, mode: CommitMode) {
        // Positions come from `positions()` (every assigned partition, so a failed commit is
        // retried); draining only empties the tracker's list of partitions that advanced.
        let _ = state.tracker.drain_committable();
        let positions = state.positions();
        if commit_positions(consumer, positions, mode) && matches!(mode, CommitMode::Sync) {
            state.unsaved.clear();
        }
    }
}

/// Commits `positions`; false when the commit failed (an asynchronous one can only fail
/// to be sent here).
fn commit_positions<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    positions: Vec<(TopicPartition, i64)>,
    mode: CommitMode,
) -> bool {
    if positions.is_empty() {
        return true;
    }
    let mut list = TopicPartitionList::new();
    for (tp, offset) in &positions {
        if let Err(error) = list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset)) {
            warn!(topic = %tp.topic, partition = tp.partition, %error, "Cannot list offset to commit.");
        }
    }
    match consumer.commit(&list, mode) {
        Ok(()) => {
            // The outcome of an asynchronous commit is reported to no one (rust-rdkafka's
            // event API leaves librdkafka without a commit callback for manual commits): it
            // is counted as sent; a failed one is retried by the next commit.
            let result = if matches!(mode, CommitMode::Sync) { "committed" } else { "sent" };
            metrics::counter!(telemetry::COMMITS, "result" => result).increment(1);
            debug!(partitions = positions.len(), result, "Committed offsets.");
            true
        }
        Err(error) => {
            metrics::counter!(telemetry::COMMITS, "result" => "failed").increment(1);
            warn!(partitions = positions.len(), %error, "Offset commit failed; retried at the next commit.");
            false
        }
    }
}

/// Rebalance callbacks: drain and commit revoked partitions, start assigned ones afresh.
struct ConsumerCtx {
    shared: Arc<Shared>,
    assignment: tokio::sync::watch::Sender<Assignment>,
    readiness: tokio::sync::watch::Sender<Readiness>,
}

impl ConsumerCtx {
    fn publish(&self, state: &State) {
        self.assignment.send_replace(state.assigned.iter().cloned().collect());
        self.publish_readiness(state);
    }

    fn publish_readiness(&self, state: &State) {
        let readiness = Readiness {
            joined: true,
            assigned: state.assigned.len(),
            restoring: state.restoring.len(),
            brokers_down: state.health.brokers_down,
            stuck: state.health.stuck.iter().cloned().collect(),
        };
        metrics::gauge!(telemetry::READY).set(if readiness.reasons().is_empty() { 1.0 } else { 0.0 });
        self.readiness.send_replace(readiness);
    }
}

/// The input partitions this processor owns now, published on every rebalance.
pub type Assignment = BTreeSet<TopicPartition>;

/// Whether the service can do its work, published on every change (for `/readyz`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The consumer has had its first assignment (possibly empty).
    pub joined: bool,
    /// Input partitions assigned.
    pub assigned: usize,
    /// Assigned partitions whose state is being restored (paused meanwhile).
    pub restoring: usize,
    /// No broker was reachable at the consumer's last statistics.
    pub brokers_down: bool,
    /// Assigned partitions with records left and no progress for `admin.stuck_after`.
    pub stuck: Vec<TopicPartition>,
}

impl Readiness {
    /// Why the service is not ready, if it is not.
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.joined {
            reasons.push("not in the consumer group yet".to_owned());
        }
        if self.restoring > 0 {
            reasons.push(format!("restoring the state of {} of {} partitions", self.restoring, self.assigned));
        }
        if self.brokers_down {
            reasons.push("no Kafka broker reachable".to_owned());
        }
        for tp in &self.stuck {
            reasons.push(format!("partition {tp} stuck: records left and no progress"));
        }
        reasons
    }
}

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
}

impl ClientContext for ConsumerCtx {
    /// Broker reachability, and lag and progress per assigned partition, from librdkafka's
    /// statistics (`statistics.interval.ms`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        let brokers_down = !statistics.brokers.values().any(|broker| broker.state == "UP");
        if brokers_down != state.health.brokers_down {
            if brokers_down {
                warn!(brokers = statistics.brokers.len(), "No broker reachable.");
            } else {
                info!("Brokers reachable again.");
            }
            state.health.brokers_down = brokers_down;
        }
        let assigned: Vec<TopicPartition> = state.assigned.iter().cloned().collect();
        state.health.progress.retain(|tp, _| assigned.contains(tp));
        let mut stuck = BTreeSet::new();
        for tp in assigned {
            let partition = statistics.topics.get(&*tp.topic).and_then(|topic| topic.partitions.get(&tp.partition));
            let Some(partition) = partition else { continue };
            let lag =
                super::offsets::consumer_lag(partition.hi_offset, partition.app_offset, partition.committed_offset);
            let Some(lag) = lag else { continue };
            metrics::gauge!(telemetry::CONSUMER_LAG, "topic" => tp.topic.to_string(), "partition" => tp.partition.to_string())
                .set(lag as f64);
            // Stuck: records not committed and the committed position not moving (a partition
            // stopped by a lost output is still fetched past, so its position moves on).
            let uncommitted =
                super::offsets::consumer_lag(partition.hi_offset, partition.committed_offset, partition.app_offset);
            let Some(uncommitted) = uncommitted else { continue };
            let position = partition.hi_offset - uncommitted;
            let restoring = state.restoring.contains_key(&tp);
            let stalled = state.health.observe(&tp, position, now);
            if uncommitted > 0 && stalled >= self.shared.stuck_after && !restoring {
                if !state.health.stuck.contains(&tp) {
                    warn!(topic = %tp.topic, partition = tp.partition, lag, uncommitted, committed = position,
                          stalled_s = stalled.as_secs(), "Partition stuck: records left and no progress.");
                }
                stuck.insert(tp);
            }
        }
        for tp in state.health.stuck.difference(&stuck) {
            info!(topic = %tp.topic, partition = tp.partition, "Partition no longer stuck.");
        }
        metrics::gauge!(telemetry::STUCK_PARTITIONS).set(stuck.len() as f64);
        state.health.stuck = stuck;
        self.publish_readiness(&state);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let list = match rebalance {
            Rebalance::Revoke(list) => *list,
            Rebalance::Assign(_) => return,
            Rebalance::Error(error) => {
                // rdkafka unassigns everything: forget every partition (nothing is committed
                // for them any more; their input is processed again by the next owner).
                warn!(%error, "Rebalance error; forgetting every partition.");
                let mut state = self.shared.lock();
                let all: Vec<TopicPartition> = state.assigned.drain().collect();
                let _ = state.tracker.revoke(&all);
                state.revoked.extend(all);
                state.poisoned.clear();
                state.restoring.clear();
                self.publish(&state);
                return;
            }
        };
        let revoked: Vec<TopicPartition> =
            list.elements().iter().map(|e| TopicPartition::new(e.topic(), e.partition())).collect();
        let mut state = self.shared.lock();
        let wait = if state.closing { Duration::ZERO } else { self.shared.revoke_timeout };
        let deadline = Instant::now() + wait;
        self.shared.settle_ready(&mut state);
        // Their state changes since the last flush, waited for with their outputs; not when
        // the partitions were lost (another member may own them already).
        if let Some(flush) = self.shared.flusher.get().filter(|_| !consumer.assignment_lost()) {
            flush(&self.shared, &mut state, &revoked);
        }
        while revoked.iter().any(|tp| !state.poisoned.contains(tp) && state.tracker.in_flight_partition(tp) > 0) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(partitions = revoked.len(), "Revoke drain timed out; committing what is acknowledged.");
                break;
            }
            self.shared.settle_one(&mut state, left.min(Duration::from_millis(100)));
        }
        let positions = state.tracker.revoke(&revoked);
        for tp in &revoked {
            state.assigned.remove(tp);
            state.poisoned.remove(tp);
            state.restoring.remove(tp);
        }
        state.revoked.extend(revoked.iter().cloned());
        for tp in &revoked {
            // No longer ours: its lag is the new owner's to report.
            metrics::gauge!(telemetry::CONSUMER_LAG, "topic" => tp.topic.to_string(), "partition" => tp.partition.to_string())
                .set(0.0);
        }
        info!(partitions = revoked.len(), committed = positions.len(), "Partitions revoked.");
        if !commit_positions(consumer, positions.clone(), CommitMode::Sync) {
            state.unsaved.extend(positions);
        }
        self.publish(&state);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let mut state = self.shared.lock();
            // Unsaved positions of partitions that went to another member are dropped: that
            // member starts from the committed offset (at-least-once).
            let assigned: HashSet<TopicPartition> =
                list.elements().iter().map(|e| TopicPartition::new(e.topic(), e.partition())).collect();
            state.unsaved.retain(|tp, _| assigned.contains(tp));
            let mut to_restore = TopicPartitionList::new();
            for element in list.elements() {
                let tp = TopicPartition::new(element.topic(), element.partition());
                state.tracker.reset_partition(&tp);
                if self.shared.durable(&tp.topic) {
                    state.assignments += 1;
                    let number = state.assignments;
                    state.restoring.insert(tp.clone(), number);
                    to_restore.add_partition(&tp.topic, tp.partition);
                }
                state.assigned.insert(tp);
            }
            // Nothing of a partition is processed before its state is back: paused until then.
            if to_restore.count() > 0 {
                match consumer.pause(&to_restore) {
                    Ok(()) => debug!(partitions = to_restore.count(), "Paused until restored."),
                    // Records fetched meanwhile are skipped and fetched again after the restore.
                    Err(error) => warn!(partitions = to_restore.count(), %error, "Cannot pause partitions to restore."),
                }
            }
            info!(partitions = list.count(), restoring = state.restoring.len(), "Partitions assigned.");
            self.publish(&state);
            // The loop starts their restore now, not at its next wake-up: with every partition
            // paused, `recv()` would not return before the next commit tick.
            if to_restore.count() > 0 {
                self.shared.wake.notify_one();
            }
        }
    }
}

/// Creates tenant topics on first sight (when enabled), and remembers them.
struct Topics {
    admin: Option<AdminClient<DefaultClientContext>>,
    known: HashSet<String>,
    partitions: i32,
    replication_factor: i32,
    configs: Vec<(String, String)>,
}

impl Topics {
    /// Creates the internal topics when absent: the repartition topic (if input is re-keyed)
    /// with as many partitions as the input topic with the most (at least
    /// `topics.partitions`), and the compacted changelog with as many as the partitions
    /// processed (the repartition topic's, or the input topics'): processed partition N
    /// writes to changelog partition N.
    async fn ensure_internal(
        &mut self,
        consumer: &StreamConsumer<ConsumerCtx>,
        input_topics: &[String],
        repartition: Option<&str>,
        tenant: Option<&str>,
        changelog: Option<&str>,
    ) {
        if self.admin.is_none() || (repartition.is_none() && tenant.is_none() && changelog.is_none()) {
            return;
        }
        let mut processed = self.partitions_of(consumer, input_topics).max(self.partitions).max(1);
        let inputs = processed;
        for topic in [repartition, tenant].into_iter().flatten() {
            self.create(topic, inputs, &[("cleanup.policy".to_owned(), "delete".to_owned())]).await;
            self.known.insert(topic.to_owned());
            // It may exist already, with more partitions.
            processed = processed.max(self.partitions_of(consumer, &[topic.to_owned()]));
        }
        if let Some(topic) = changelog {
            self.create(topic, processed, &[("cleanup.policy".to_owned(), "compact".to_owned())]).await;
            self.known.insert(topic.to_owned());
        }
    }

    /// The most partitions of a topic named (or matched, `^regex`) by `topics`; 0 when none
    /// is known or the metadata cannot be read.
    fn partitions_of(&self, consumer: &StreamConsumer<ConsumerCtx>, topics: &[String]) -> i32 {
        let metadata = tokio::task::block_in_place(|| consumer.fetch_metadata(None, Duration::from_secs(10)));
        match metadata {
            Ok(metadata) => {
                let patterns: Vec<regex::Regex> =
                    topics.iter().filter(|t| t.starts_with('^')).filter_map(|t| regex::Regex::new(t).ok()).collect();
                metadata
                    .topics()
                    .iter()
                    .filter(|t| topics.iter().any(|n| n == t.name()) || patterns.iter().any(|r| r.is_match(t.name())))
                    .map(|t| t.partitions().len() as i32)
                    .max()
                    .unwrap_or(0)
            }
            Err(error) => {
                warn!(%error, "Cannot read partition counts; sizing internal topics by topics.partitions.");
                0
            }
        }
    }

    async fn ensure(&mut self, topic: &str) {
        if self.admin.is_none() || self.known.contains(topic) {
            return;
        }
        self.create(topic, self.partitions, &self.configs).await;
        // Remembered either way: a topic that cannot be created is not asked for again on
        // every record (producing to it then fails into the dead-letter topic).
        self.known.insert(topic.to_owned());
    }

    async fn create(&self, topic: &str, partitions: i32, configs: &[(String, String)]) {
        let Some(admin) = &self.admin else { return };
        let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(self.replication_factor));
        for (key, value) in configs {
            new_topic = new_topic.set(key, value);
        }
        match admin.create_topics([&new_topic], &AdminOptions::new()).await {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => info!(topic, "Created topic."),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {}
                Some(Err((_, code))) => warn!(topic, error = %code, "Cannot create topic; producing anyway."),
                None => {}
            },
            Err(error) => warn!(topic, %error, "Cannot create topic; producing anyway."),
        }
    }
}

/// The changelog read of the partitions waiting for their state, running on a blocking
/// thread, each record applied as it arrives.
struct RestoreTask<S> {
    handle: tokio::task::JoinHandle<Result<Restored<S>, RestoreFailure>>,
    started: Instant,
}

/// Each partition's state restored, with the number of the assignment it was restored for.
type Restored<S> = Vec<(u64, Rebuilt<S>)>;

/// Starts reading the changelog for every partition waiting for its state, if any.
fn start_restore<P: Processor>(
    shared: &Arc<Shared>,
    client: &ClientConfig,
    processor: &P,
) -> Option<RestoreTask<P::State>> {
    let topic = shared.changelog_topic.as_ref()?;
    let waiting: HashMap<TopicPartition, u64> = shared.lock().restoring.clone();
    if waiting.is_empty() {
        return None;
    }
    let topic = topic.clone();
    let partitions: BTreeSet<i32> = waiting.keys().map(|tp| tp.partition).collect();
    info!(topic, partitions = partitions.len(), "Restoring partition state from the changelog.");
    let mut rebuild = Rebuild::new(processor.state(), waiting.keys().cloned());
    let (shared, client) = (shared.clone(), client.clone());
    let handle = tokio::task::spawn_blocking(move || {
        let give_up = || {
            // Nobody waits for it any more: every partition revoked (or assigned again,
            // which starts another restore), or the service stopping.
            let state = shared.lock();
            shared.stopping.load(std::sync::atomic::Ordering::Relaxed)
                || waiting.iter().all(|(tp, number)| state.restoring.get(tp) != Some(number))
        };
        restore::read(&client, &topic, &partitions, give_up, |read| rebuild.apply(read))?;
        // Every partition rebuilt is one of `waiting`'s.
        Ok(rebuild.into_partitions().into_iter().map(|rebuilt| (waiting[&rebuilt.tp], rebuilt)).collect())
    });
    Some(RestoreTask { handle, started: Instant::now() })
}

/// Where the group resumes `tp`: its committed offset, or where `auto.offset.reset` says
/// (earliest unless the consumer map says otherwise) when it has none.
fn committed_or_reset(
    consumer: &StreamConsumer<ConsumerCtx>,
    tp: &TopicPartition,
    config: &Config,
) -> Result<Offset, KafkaError> {
    let mut list = TopicPartitionList::new();
    list.add_partition(&tp.topic, tp.partition);
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    match committed.find_partition(&tp.topic, tp.partition).map(|e| e.offset()) {
        Some(Offset::Offset(offset)) => Ok(Offset::Offset(offset)),
        _ => Ok(match config.kafka.consumer.get("auto.offset.reset").map(String::as_str) {
            Some("latest" | "largest" | "end") => Offset::End,
            _ => Offset::Beginning,
        }),
    }
}

/// Drops the state of the partitions revoked since the last call.
fn forget_revoked<S>(state: &mut State, partition_states: &States<S>, rewind: &mut HashMap<TopicPartition, i64>) {
    if state.revoked.is_empty() {
        return;
    }
    let mut partition_states = lock_states(partition_states);
    for revoked in state.revoked.drain(..) {
        partition_states.remove(&revoked);
        rewind.remove(&revoked);
    }
}

/// Pauses or resumes `partitions`; false when the consumer refused (logged).
fn set_paused(consumer: &StreamConsumer<ConsumerCtx>, partitions: &HashSet<TopicPartition>, pause: bool) -> bool {
    if partitions.is_empty() {
        return pause;
    }
    let mut list = TopicPartitionList::new();
    for tp in partitions {
        list.add_partition(&tp.topic, tp.partition);
    }
    let result = if pause { consumer.pause(&list) } else { consumer.resume(&list) };
    match result {
        Ok(()) => {
            debug!(partitions = partitions.len(), pause, "Backpressure: partitions paused or resumed.");
            true
        }
        Err(error) => {
            warn!(partitions = partitions.len(), pause, %error, "Cannot pause or resume partitions.");
            false
        }
    }
}

fn headers(list: &OutputHeaders) -> OwnedHeaders {
    list.iter().fold(OwnedHeaders::new_with_capacity(list.len()), |headers, (name, value)| {
        headers.insert(Header { key: name, value: Some(value.as_bytes()) })
    })
}

/// Sends one output; a full local queue is waited out (backpressure) until `deadline`.
/// A record as the producer takes it: an output, or a changelog record (explicit partition;
/// no value for a tombstone).
struct Raw<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Option<OwnedHeaders>,
    partition: Option<i32>,
}

fn send(
    producer: &SharedProducer,
    raw: Raw<'_>,
    pending: Box<Pending>,
    deadline: Instant,
) -> Result<(), (KafkaError, Box<Pending>)> {
    let mut record = BaseRecord::with_opaque_to(raw.topic, pending);
    if let Some(value) = raw.value {
        record = record.payload(value);
    }
    if let Some(headers) = raw.headers {
        record = record.headers(headers);
    }
    if let Some(key) = raw.key {
        record = record.key(key);
    }
    if let Some(partition) = raw.partition {
        record = record.partition(partition);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if Instant::now() < deadline => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, back)) => return Err((error, back.delivery_opaque)),
        }
    }
}

/// Sends the outputs of a record besides its own (alerts, its tenant-topic record), each
/// falling back to dead-lettering `input` when refused; `input_bytes` is held with the first.
fn dispatch_extra(
    shared: &Shared,
    state: &mut State,
    extra: Vec<(Extra, Option<OwnedHeaders>, Published)>,
    tp: &TopicPartition,
    ticket: Ticket,
    (input, mut input_bytes): (&Arc<Input>, usize),
    deadline: Instant,
) {
    for (extra, headers, kind) in extra {
        let output = extra.output();
        // The input copy's bytes (when no output of the record's own holds them) go with the
        // first of these.
        let bytes =
            output.key.as_deref().map_or(0, <[u8]>::len) + output.value.len() + std::mem::take(&mut input_bytes);
        let fallback = Fallback::Event(input.clone());
        let pending = Box::new(Pending { ticket, tp: tp.clone(), bytes, fallback, kind, consumed_at: None });
        shared.dispatch_with(state, &output, headers, pending, deadline);
    }
}

/// The brokers refused a record for its size: a smaller one may still pass.
fn is_size_error(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
        )
    )
}

/// An output of a record besides its own: an alert (shared with the state that keeps it for
/// a replay), or one of its own making (its tenant-topic record).
// A few per record, consumed at once: boxing the owned one would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Extra {
    Alert(Alerted),
    Owned(Output<'static>),
}

impl Extra {
    fn output(&self) -> Output<'_> {
        match self {
            Extra::Alert(alerted) => alerted.output(),
            Extra::Owned(output) => output.borrowed(),
        }
    }
}

/// What the core made of one consumed record.
// One per record, consumed at once (as `Outcome`).
#[allow(clippy::large_enum_variant)]
enum Step<'a, 't> {
    /// An enriched event, the alerts it fired, and the tenant-scoped rules it matched.
    Event { output: Output<'a>, alerts: Alerts, forward: crate::rules::Forwarded, tenant: Option<String> },
    /// A record of the tenant topic, counted for its tenant: the alerts it fired.
    Tenant(Alerts),
    /// Input to re-key: produced to the repartition topic `topic` with key `key`.
    Rekeyed { topic: &'t str, key: Vec<u8> },
    /// A refused record.
    Dead(DeadLetter),
}

/// The shared name of a topic (one allocation per topic, not per record).
fn intern(topics: &mut HashMap<String, Arc<str>>, name: &str) -> Arc<str> {
    match topics.get(name) {
        Some(topic) => topic.clone(),
        None => topics.entry(name.to_owned()).or_insert_with(|| Arc::from(name)).clone(),
    }
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the service until `shutdown` completes, then drains and commits (within
/// `shutdown.grace`). Needs tokio's multi-threaded runtime: the final drain blocks a
/// worker thread while it waits for delivery reports.
pub async fn run(
    config: &Config,
    pipeline: &impl Processor,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, RuntimeError> {
    run_observed(config, pipeline, shutdown, tokio::sync::watch::Sender::default()).await
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
    if config.kafka.guarantee != crate::config::Guarantee::AtLeastOnce {
        return Err(RuntimeError::Unsupported(config.kafka.guarantee.as_str()));
    }
    let Observers { assignment, readiness, mut queries } = observers;
    let (sender, receiver) = std::sync::mpsc::channel();
    let wake = Arc::new(tokio::sync::Notify::new());
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        deliveries: Mutex::new(receiver),
        producer: OnceLock::new(),
        dead_letter_topic: pipeline.dead_letter_topic().to_owned(),
        changelog_topic: pipeline.changelog_topic().map(str::to_owned),
        repartition_topic: pipeline.repartition_topic().map(str::to_owned),
        tenant_topic: pipeline.tenant_topic().map(str::to_owned),
        wake: wake.clone(),
        stopping: std::sync::atomic::AtomicBool::new(false),
        revoke_timeout: config.shutdown.grace.min(REVOKE_DRAIN_MAX),
        meters: DeliveryMeters::new(),
        stuck_after: config.admin.stuck_after,
        grace: config.shutdown.grace,
        flusher: OnceLock::new(),
    });
    let partition_states: Arc<States<P::State>> = Arc::default();
    let flusher_states = partition_states.clone();
    let flusher: Flusher = Box::new(move |shared, state, partitions| {
        flush_states(shared, state, &mut lock_states(&flusher_states), Some(partitions));
    });
    let _ = shared.flusher.set(flusher);
    let producer: SharedProducer = client::producer(config)
        .create_with_context(ProducerCtx { deliveries: sender, wake: wake.clone() })
        .map_err(|source| RuntimeError::Client { client: "producer", source })?;
    let _ = shared.producer.set(producer);
    let consumer: StreamConsumer<ConsumerCtx> = client::consumer(config)
        .create_with_context(ConsumerCtx { shared: shared.clone(), assignment, readiness })
        .map_err(|source| RuntimeError::Client { client: "consumer", source })?;
    let admin = if config.topics.create {
        Some(client::admin(config).create().map_err(|source| RuntimeError::Client { client: "admin client", source })?)
    } else {
        None
    };
    let mut topics_cache = Topics {
        admin,
        known: HashSet::new(),
        partitions: config.topics.partitions,
        replication_factor: config.topics.replication_factor,
        configs: config.topics.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    topics_cache.ensure(pipeline.dead_letter_topic()).await;
    topics_cache
        .ensure_internal(
            &consumer,
            &config.kafka.input_topics,
            pipeline.repartition_topic(),
            pipeline.tenant_topic(),
            pipeline.changelog_topic(),
        )
        .await;
    // Subscribed once the internal topics exist: a topic missing at subscription is only
    // seen at the next metadata refresh (minutes).
    // Re-keyed input is consumed twice in the group: from the input topics (to re-key it)
    // and from the repartition topic (to process it).
    let mut topics: Vec<&str> = config.kafka.input_topics.iter().map(String::as_str).collect();
    topics.extend(pipeline.repartition_topic());
    // Events of tenant-scoped rules, re-keyed by tenant, counted where their tenant is.
    topics.extend(pipeline.tenant_topic());
    consumer
        .subscribe(&topics)
        .map_err(|source| RuntimeError::Subscribe { topics: topics.iter().map(|t| t.to_string()).collect(), source })?;
    info!(brokers = %config.kafka.brokers, group = %config.kafka.group_id, topics = ?config.kafka.input_topics, "Consuming.");

    let mut source_topics: HashMap<String, Arc<str>> = HashMap::new();
    let mut meters = Meters::new(config.admin.tenant_label_limit);
    let mut commit_timer = tokio::time::interval(config.kafka.commit_interval);
    commit_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_in_flight = config.kafka.max_in_flight;
    let max_in_flight_bytes = config.kafka.max_in_flight_bytes;
    // Below this (and half the bytes), a consumer paused for backpressure resumes.
    let low_water = max_in_flight / 2;
    let mut paused_for_backpressure = false;
    let mut paused_poisoned: HashSet<TopicPartition> = HashSet::new();
    // The restore running now (one at a time: it covers every partition waiting when it
    // starts), and the first offset of each restoring partition fetched before its pause.
    let mut restore_task: Option<RestoreTask<P::State>> = None;
    let mut rewind: HashMap<TopicPartition, i64> = HashMap::new();
    let restore_client = client::restore_consumer(config);
    let changelog = pipeline.changelog_topic();
    let repartition = pipeline.repartition_topic();
    let tenant_topic = pipeline.tenant_topic();
    tokio::pin!(shutdown);
    loop {
        if restore_task.is_none() {
            restore_task = start_restore(&shared, &restore_client, pipeline);
        }
        // Backpressure by pausing, not by ceasing to poll: rebalance callbacks run inside
        // `recv()`, so the consumer keeps polling while its partitions are paused.
        {
            let state = shared.lock();
            let live = state.live_in_flight();
            let bytes = state.in_flight_bytes;
            if !paused_for_backpressure && (live >= max_in_flight || bytes >= max_in_flight_bytes) {
                paused_for_backpressure = set_paused(&consumer, &state.assigned, true);
            } else if paused_for_backpressure && live <= low_water && bytes <= max_in_flight_bytes / 2 {
                let runnable = state.runnable();
                paused_for_backpressure = !set_paused(&consumer, &runnable, false);
            }
            let newly_poisoned: HashSet<TopicPartition> =
                state.poisoned.difference(&paused_poisoned).cloned().collect();
            if !newly_poisoned.is_empty() && set_paused(&consumer, &newly_poisoned, true) {
                paused_poisoned.extend(newly_poisoned);
            }
            paused_poisoned.retain(|tp| state.poisoned.contains(tp));
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = wake.notified() => {
                let mut state = shared.lock();
                shared.settle_ready(&mut state);
                drop(state);
                if let Some((_, reason)) = shared.producer().client().fatal_error() {
                    return Err(RuntimeError::Fatal { client: "producer", reason });
                }
            }
            _ = commit_timer.tick() => {
                let mut state = shared.lock();
                shared.settle_ready(&mut state);
                forget_revoked(&mut state, &partition_states, &mut rewind);
                // The states are never locked across a consumer call (whose rebalance
                // callback may flush them).
                let sessions = {
                    let mut partition_states = lock_states(&partition_states);
                    // What was kept for a replay below the committed positions goes first:
                    // the flush does not write it.
                    for (tp, position) in state.positions() {
                        if let Some(partition_state) = partition_states.get_mut(&tp) {
                            partition_state.committed(position);
                        }
                    }
                    // Off the async workers: a large flush may wait for room in the
                    // producer's queue.
                    tokio::task::block_in_place(|| flush_states(&shared, &mut state, &mut partition_states, None));
                    partition_states.values().map(PartitionState::entries).sum::<usize>()
                };
                // Commits what earlier flushes made durable; this one's records are committed
                // at the next tick (or on revoke or shutdown, which wait for it).
                shared.commit(&mut state, &consumer, CommitMode::Async);
                metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(state.assigned.len() as f64);
                metrics::gauge!(telemetry::IN_FLIGHT).set(state.live_in_flight() as f64);
                metrics::gauge!(telemetry::ACTIVE_SESSIONS).set(sessions as f64);
            }
            query = async { queries.as_mut().expect("guarded").recv().await }, if queries.is_some() => {
                let Some(query) = query else {
                    queries = None;
                    continue;
                };
                let mut state = shared.lock();
                forget_revoked(&mut state, &partition_states, &mut rewind);
                let partition_states = lock_states(&partition_states);
                drop(state);
                let found = partition_states.iter().find_map(|(tp, partition_state)| {
                    let session = partition_state.describe(&query.id)?;
                    Some(serde_json::json!({
                        "input": {"topic": &*tp.topic, "partition": tp.partition},
                        "session": session,
                    }))
                });
                let _ = query.reply.send(found);
            }
            restored = async { (&mut restore_task.as_mut().expect("guarded").handle).await }, if restore_task.is_some() => {
                let started = restore_task.take().expect("guarded").started;
                let restored = match restored {
                    Ok(Ok(restored)) => restored,
                    Ok(Err(RestoreFailure::Kafka { .. })) => {
                        // Given up: every partition of the batch was revoked meanwhile.
                        continue;
                    }
                    Ok(Err(failure)) => return Err(failure.into()),
                    Err(panic) => std::panic::resume_unwind(panic.into_panic()),
                };
                let mut state = shared.lock();
                forget_revoked(&mut state, &partition_states, &mut rewind);
                for (number, Rebuilt { tp, state: partition_state, records, errors }) in restored {
                    // Revoked, or assigned again since (a newer restore follows).
                    if state.restoring.get(&tp) != Some(&number) {
                        continue;
                    }
                    state.summary.restore_errors += errors;
                    state.summary.restored_records += records;
                    metrics::counter!(telemetry::RESTORED_RECORDS).increment(records);
                    state.summary.restored_entries += partition_state.entries() as u64;
                    info!(topic = %tp.topic, partition = tp.partition, records, skipped = errors, entries = partition_state.entries(), "Partition state restored.");
                    state.restoring.remove(&tp);
                    {
                        let mut partition_states = lock_states(&partition_states);
                        partition_states.insert(tp.clone(), partition_state);
                        // Entries that expired while nobody owned the partition go now (their
                        // tombstones with them), before any record is applied to one.
                        flush_states(&shared, &mut state, &mut partition_states, Some(std::slice::from_ref(&tp)));
                    }
                    if let Some(&position) = state.unsaved.get(&tp) {
                        // Assigned back after a revoke whose commit failed: where it was.
                        rewind.remove(&tp);
                        let seek = consumer.seek(&tp.topic, tp.partition, Offset::Offset(position), Duration::from_secs(10));
                        if let Err(error) = seek {
                            return Err(RuntimeError::Fatal { client: "consumer", reason: format!("cannot resume {tp} at {position} after its restore: {error}") });
                        }
                    } else if rewind.remove(&tp).is_some() {
                        // Records were taken (and skipped) while it restored: start again where
                        // the group committed. Not from the lowest offset skipped: a record
                        // left from an earlier assignment of the partition may be older.
                        let start = tokio::task::block_in_place(|| committed_or_reset(&consumer, &tp, config));
                        let seek = start.and_then(|offset| consumer.seek(&tp.topic, tp.partition, offset, Duration::from_secs(10)));
                        if let Err(error) = seek {
                            // Not processed from the right place: better stopped than skipping.
                            return Err(RuntimeError::Fatal { client: "consumer", reason: format!("cannot rewind {tp} after its restore: {error}") });
                        }
                    }
                    if !paused_for_backpressure && !state.poisoned.contains(&tp) {
                        set_paused(&consumer, &HashSet::from([tp]), false);
                    }
                }
                metrics::histogram!(telemetry::RESTORE_SECONDS).record(started.elapsed().as_secs_f64());
                consumer.context().publish_readiness(&state);
            }
            message = consumer.recv() => {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        if let Some((_, reason)) = consumer.client().fatal_error() {
                            return Err(RuntimeError::Fatal { client: "consumer", reason });
                        }
                        warn!(%error, "Consumer error.");
                        continue;
                    }
                };
                let topic = intern(&mut source_topics, message.topic());
                let tp = TopicPartition { topic: topic.clone(), partition: message.partition() };
                {
                    let mut state = shared.lock();
                    forget_revoked(&mut state, &partition_states, &mut rewind);
                    // A stale fetch of a partition no longer ours, or a stopped partition:
                    // not processed, so nothing can be committed for it here.
                    if !state.assigned.contains(&tp) || state.poisoned.contains(&tp) {
                        debug!(topic = %tp.topic, partition = tp.partition, offset = message.offset(), "Skipped a record of a partition not processed now.");
                        continue;
                    }
                    // Fetched before the pause of a partition being restored took hold (or left
                    // from an earlier assignment): fetched again once the state is back.
                    if state.restoring.contains_key(&tp) {
                        rewind.insert(tp, message.offset());
                        continue;
                    }
                }
                let consumed_at = Instant::now();
                meters.consumed(&topic);
                let offset = message.offset();
                let source = Source { topic, partition: message.partition(), offset };
                let mut record = Record::new(message.key(), message.payload().unwrap_or_default(), source);
                // Input re-keyed through the repartition topic: from an input topic, only
                // re-keyed; from the repartition topic, processed as the upstream record it
                // carries (lineage and key), at its position in the repartition partition.
                let rekey_into = repartition.filter(|topic| *tp.topic != **topic && tenant_topic != Some(&*tp.topic));
                let from_tenant_topic = tenant_topic == Some(&*tp.topic);
                if (repartition.is_some() && rekey_into.is_none()) || from_tenant_topic {
                    if let Some(upstream) = repartition::upstream(message.headers()) {
                        record.key = upstream.key;
                        record.source = upstream.source(|name| intern(&mut source_topics, name));
                    }
                }
                let now = now_ms();
                let mut hold = false;
                let step = match rekey_into {
                    Some(topic) => match pipeline.rekey(&record, now) {
                        Ok(key) => Step::Rekeyed { topic, key },
                        Err(dead) => Step::Dead(dead),
                    },
                    None => {
                        let mut partition_states = lock_states(&partition_states);
                        let partition_state = partition_states.entry(tp.clone()).or_insert_with(|| pipeline.state());
                        let step = if from_tenant_topic {
                            let matched = repartition::matched_rules(message.headers());
                            match pipeline.process_tenant(&record, &matched, partition_state, now) {
                                Ok(alerts) => Step::Tenant(alerts),
                                Err(dead) => Step::Dead(dead),
                            }
                        } else {
                            match pipeline.process(&record, partition_state, now) {
                                Outcome::Event { output, alerts, forward, facts } => {
                                    meters.event(&facts, now);
                                    // The tenant-topic record's key, when there is one.
                                    let tenant = (!forward.is_empty()).then(|| facts.tenant.into_owned());
                                    Step::Event { output, alerts, forward, tenant }
                                }
                                Outcome::DeadLetter(dead) => Step::Dead(dead),
                            }
                        };
                        // Its state change is written with the next flush.
                        hold = changelog.is_some();
                        step
                    }
                };
                let input = || {
                    let key = record.key.map(<[u8]>::to_vec);
                    Arc::new(Input { key, value: record.value.to_vec(), source: record.source.clone() })
                };
                // Outputs besides the record's own (alerts, the tenant-topic record): a refused
                // one dead-letters the input record, as a refused event does.
                let mut extra: Vec<(Extra, Option<OwnedHeaders>, Published)> = Vec::new();
                let (output, fallback, upstream_headers, kind) = match step {
                    Step::Event { output, alerts, forward, tenant } => {
                        topics_cache.ensure(&output.topic).await;
                        for alerted in alerts {
                            topics_cache.ensure(alerted.topic()).await;
                            Meters::alert(alerted.rule(), alerted.severity);
                            extra.push((Extra::Alert(alerted), None, Published::Alert));
                        }
                        if let (Some(topic), Some(tenant)) = (tenant_topic, tenant) {
                            let tenant = Output {
                                topic: Cow::Owned(topic.to_owned()),
                                key: Some(Cow::Owned(tenant.into_bytes())),
                                value: Cow::Owned(record.value.to_vec()),
                                headers: OutputHeaders::new(),
                            };
                            let headers = repartition::tenant_headers(&record.source, record.key, &forward);
                            extra.push((Extra::Owned(tenant), Some(headers), Published::Repartition));
                        }
                        (Some(output), Fallback::Event(input()), None, Published::Event)
                    }
                    Step::Tenant(alerts) => {
                        for alerted in alerts {
                            topics_cache.ensure(alerted.topic()).await;
                            Meters::alert(alerted.rule(), alerted.severity);
                            extra.push((Extra::Alert(alerted), None, Published::Alert));
                        }
                        (None, Fallback::Event(input()), None, Published::Alert)
                    }
                    Step::Rekeyed { topic, key } => {
                        let output = Output {
                            topic: Cow::Owned(topic.to_owned()),
                            key: Some(Cow::Owned(key)),
                            value: Cow::Borrowed(record.value),
                            headers: OutputHeaders::new(),
                        };
                        let headers = repartition::headers(&record.source, record.key);
                        (Some(output), Fallback::Event(input()), Some(headers), Published::Repartition)
                    }
                    Step::Dead(dead) => {
                        Meters::dead_letter(dead.rejection.code);
                        let output = dead.to_record(pipeline.dead_letter_topic(), record.key, record.value);
                        let fallback = Fallback::DeadLetter { dead: Box::new(dead), key: record.key.map(Box::from) };
                        (Some(output), fallback, None, Published::DeadLetter)
                    }
                };
                // Held until acknowledged: librdkafka's copy of the output, and the input
                // copy kept for a fallback.
                let held = |key: Option<&[u8]>, value: &[u8]| key.map_or(0, <[u8]>::len) + value.len();
                let bytes = output.as_ref().map_or(0, |output| held(output.key.as_deref(), &output.value))
                    + match &fallback {
                        Fallback::Event(input) => held(input.key.as_deref(), &input.value),
                        Fallback::DeadLetter { key, .. } => key.as_deref().map_or(0, <[u8]>::len),
                        Fallback::Nothing => 0,
                    };
                let mut state = shared.lock();
                // Input records (and their re-keyed copies); records of the tenant topic are
                // counted apart.
                state.summary.consumed += u64::from(!from_tenant_topic);
                match (&output, &fallback, &upstream_headers) {
                    _ if from_tenant_topic => state.summary.tenant_records += 1,
                    (_, Fallback::Event(_), Some(_)) => state.summary.repartitioned += 1,
                    (_, Fallback::Event(_), None) => state.summary.events += 1,
                    _ => state.summary.dead_letters += 1,
                }
                let published = |wanted: Published| extra.iter().filter(|(_, _, kind)| *kind == wanted).count() as u64;
                state.summary.alerts += published(Published::Alert);
                // Only an event's tenant-topic copy goes with it as a repartition record.
                state.summary.tenant_forwarded += published(Published::Repartition);
                let outputs = usize::from(output.is_some()) + extra.len();
                let ticket = if hold {
                    state.tracker.begin_held(&tp, offset, outputs)
                } else {
                    state.tracker.begin(&tp, offset, outputs)
                };
                let deadline = Instant::now() + config.shutdown.grace;
                let Some(output) = output else {
                    // A tenant-topic record: only its alerts (if any), each with the fallback.
                    let input = match fallback {
                        Fallback::Event(input) => input,
                        _ => unreachable!("a tenant-topic record falls back to its input"),
                    };
                    let input_bytes = input.key.as_deref().map_or(0, <[u8]>::len) + input.value.len();
                    dispatch_extra(&shared, &mut state, extra, &tp, ticket, (&input, input_bytes), deadline);
                    state.summary.peak_in_flight = state.summary.peak_in_flight.max(state.live_in_flight());
                    state.summary.peak_in_flight_bytes = state.summary.peak_in_flight_bytes.max(state.in_flight_bytes);
                    continue;
                };
                if let Fallback::Event(input) = &fallback {
                    dispatch_extra(&shared, &mut state, extra, &tp, ticket, (input, 0), deadline);
                }
                let pending = Box::new(Pending { ticket, tp, bytes, fallback, kind, consumed_at: Some(consumed_at) });
                shared.dispatch_with(&mut state, &output, upstream_headers, pending, deadline);
                state.summary.peak_in_flight = state.summary.peak_in_flight.max(state.live_in_flight());
                state.summary.peak_in_flight_bytes = state.summary.peak_in_flight_bytes.max(state.in_flight_bytes);
            }
        }
    }

    // Shutdown: stop fetching, write the state changes, drain what is in flight, commit.
    shared.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + config.shutdown.grace;
    let drained = tokio::task::block_in_place(|| {
        let mut state = shared.lock();
        forget_revoked(&mut state, &partition_states, &mut rewind);
        flush_states(&shared, &mut state, &mut lock_states(&partition_states), None);
        loop {
            shared.settle_ready(&mut state);
            if state.live_in_flight() == 0 {
                break state.poisoned.is_empty();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            shared.settle_one(&mut state, left.min(Duration::from_millis(100)));
        }
    });
    let mut state = shared.lock();
    shared.commit(&mut state, &consumer, CommitMode::Sync);
    // The consumer's close revokes its partitions: commit only, no second wait.
    state.closing = true;
    state.summary.drained = drained;
    let summary = state.summary.clone();
    drop(state);
    if drained {
        info!(consumed = summary.consumed, "Drained and committed; stopping.");
    } else {
        warn!(
            in_flight = shared.lock().tracker.in_flight(),
            "Grace period over; uncommitted input is processed again on restart."
        );
    }
    consumer.unsubscribe();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_stalls_while_its_position_does_not_move() {
        let mut health = Health::default();
        let tp = TopicPartition::new("acs.raw", 0);
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(health.observe(&tp, 10, at(0)), Duration::ZERO);
        assert_eq!(health.observe(&tp, 10, at(90)), Duration::from_secs(90), "no progress for 90 s");
        assert_eq!(health.observe(&tp, 11, at(100)), Duration::ZERO, "progress resets the clock");
        assert_eq!(health.observe(&tp, 11, at(130)), Duration::from_secs(30));
        let other = TopicPartition::new("acs.raw", 1);
        assert_eq!(health.observe(&other, 11, at(130)), Duration::ZERO, "partitions are apart");
    }

    #[test]
    fn readiness_names_every_reason() {
        let ready = Readiness { joined: true, assigned: 2, ..Readiness::default() };
        assert!(ready.reasons().is_empty());
        let stuck = vec![TopicPartition::new("acs.raw", 1)];
        let not = Readiness { restoring: 1, brokers_down: true, stuck, ..ready };
        assert_eq!(
            not.reasons(),
            [
                "restoring the state of 1 of 2 partitions",
                "no Kafka broker reachable",
                "partition acs.raw[1] stuck: records left and no progress"
            ]
        );
    }
}
