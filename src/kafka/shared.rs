//! The service's state, shared by its loop and its consumer callbacks (which librdkafka runs
//! inside the loop's `poll`, on the same thread: the lock is never contended, it only makes
//! the sharing sound): the partitions assigned and their processor state, the outbox, the
//! delivery guarantee, the run's counts.
//!
//! Partition state is durable when the processor names a changelog topic. Its changes are
//! coalesced and flushed on the commit timer, on revoke and at shutdown: the latest state of
//! each entry changed since the previous flush goes to the changelog partition of the input
//! partition's number. At least once, each processed record is held in the tracker
//! ([`OffsetTracker::begin_held`](super::offsets::OffsetTracker::begin_held)) until the flush
//! covering it is acknowledged; exactly once, the flush is in the transaction that commits
//! the records' positions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::delivery::{Delivery, DeliveryError, GroupConsumer};
use super::events;
use super::health::Health;
use super::offsets::TopicPartition;
use super::outbox::{
    Delivery as Report, Fallback, Outbox, Pending, PendingTicket, Raw, Refusal, is_collateral, is_refusal_of_the_record,
};
use super::plan::Refused;
use super::runtime::RunSummary;
use crate::pipeline::PartitionState;
use crate::telemetry::Published;

/// The internal topics the service writes or reads besides the outputs.
#[derive(Debug, Clone, Default)]
pub(super) struct Names {
    pub dead_letter: String,
    /// The changelog topic of the partition state, if durable.
    pub changelog: Option<String>,
    /// The topic input is re-keyed through, if it is: only its partitions have state.
    pub repartition: Option<String>,
    /// The internal topic tenant-scoped rules are counted from, if any.
    pub tenant: Option<String>,
}

pub(super) struct Shared<S> {
    /// The processor's state of each partition (its sessions), made on the partition's first
    /// record, dropped when it is revoked (or its transaction aborted).
    pub states: HashMap<TopicPartition, S>,
    /// Partitions assigned to this member: records of any other partition (a stale fetch after
    /// a revoke) are not processed, so no position can be committed for them.
    pub assigned: HashSet<TopicPartition>,
    /// Assigned partitions whose state is not restored yet (paused meanwhile), with the number
    /// of their assignment: a restore finished for an earlier assignment is dropped.
    pub restoring: HashMap<TopicPartition, u64>,
    /// Assignments made so far (numbers the entries of `restoring`).
    assignments: u64,
    /// Partitions stopped by an output lost for good: paused, never committed past; the
    /// records are processed again after a restart.
    pub poisoned: HashSet<TopicPartition>,
    /// Partitions to seek back to their committed offset once restored: records were fetched
    /// (and skipped) while they restored, or their transaction aborted.
    pub rewind: HashSet<TopicPartition>,
    /// Positions of revoked partitions whose commit failed (a broker may refuse commits while
    /// the group rebalances), kept for the partitions assigned back to this member in that
    /// rebalance: they resume there and commit it, instead of processing again from the older
    /// committed offset.
    pub unsaved: HashMap<TopicPartition, i64>,
    pub outbox: Outbox,
    pub delivery: Box<dyn Delivery>,
    pub summary: RunSummary,
    pub health: Health,
    /// Set once the shutdown drain is over: the revoke of the closing consumer only commits.
    pub closing: bool,
    /// Exactly once: outputs of input records (by partition and offset) the brokers refused
    /// for good, left out when the records are processed again.
    pub refusals: HashMap<(TopicPartition, i64), Refused>,
    /// Exactly once: why the open transaction must abort, if it must.
    pub must_abort: Option<String>,
    /// Exactly once: the producer was fenced (why); the loop replaces it, then aborts.
    pub must_reset: Option<String>,
    /// Exactly once, after an abort: where each partition's aborted work ended. Once every
    /// partition is processed again up to there, the loop commits at once, before new input
    /// joins the transaction (a refusal in new input would abort the work done again too).
    pub catch_up: HashMap<TopicPartition, i64>,
    /// Set when the service cannot go on (fenced); the loop stops with it.
    pub fatal: Option<String>,
    pub names: Names,
    /// How long a revoke may wait for the revoked partitions' outputs (at most
    /// `REVOKE_DRAIN_MAX`: the whole group waits for this member meanwhile).
    pub revoke_timeout: Duration,
}

