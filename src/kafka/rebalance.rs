//! The consumer's callbacks, which librdkafka runs inside the service loop's `poll`:
//! rebalances (drain and commit what is revoked, start what is assigned afresh) and
//! statistics (lag, stuck partitions, broker reachability, for `/readyz` and the metrics).
//!
//! A revoke waits (at most `REVOKE_DRAIN_MAX`) for what it must: at least once, the revoked
//! partitions' state changes are flushed and their outputs drained, then their positions
//! committed; exactly once, the open transaction commits, state changes and positions with
//! it. A lost assignment (the group moved on without this member) commits nothing: at least
//! once its partitions are forgotten, exactly once the open transaction aborts. Assigned
//! partitions with durable state stay paused until the loop has restored it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::events;
use super::health::Readiness;
use super::offsets::TopicPartition;
use super::runtime::{Assignment, now_ms};
use super::shared::{Shared, set_paused};
use crate::pipeline::PartitionState;
use crate::telemetry;

/// The consumer's context: the service's shared state and what it publishes.
pub(super) struct ConsumerCtx<S> {
    pub shared: Arc<Mutex<Shared<S>>>,
    pub assignment: tokio::sync::watch::Sender<Assignment>,
    pub readiness: tokio::sync::watch::Sender<Readiness>,
    /// An assigned partition lagging without progress for this long is stuck.
    pub stuck_after: Duration,
    /// Where a partition without a committed offset starts (`auto.offset.reset`).
    pub reset: Offset,
    /// The replication of the assigned partitions' topics.
    pub cluster: super::health::ClusterWatch,
}

