//! What `/healthz` and `/readyz` answer: the service loop's heartbeat, and its readiness
//! (in the group, state restored, brokers reachable, no partition stuck), from librdkafka's
//! statistics.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::events;
use super::offsets::TopicPartition;
use crate::telemetry;

/// The service loop's heartbeat: it beats at every turn (and between the attempts of a long
/// blocking call), so that `/healthz` can tell a loop that stopped turning.
#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    /// Milliseconds from `started` to the last beat.
    last: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat { started: Instant::now(), last: AtomicU64::new(0) }
    }

    /// The loop turned.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// Time since the last beat (since creation, before the first).
    pub fn age(&self) -> Duration {
        self.age_at(Instant::now())
    }

    fn beat_at(&self, now: Instant) {
        let at = u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX);
        self.last.store(at, Ordering::Relaxed);
    }

    fn age_at(&self, now: Instant) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        now.saturating_duration_since(self.started).saturating_sub(last)
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

/// Whether the service can do its work, published on every change and with every
/// statistics report (for `/readyz`).
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
    /// Brokers of the cluster (learned from its metadata) not reachable at the last
    /// statistics, of how many: the cluster works degraded (leaders moved, fewer in-sync
    /// replicas) while some are down.
    pub brokers_unreachable: (usize, usize),
    /// Assigned partitions with records left and no progress for `admin.stuck_after`.
    pub stuck: Vec<TopicPartition>,
    /// When the service loop published this snapshot (`None`: never): an old snapshot is a
    /// loop that stopped reporting, not a ready service.
    pub at: Option<Instant>,
}

impl Readiness {
    /// Why the service is not ready, if it is not (the snapshot's age is judged by its reader,
    /// which knows how old is too old: [`Readiness::reasons_at`]).
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
        } else if let (down @ 1.., of) = self.brokers_unreachable {
            reasons.push(format!("{down} of {of} Kafka brokers unreachable"));
        }
        for tp in &self.stuck {
            reasons.push(format!("partition {tp} stuck: records left and no progress"));
        }
        reasons
    }

    /// [`Readiness::reasons`], and a snapshot older than `too_old` at `now`.
    pub fn reasons_at(&self, now: Instant, too_old: Duration) -> Vec<String> {
        let mut reasons = self.reasons();
        if let Some(age) = self.at.map(|at| now.saturating_duration_since(at)).filter(|age| *age > too_old) {
            reasons.push(format!("the service has not reported its state for {} s", age.as_secs()));
        }
        reasons
    }
}

/// The service's health, from the consumer's statistics.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// No broker was reachable at the last statistics.
    pub brokers_down: bool,
    /// Brokers learned from the metadata not up at the last statistics, and how many there are.
    pub brokers_unreachable: (usize, usize),
    /// Per assigned partition: the committed position last seen, and since when it has not moved.
    progress: HashMap<TopicPartition, (i64, Instant)>,
    /// Assigned partitions with a lag and no progress for `stuck_after`.
    pub stuck: BTreeSet<TopicPartition>,
}

impl Health {
    /// Records the position of `tp` seen at `now`; how long it has not moved.
    pub fn observe(&mut self, tp: &TopicPartition, position: i64, now: Instant) -> Duration {
        let since = match self.progress.get(tp) {
            Some(&(seen, since)) if seen == position => since,
            _ => now,
        };
        self.progress.insert(tp.clone(), (position, since));
        now.duration_since(since)
    }

    /// Reads one statistics report: broker reachability, and per assigned partition its lag
    /// (a metric) and whether it is stuck (records not committed, committed position not
    /// moving for `stuck_after`, not restoring).
    pub fn on_statistics(
        &mut self,
        statistics: &rdkafka::Statistics,
        assigned: &HashSet<TopicPartition>,
        restoring: &HashMap<TopicPartition, u64>,
        stuck_after: Duration,
        now: Instant,
    ) {
        let brokers_down = !statistics.brokers.values().any(|broker| broker.state == "UP");
        if brokers_down != self.brokers_down {
            events::brokers_reachable(!brokers_down, statistics.brokers.len());
            self.brokers_down = brokers_down;
        }
        // The cluster's brokers (learned from metadata; not the bootstrap or logical entries).
        let learned: Vec<&rdkafka::statistics::Broker> =
            statistics.brokers.values().filter(|broker| broker.source == "learned").collect();
        let unreachable = (learned.iter().filter(|broker| broker.state != "UP").count(), learned.len());
        if unreachable.0 != self.brokers_unreachable.0 {
            events::brokers_unreachable(unreachable.0, unreachable.1);
        }
        self.brokers_unreachable = unreachable;
        self.progress.retain(|tp, _| assigned.contains(tp));
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
            let stalled = self.observe(tp, position, now);
            if uncommitted > 0 && stalled >= stuck_after && !restoring.contains_key(tp) {
                if !self.stuck.contains(tp) {
                    events::stuck(tp, true, lag, stalled);
                }
                stuck.insert(tp.clone());
            }
        }
        for tp in self.stuck.difference(&stuck) {
            events::stuck(tp, false, 0, Duration::ZERO);
        }
        metrics::gauge!(telemetry::STUCK_PARTITIONS).set(stuck.len() as f64);
        self.stuck = stuck;
    }
}

/// A partition no longer this instance's: its lag is the new owner's to report.
pub(super) fn forget_lag(tp: &TopicPartition) {
    metrics::gauge!(telemetry::CONSUMER_LAG, "topic" => tp.topic.to_string(), "partition" => tp.partition.to_string())
        .set(0.0);
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
        let not = Readiness { restoring: 1, brokers_down: true, stuck, ..ready.clone() };
        assert_eq!(
            not.reasons(),
            [
                "restoring the state of 1 of 2 partitions",
                "no Kafka broker reachable",
                "partition acs.raw[1] stuck: records left and no progress"
            ]
        );
        let degraded = Readiness { brokers_unreachable: (1, 3), ..ready.clone() };
        assert_eq!(degraded.reasons(), ["1 of 3 Kafka brokers unreachable"]);
        let whole = Readiness { brokers_unreachable: (0, 3), ..ready };
        assert!(whole.reasons().is_empty());
    }

    #[test]
    fn an_old_snapshot_is_not_ready() {
        let published = Instant::now();
        let ready = Readiness { joined: true, assigned: 2, at: Some(published), ..Readiness::default() };
        let limit = Duration::from_secs(60);
        assert!(ready.reasons_at(published + Duration::from_secs(59), limit).is_empty());
        assert_eq!(
            ready.reasons_at(published + Duration::from_secs(61), limit),
            ["the service has not reported its state for 61 s"]
        );
    }

    #[test]
    fn the_heartbeat_ages_until_the_next_beat() {
        let heartbeat = Heartbeat::new();
        let start = heartbeat.started;
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(heartbeat.age_at(at(1_500)), Duration::from_millis(1_500), "no beat yet: since creation");
        heartbeat.beat_at(at(2_000));
        assert_eq!(heartbeat.age_at(at(2_000)), Duration::ZERO);
        assert_eq!(heartbeat.age_at(at(32_000)), Duration::from_secs(30));
        heartbeat.beat_at(at(40_000));
        assert_eq!(heartbeat.age_at(at(40_250)), Duration::from_millis(250), "a beat resets the age");
    }
}