/// Longest wait of a revoke for the revoked partitions' outputs.
pub(super) const REVOKE_DRAIN_MAX: Duration = Duration::from_secs(10);

impl<S: PartitionState> Shared<S> {
    pub fn new(outbox: Outbox, delivery: Box<dyn Delivery>, names: Names, revoke_timeout: Duration) -> Shared<S> {
        Shared {
            states: HashMap::new(),
            assigned: HashSet::new(),
            restoring: HashMap::new(),
            assignments: 0,
            poisoned: HashSet::new(),
            rewind: HashSet::new(),
            unsaved: HashMap::new(),
            outbox,
            delivery,
            summary: RunSummary::default(),
            health: Health::default(),
            closing: false,
            refusals: HashMap::new(),
            must_abort: None,
            must_reset: None,
            catch_up: HashMap::new(),
            fatal: None,
            names,
            revoke_timeout,
        }
    }

    /// Whether the partitions of `topic` have a durable state, restored on assignment: with a
    /// changelog, those processed (not the input topics' when input is re-keyed).
    pub fn durable(&self, topic: &str) -> bool {
        self.names.changelog.is_some()
            && (self.names.repartition.as_deref().is_none_or(|r| r == topic)
                || self.names.tenant.as_deref() == Some(topic))
    }

    /// Assigned partitions that may be fetched: not stopped, state restored.
    pub fn runnable(&self) -> HashSet<TopicPartition> {
        self.assigned
            .iter()
            .filter(|tp| !self.poisoned.contains(*tp) && !self.restoring.contains_key(*tp))
            .cloned()
            .collect()
    }

    /// Records in flight on partitions that can still complete.
    pub fn live_in_flight(&self) -> usize {
        let tracker = &self.outbox.tracker;
        let stuck: usize = self.poisoned.iter().map(|tp| tracker.in_flight_partition(tp)).sum();
        tracker.in_flight().saturating_sub(stuck)
    }

    /// The position of every assigned partition that may be committed now (committing an
    /// unchanged one again is harmless, and retries a commit that failed).
    ///
    /// `app`: the consumer's positions ([`GroupConsumer::app_positions`]). Where everything
    /// begun on a partition may be committed, the position steps over the transaction markers
    /// after its last record (a topic written in transactions, such as the tenant topic under
    /// exactly-once, ends each transaction with one): otherwise the committed offset would
    /// stay one below the end for good, a lag of 1 that never goes. Records the consumer
    /// handed over are all begun before the next poll, except on partitions restoring,
    /// rewinding or stopped, which keep their own position.
    pub fn positions(&self, app: &HashMap<TopicPartition, i64>) -> Vec<(TopicPartition, i64)> {
        let tracker = &self.outbox.tracker;
        self.assigned
            .iter()
            .filter_map(|tp| {
                let committable = self.delivery.committable(tracker, tp);
                let settled = committable == tracker.processed(tp)
                    && !self.restoring.contains_key(tp)
                    && !self.rewind.contains(tp)
                    && !self.poisoned.contains(tp);
                let position = match (committable, app.get(tp).filter(|_| settled)) {
                    (Some(at), Some(&past)) => Some(at.max(past)),
                    // Nothing begun since the assignment: only markers were stepped over.
                    (None, Some(&past)) => Some(past),
                    (at, _) => at,
                };
                Some((tp.clone(), position.or_else(|| self.unsaved.get(tp).copied())?))
            })
            .collect()
    }

