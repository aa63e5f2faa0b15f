//! The runtime's noteworthy events: one function each, which writes the log line and updates
//! the metric together so that they never drift (as Vector's `internal_events`). Fields
//! first, message last; ERROR only where an operator must act; nothing per event above
//! TRACE, and no personal data (offsets and topic names only).

use std::time::Duration;

use rdkafka::error::KafkaError;
use tracing::{debug, error, info, warn};

use super::offsets::TopicPartition;
use crate::model::Source;
use crate::telemetry::{self, Published};

/// Partitions assigned to this instance; `restoring` of them wait for their state.
pub(super) fn assigned(partitions: usize, restoring: usize) {
    metrics::counter!(telemetry::REBALANCES, "change" => "assigned").increment(1);
    info!(partitions, restoring, "Partitions assigned.");
}

/// Partitions revoked in a rebalance, after their outputs were drained and their positions
/// committed (`committed` of them had a position to commit).
pub(super) fn revoked(partitions: usize, committed: usize) {
    metrics::counter!(telemetry::REBALANCES, "change" => "revoked").increment(1);
    info!(partitions, committed, "Partitions revoked.");
}

/// The assignment was lost (the group moved on without this member, e.g. after a session
/// timeout): nothing of those partitions is committed by this member any more.
pub(super) fn lost(partitions: usize, reason: &str) {
    metrics::counter!(telemetry::REBALANCES, "change" => "lost").increment(1);
    warn!(partitions, reason, "Partitions lost; their uncommitted input is processed again by their next owner.");
}

/// Offsets committed (at least once): `sync` on revoke and shutdown, asynchronous on the timer.
pub(super) fn committed(partitions: usize, sync: bool) {
    let result = if sync { "committed" } else { "sent" };
    metrics::counter!(telemetry::COMMITS, "result" => result).increment(1);
    debug!(partitions, result, "Committed offsets.");
}

/// An offset commit failed; the next commit retries it.
pub(super) fn commit_failed(partitions: usize, error: &KafkaError) {
    metrics::counter!(telemetry::COMMITS, "result" => "failed").increment(1);
    warn!(partitions, %error, "Offset commit failed; retried at the next commit.");
}

/// A transaction committed, with the input offsets of `partitions`.
pub(super) fn transaction_committed(partitions: usize, records: u64) {
    metrics::counter!(telemetry::TRANSACTIONS, "result" => "committed").increment(1);
    metrics::counter!(telemetry::COMMITS, "result" => "committed").increment(1);
    debug!(partitions, records, "Transaction committed.");
}

/// A transaction aborted: its outputs are discarded and its input processed again from the
/// committed offsets, over state restored from the changelog.
pub(super) fn transaction_aborted(reason: &str, partitions: usize) {
    metrics::counter!(telemetry::TRANSACTIONS, "result" => "aborted").increment(1);
    warn!(partitions, reason, "Transaction aborted; processing again from the committed offsets.");
}

/// A partition's state restored from the changelog.
pub(super) fn restored(tp: &TopicPartition, records: u64, skipped: u64, entries: usize) {
    metrics::counter!(telemetry::RESTORED_RECORDS).increment(records);
    info!(topic = %tp.topic, partition = tp.partition, records, skipped, entries, "Partition state restored.");
}

/// A restore of several partitions finished.
pub(super) fn restore_finished(took: Duration) {
    metrics::histogram!(telemetry::RESTORE_SECONDS).record(took.as_secs_f64());
}

/// An output of the input record at `source` refused for good: it will be dead-lettered.
pub(super) fn output_refused(source: &Source, output: &str, error: &KafkaError) {
    metrics::counter!(telemetry::PRODUCE_ERRORS, "retriable" => "false").increment(1);
    warn!(topic = %source.topic, partition = source.partition, offset = source.offset, output, %error,
          "Output refused; dead-lettering the record.");
}

/// A dead letter refused as too large: sent again without the original value.
pub(super) fn dead_letter_too_large(source: &Source, code: &str, error: &KafkaError) {
    metrics::counter!(telemetry::PRODUCE_ERRORS, "retriable" => "false").increment(1);
    warn!(topic = %source.topic, partition = source.partition, offset = source.offset, code, %error,
          "Dead letter refused; sending it without the original value.");
}

/// An output lost for good (nothing left to fall back to): its partition stops, never
/// committed past it, processed again after a restart.
pub(super) fn output_lost(tp: &TopicPartition, error: &KafkaError, dead_letter_topic: &str) {
    metrics::counter!(telemetry::PRODUCE_ERRORS, "retriable" => "false").increment(1);
    error!(topic = %tp.topic, partition = tp.partition, %error, dead_letter_topic,
           "Output lost; the partition is paused and not committed past it until restart.");
}

/// An output of an earlier assignment of its partition (or a tombstone) lost: nothing of the
/// current assignment is concerned.
pub(super) fn stale_output_lost(tp: &TopicPartition, error: &KafkaError) {
    metrics::counter!(telemetry::PRODUCE_ERRORS, "retriable" => "false").increment(1);
    warn!(topic = %tp.topic, partition = tp.partition, %error,
          "Output of an earlier assignment, or a tombstone, lost; nothing to stop.");
}

/// A client-level producer error (a broker unreachable, a request timed out): librdkafka
/// retries the records concerned.
pub(super) fn producer_error(error: &KafkaError, reason: &str) {
    metrics::counter!(telemetry::PRODUCE_ERRORS, "retriable" => "true").increment(1);
    warn!(%error, reason, "Producer error; retrying.");
}

/// A record published and acknowledged.
pub(super) fn published(meters: &telemetry::DeliveryMeters, kind: Published, consumed_at: Option<std::time::Instant>) {
    meters.published(kind, consumed_at);
}

/// Exactly once: the producer was fenced, stuck in a transactional call, or failed for good;
/// a new one with the same transactional id goes on, the uncommitted work processed again.
pub(super) fn fenced(reason: &str) {
    metrics::counter!(telemetry::TRANSACTIONS, "result" => "aborted").increment(1);
    warn!(reason, "Producer replaced (fenced, stuck or failed); processing again from the committed offsets.");
}

/// The service cannot go on.
pub(super) fn fatal(client: &str, reason: &str) {
    error!(client, reason, "Fatal Kafka error; stopping.");
}

/// Whether any broker is reachable, when that changes.
pub(super) fn brokers_reachable(reachable: bool, brokers: usize) {
    if reachable {
        info!(brokers, "Brokers reachable again.");
    } else {
        warn!(brokers, "No broker reachable.");
    }
}

/// Partitions this instance consumes under-replicated (a broker down or catching up), or
/// no longer.
pub(super) fn under_replicated(under: usize, of: usize) {
    if under == 0 {
        info!(partitions = of, "Every partition fully replicated again.");
    } else {
        warn!(under, partitions = of, "Partitions under-replicated; the cluster works degraded.");
    }
}

/// A partition with records left and no progress for `admin.stuck_after`, or no longer so.
pub(super) fn stuck(tp: &TopicPartition, stuck: bool, lag: i64, stalled: Duration) {
    if stuck {
        warn!(topic = %tp.topic, partition = tp.partition, lag, stalled_s = stalled.as_secs(),
              "Partition stuck: records left and no progress.");
    } else {
        info!(topic = %tp.topic, partition = tp.partition, "Partition no longer stuck.");
    }
}