/// Locks the shared state (a panic while holding it has stopped the service already).
pub(super) fn lock<S>(shared: &Mutex<Shared<S>>) -> MutexGuard<'_, Shared<S>> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: PartitionState + 'static> ConsumerCtx<S> {
    /// Publishes the assignment and the readiness.
    pub fn publish(&self, shared: &Shared<S>) {
        self.assignment.send_replace(shared.assigned.iter().cloned().collect());
        self.cluster.watch(shared.assigned.iter().map(|tp| tp.topic.to_string()).collect());
        self.publish_readiness(shared);
    }

    pub fn publish_readiness(&self, shared: &Shared<S>) {
        let readiness = Readiness {
            joined: true,
            assigned: shared.assigned.len(),
            restoring: shared.restoring.len(),
            brokers_down: shared.health.brokers_down,
            under_replicated: self.cluster.replication(),
            stuck: shared.health.stuck.iter().cloned().collect(),
            at: Some(Instant::now()),
        };
        metrics::gauge!(telemetry::READY).set(if readiness.reasons().is_empty() { 1.0 } else { 0.0 });
        self.readiness.send_replace(readiness);
    }

    /// Revoked partitions: their work committed (or, when the assignment was lost, dropped),
    /// then forgotten.
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: Vec<TopicPartition>) {
        let mut shared = lock(&self.shared);
        let lost = consumer.assignment_lost();
        shared.settle_ready();
        if lost {
            // Another member may own them already: nothing is committed for them. Exactly
            // once, the open transaction held their work with everyone else's: it aborts, and
            // the partitions kept are processed again from their committed offsets.
            events::lost(revoked.len(), "the assignment was lost");
            // Another member may have moved them on: an unsaved position is stale.
            shared.unsaved.retain(|tp, _| !revoked.contains(tp));
            shared.forget(&revoked);
            shared.outbox.tracker.revoke(&revoked);
            if shared.delivery.open() {
                let rewind = shared.abort("the assignment was lost");
                rewind.apply(consumer, self.reset);
            }
            self.publish(&shared);
            return;
        }
        let wait = if shared.closing { Duration::ZERO } else { shared.revoke_timeout };
        let deadline = Instant::now() + wait;
        let committed = if shared.delivery.reroutes_refusals() {
            // At least once: the revoked partitions' state changes, waited for with their
            // outputs, then their positions committed.
            shared.flush(Some(&revoked), now_ms());
            while revoked
                .iter()
                .any(|tp| !shared.poisoned.contains(tp) && shared.outbox.tracker.in_flight_partition(tp) > 0)
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    warn!(partitions = revoked.len(), "Revoke drain timed out; committing what is acknowledged.");
                    break;
                }
                shared.settle_one(left.min(Duration::from_millis(100)));
            }
            let app = super::delivery::GroupConsumer::app_positions(consumer);
            let positions: Vec<(TopicPartition, i64)> =
                shared.positions(&app).into_iter().filter(|(tp, _)| revoked.contains(tp)).collect();
            let count = positions.len();
            let saved = match shared.delivery.commit(consumer, &positions, true) {
                Ok(saved) => saved,
                Err(error) => {
                    shared.failed(error);
                    false
                }
            };
            if saved {
                shared.saved(&positions);
            } else {
                shared.unsaved.extend(positions);
            }
            count
        } else {
            // Exactly once: the open transaction commits, every partition's state changes and
            // positions with it (the partitions kept lose nothing by an early commit). One that
            // cannot commit aborts: the revoked partitions go to their next owner as
            // committed, the kept ones are processed again from there.
            if shared.must_abort.is_none() {
                shared.flush(None, now_ms());
                shared.commit(consumer, true);
            }
            if let Some(reason) = shared.must_abort.clone() {
                shared.forget(&revoked);
                shared.outbox.tracker.revoke(&revoked);
                let rewind = shared.abort(&reason);
                rewind.apply(consumer, self.reset);
            }
            revoked.len()
        };
        shared.forget(&revoked);
        shared.outbox.tracker.revoke(&revoked);
        events::revoked(revoked.len(), committed);
        self.publish(&shared);
    }

    /// Assigned partitions: tracked afresh; those with durable state paused until restored.
    fn assign(&self, consumer: &BaseConsumer<Self>, list: &TopicPartitionList) {
        let mut shared = lock(&self.shared);
        // Unsaved positions of partitions that went to another member are dropped: that
        // member starts from the committed offset.
        let assigned: HashSet<TopicPartition> =
            list.elements().iter().map(|e| TopicPartition::new(e.topic(), e.partition())).collect();
        shared.unsaved.retain(|tp, _| assigned.contains(tp));
        let mut to_restore = Vec::new();
        for tp in assigned {
            if shared.assign(tp.clone()) {
                to_restore.push(tp);
            }
        }
        // Nothing of a partition is processed before its state is back: paused until then.
        if !to_restore.is_empty() && !set_paused(consumer, &to_restore, true) {
            // Records fetched meanwhile are skipped and fetched again after the restore.
            debug!(partitions = to_restore.len(), "Partitions to restore not paused.");
        }
        events::assigned(list.count(), shared.restoring.len());
        self.publish(&shared);
    }
}

impl<S: PartitionState + 'static> ClientContext for ConsumerCtx<S> {
    /// Broker reachability, and lag and progress per assigned partition, from librdkafka's
    /// statistics (`statistics.interval.ms`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut shared = lock(&self.shared);
        let Shared { health, assigned, restoring, .. } = &mut *shared;
        health.on_statistics(&statistics, assigned, restoring, self.stuck_after, Instant::now());
        self.publish_readiness(&shared);
    }
}

impl<S: PartitionState + 'static> ConsumerContext for ConsumerCtx<S> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = list.elements().iter().map(|e| TopicPartition::new(e.topic(), e.partition())).collect();
                self.revoke(consumer, revoked);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => {
                // rdkafka unassigns everything: forget every partition (nothing is committed
                // for them any more; their input is processed again by the next owner).
                let mut shared = lock(&self.shared);
                let all: Vec<TopicPartition> = shared.assigned.iter().cloned().collect();
                events::lost(all.len(), &error.to_string());
                if shared.delivery.open() {
                    // The rewind is moot: every partition goes.
                    let _ = shared.abort("rebalance error");
                }
                shared.forget(&all);
                shared.outbox.tracker.revoke(&all);
                self.publish(&shared);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.assign(consumer, list);
        }
    }
}