    /// Sends one record through the delivery guarantee; a refusal before it leaves is handled
    /// like a refused delivery.
    pub fn send(&mut self, raw: Raw<'_>, pending: Box<Pending>) {
        if let Err(error) = self.delivery.before_send() {
            self.failed(error);
            return;
        }
        if let Err((error, pending)) = self.outbox.send(raw, pending) {
            // The local queue stayed full past the grace period: not a refusal, but the
            // record must never be skipped: stop its partition.
            if matches!(error, KafkaError::MessageProduction(rdkafka::error::RDKafkaErrorCode::QueueFull)) {
                let Pending { ticket, tp, .. } = *pending;
                if self.outbox.tracker.fail(ticket) {
                    events::output_lost(&tp, &error, &self.names.dead_letter);
                    self.poisoned.insert(tp);
                }
                return;
            }
            self.refused(*pending, error);
        }
    }

    /// A transactional call failed: abort (the loop rewinds), or stop.
    pub fn failed(&mut self, error: DeliveryError) {
        match error {
            DeliveryError::Abortable(reason) => {
                self.must_abort.get_or_insert(reason);
            }
            DeliveryError::Fenced(reason) | DeliveryError::Broken(reason) => {
                self.must_reset.get_or_insert(reason);
            }
            DeliveryError::Fatal(reason) => {
                self.fatal.get_or_insert(reason);
            }
        }
    }

    /// Applies every delivery report received so far.
    pub fn settle_ready(&mut self) {
        for report in self.outbox.ready() {
            self.settle(report);
        }
    }

    /// Waits up to `timeout` for one delivery report and applies it.
    pub fn settle_one(&mut self, timeout: Duration) -> bool {
        match self.outbox.next(timeout) {
            Some(report) => {
                self.settle(report);
                true
            }
            None => false,
        }
    }

    fn settle(&mut self, report: Report) {
        let Report { pending, error } = report;
        match error {
            None => {
                if let Some((input, refused)) = self.outbox.acknowledged(&pending) {
                    // The last output of an input settled, others refused: its dead letter.
                    let Pending { ticket, tp, offset, index, consumed_at, .. } = *pending;
                    let at = PendingTicket { ticket, tp, offset, index, bytes: 0, consumed_at };
                    let refusal = self.outbox.dead_letter_input(&input, refused, at);
                    self.apply(refusal);
                }
            }
            Some(error) => self.refused(*pending, error),
        }
    }

    /// The brokers (or the client) refused a record for good.
    fn refused(&mut self, pending: Pending, error: KafkaError) {
        // A record of an earlier assignment, or of an aborted transaction: nothing of the
        // current work is concerned.
        if !self.outbox.tracker.current(pending.ticket) {
            self.outbox.in_flight_bytes = self.outbox.in_flight_bytes.saturating_sub(pending.bytes);
            debug!(topic = %pending.tp.topic, partition = pending.tp.partition, %error, "A stale record failed.");
            return;
        }
        let reroutes = self.delivery.reroutes_refusals();
        let for_good = if reroutes { !is_collateral(&error) } else { is_refusal_of_the_record(&error) };
        if matches!(pending.fallback, Fallback::Input { .. }) && for_good {
            self.summary.produce_failed += 1;
        }
        if !reroutes && !for_good {
            // The transaction aborts (see `refused_in_transaction`) for this failure, and the
            // record is sent again: the reason says which.
            self.must_abort.get_or_insert_with(|| format!("an output failed with its transaction: {error}"));
        }
        let refusal = if reroutes {
            self.outbox.reroute(pending, error)
        } else {
            self.outbox.refused_in_transaction(pending, &error)
        };
        self.apply(refusal);
    }

    fn apply(&mut self, refusal: Refusal) {
        match refusal {
            Refusal::Rerouted | Refusal::Stale => {}
            Refusal::Lost(tp) => {
                self.poisoned.insert(tp);
            }
            Refusal::Abort { tp, offset, refused, lost } => {
                if lost {
                    self.poisoned.insert(tp.clone());
                } else if refused != Refused::default() {
                    let entry = self.refusals.entry((tp, offset)).or_default();
                    entry.outputs.extend(refused.outputs);
                    entry.dead_letter_too_large |= refused.dead_letter_too_large;
                    if entry.detail.is_empty() {
                        entry.detail = refused.detail;
                    }
                }
                self.must_abort.get_or_insert_with(|| "an output was refused for good".to_owned());
            }
        }
    }

    /// Writes the state changes of the assigned partitions in `only` (every one when `None`) to
    /// the changelog: the latest state of each entry changed since the previous flush, and
    /// tombstones of the entries expired meanwhile (expiry runs here, changelog or not), as one
    /// flush of the tracker. Coalescing the changes (as Kafka Streams' store caches do until a
    /// commit) writes a busy session once per flush instead of once per event.
    pub fn flush(&mut self, only: Option<&[TopicPartition]>, now_ms: i64) {
        let Some(changelog) = self.names.changelog.clone() else {
            // Expiry still runs.
            for (tp, state) in self.states.iter_mut() {
                if only.is_none_or(|only| only.contains(tp)) {
                    let _ = state.changes(&tp.topic, tp.partition, now_ms);
                }
            }
            return;
        };
        let partitions: Vec<TopicPartition> = self
            .states
            .keys()
            .filter(|tp| {
                // Only a partition processed now: not one revoked, nor one restoring (its state
                // here would be the old assignment's).
                self.assigned.contains(*tp)
                    && !self.restoring.contains_key(*tp)
                    && only.is_none_or(|only| only.contains(*tp))
            })
            .cloned()
            .collect();
        for tp in partitions {
            let Some(state) = self.states.get_mut(&tp) else { continue };
            let changes = state.changes(&tp.topic, tp.partition, now_ms);
            let Some(ticket) = self.outbox.tracker.flush(&tp, changes.len()) else { continue };
            self.summary.changelog_records += changes.len() as u64;
            self.summary.flushes += 1;
            for (key, value) in &changes {
                let bytes = key.len() + value.as_ref().map_or(0, Vec::len);
                let change = Raw {
                    topic: &changelog,
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
                    acks: 1,
                    tp: tp.clone(),
                    offset: -1,
                    index: 0,
                    bytes,
                    fallback: Fallback::Nothing,
                    kind: Published::Changelog,
                    consumed_at: None,
                });
                self.send(change, pending);
            }
        }
    }

    /// Commits the position of every assigned partition (exactly once: with the open
    /// transaction); then what was kept for a replay below them can go.
    pub fn commit(&mut self, consumer: &dyn GroupConsumer, sync: bool) -> bool {
        if !self.delivery.reroutes_refusals() && !self.acknowledged(self.revoke_timeout) {
            return false;
        }
        let positions = self.positions(&consumer.app_positions());
        match self.delivery.commit(consumer, &positions, sync) {
            Ok(true) => {
                if sync {
                    self.unsaved.clear();
                }
                self.saved(&positions);
                self.committed(&positions);
                true
            }
            Ok(false) => false,
            Err(error) => {
                self.failed(error);
                false
            }
        }
    }

    /// Exactly once, before a commit: waits (at most `wait`) until every record sent in the
    /// transaction is acknowledged, or one is refused (the transaction must then abort: its
    /// commit would wait for records that never leave a failed transaction). False when the
    /// transaction must abort.
    fn acknowledged(&mut self, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        loop {
            self.settle_ready();
            if self.must_abort.is_some() || self.fatal.is_some() {
                return false;
            }
            if self.outbox.tracker.in_flight() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                // The commit's own flush waits on.
                return true;
            }
            self.settle_one(left.min(Duration::from_millis(50)));
        }
    }

    /// At least once, between commits: lets go of what the partition states keep for a
    /// replay (the alerts an event fired, to fire them again byte for byte if it is
    /// processed again) below the positions whose every output is acknowledged: published,
    /// a replay needs none of it. Their state changes may not be durable yet, so this goes
    /// further than a commit could. Exactly once, a commit every 100 ms lets go of them, and
    /// an abort rebuilds the state from the changelog anyway.
    pub fn prune(&mut self) {
        if !self.delivery.reroutes_refusals() {
            return;
        }
        let tracker = &self.outbox.tracker;
        for (tp, state) in self.states.iter_mut() {
            if let Some(published) = tracker.acknowledged(tp) {
                state.committed(published);
            }
        }
    }

    /// The commit of `positions` went out: an older unsaved position of theirs must not be
    /// resumed from later (the committed offset would go back, and what follows be processed
    /// again).
    pub fn saved(&mut self, positions: &[(TopicPartition, i64)]) {
        for (tp, _) in positions {
            // Restoring, it still resumes there (the commit that went out may not land).
            if !self.restoring.contains_key(tp) {
                self.unsaved.remove(tp);
            }
        }
    }

    /// The partitions are committed up to `positions`.
    pub fn committed(&mut self, positions: &[(TopicPartition, i64)]) {
        for (tp, position) in positions {
            if let Some(state) = self.states.get_mut(tp) {
                state.committed(*position);
            }
        }
        if !self.refusals.is_empty() {
            let below: HashMap<&TopicPartition, i64> = positions.iter().map(|(tp, at)| (tp, *at)).collect();
            self.refusals.retain(|(tp, offset), _| below.get(tp).is_none_or(|at| offset >= at));
        }
    }

    /// Exactly once: `tp` was processed again up to `position` (exclusive) after an abort;
    /// true when that completes the catch-up of every partition (time to commit).
    pub fn caught_up(&mut self, tp: &TopicPartition, position: i64) -> bool {
        if self.catch_up.get(tp).is_some_and(|end| position >= *end) {
            self.catch_up.remove(tp);
            return self.catch_up.is_empty();
        }
        false
    }

    /// Forgets the partitions `tps` (revoked, lost): their state, bookkeeping and lag.
    pub fn forget(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.catch_up.remove(tp);
            self.assigned.remove(tp);
            self.poisoned.remove(tp);
            self.restoring.remove(tp);
            self.states.remove(tp);
            self.rewind.remove(tp);
            self.refusals.retain(|(refused, _), _| refused != tp);
            super::health::forget_lag(tp);
        }
        self.delivery.forget(tps);
    }

    /// Marks `tp` assigned now: its state restored first when durable.
    pub fn assign(&mut self, tp: TopicPartition) -> bool {
        self.outbox.tracker.reset_partition(&tp);
        let durable = self.durable(&tp.topic);
        if durable {
            self.assignments += 1;
            self.restoring.insert(tp.clone(), self.assignments);
        }
        self.assigned.insert(tp);
        durable
    }

    /// Exactly once: aborts the open transaction and discards everything it held: the
    /// partitions' state (restored from the changelog, which holds only committed changes)
    /// and positions; every assigned partition is processed again from its committed offset.
    /// Returns the partitions to pause (restoring) and those to seek back now.
    pub fn abort(&mut self, reason: &str) -> Rewind {
        self.must_abort = None;
        if let Err(error) = self.delivery.abort() {
            match error {
                // Aborting failed for a reason that needs an abort: nothing more to do.
                DeliveryError::Abortable(_) => {}
                // The brokers aborted it already, or the producer is broken: a new producer
                // goes on (the loop).
                DeliveryError::Fenced(reason) | DeliveryError::Broken(reason) => {
                    self.must_reset.get_or_insert(reason);
                }
                DeliveryError::Fatal(reason) => {
                    self.fatal.get_or_insert(reason);
                    return Rewind::default();
                }
            }
        }
        events::transaction_aborted(reason, self.assigned.len());
        let tracker = &self.outbox.tracker;
        self.catch_up = self.assigned.iter().filter_map(|tp| Some((tp.clone(), tracker.processed(tp)?))).collect();
        let mut rewind = Rewind::default();
        let assigned: Vec<TopicPartition> = self.assigned.iter().cloned().collect();
        for tp in assigned {
            self.outbox.tracker.reset_partition(&tp);
            self.states.remove(&tp);
            if self.poisoned.contains(&tp) {
                continue;
            }
            if self.durable(&tp.topic) {
                self.assignments += 1;
                self.restoring.insert(tp.clone(), self.assignments);
                self.rewind.insert(tp.clone());
                rewind.pause.push(tp);
            } else {
                rewind.seek.push(tp);
            }
        }
        rewind.stop = self.poisoned.iter().cloned().collect();
        rewind
    }
}

/// What an abort leaves the consumer to do.
#[derive(Debug, Default)]
pub(super) struct Rewind {
    /// Durable partitions: paused until restored, then sought back to their committed offset.
    pub pause: Vec<TopicPartition>,
    /// Stateless partitions: sought back to their committed offset now.
    pub seek: Vec<TopicPartition>,
    /// Stopped partitions: paused.
    pub stop: Vec<TopicPartition>,
}

impl Rewind {
    /// Pauses and seeks as the abort asks.
    pub fn apply<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, auto_offset_reset: Offset) {
        set_paused(consumer, self.pause.iter().chain(&self.stop), true);
        for tp in &self.seek {
            let seek = committed_or(consumer, tp, auto_offset_reset)
                .and_then(|offset| consumer.seek(&tp.topic, tp.partition, offset, Duration::from_secs(10)));
            if let Err(error) = seek {
                warn!(topic = %tp.topic, partition = tp.partition, %error, "Cannot seek back after an abort.");
            }
        }
    }
}

/// Where the group resumes `tp`: its committed offset, or `reset` when it has none. A
/// partition the brokers answer for with an error has not "none": it is asked again (a few
/// times, [`COMMITTED_RETRY_PAUSE`] apart), then the error is returned. Exactly once, the
/// answer is `UNSTABLE_OFFSET_COMMIT` while a transaction holding offsets of the partition
/// completes (librdkafka retries it only so often): taken as "none", the partition went
/// back to `reset` and outputs that transaction committed were published again (seen in
/// the fault suite with a broker paused).
pub(super) fn committed_or<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tp: &TopicPartition,
    reset: Offset,
) -> Result<Offset, KafkaError> {
    let mut attempt = 1;
    loop {
        let mut list = TopicPartitionList::new();
        list.add_partition(&tp.topic, tp.partition);
        let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
        let Some(element) = committed.find_partition(&tp.topic, tp.partition) else { return Ok(reset) };
        match (element.error(), element.offset()) {
            (Ok(()), Offset::Offset(offset)) => return Ok(Offset::Offset(offset)),
            (Ok(()), _) => return Ok(reset),
            (Err(error), _) if attempt >= COMMITTED_ATTEMPTS => return Err(error),
            (Err(error), _) => {
                warn!(topic = %tp.topic, partition = tp.partition, attempt, %error, "Cannot read the committed offset yet; asking again.");
                attempt += 1;
                std::thread::sleep(COMMITTED_RETRY_PAUSE);
            }
        }
    }
}

/// How often, and how far apart, [`committed_or`] asks for a committed offset the brokers
/// answered with an error for.
const COMMITTED_ATTEMPTS: u32 = 10;
const COMMITTED_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Pauses or resumes `partitions`; false when the consumer refused (logged).
pub(super) fn set_paused<'a, C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
    pause: bool,
) -> bool {
    let mut list = TopicPartitionList::new();
    for tp in partitions {
        list.add_partition(&tp.topic, tp.partition);
    }
    if list.count() == 0 {
        return pause;
    }
    let result = if pause { consumer.pause(&list) } else { consumer.resume(&list) };
    match result {
        Ok(()) => {
            debug!(partitions = list.count(), pause, "Partitions paused or resumed.");
            true
        }
        Err(error) => {
            warn!(partitions = list.count(), pause, %error, "Cannot pause or resume partitions.");
            false
        }
    }
}
