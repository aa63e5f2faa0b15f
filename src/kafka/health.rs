//! What `/healthz` and `/readyz` answer: the service loop's heartbeat, and its readiness
//! (in the group, state restored, brokers reachable, no partition stuck), from librdkafka's
//! statistics.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// The partitions this instance consumes with fewer in-sync replicas than replicas, of
    /// how many (the cluster's metadata, read every few seconds): the cluster works degraded
    /// (a broker down, or catching up after a restart).
    pub under_replicated: Replication,
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
        } else if self.under_replicated.under > 0 {
            let Replication { under, partitions } = self.under_replicated;
            reasons.push(format!(
                "{under} of {partitions} partitions under-replicated: a Kafka broker is down or catching up"
            ));
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

/// Partitions with fewer in-sync replicas than replicas, of how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replication {
    pub under: usize,
    pub partitions: usize,
}

/// Reads the cluster's metadata now and then, on a thread of its own, for the replication of
/// the topics this instance consumes: a broker down (removed from the in-sync replicas once
/// fenced) or catching up after a restart shows as under-replicated partitions. librdkafka's
/// statistics cannot tell: with sparse connections, a broker the client does not need stays
/// `DOWN` in them, reachable or not.
pub(super) struct ClusterWatch {
    replication: Arc<Mutex<Replication>>,
    topics: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterWatch {
    /// Starts reading every `every` with a client made from `client` (no group).
    pub fn start(client: &rdkafka::ClientConfig, every: Duration) -> Result<ClusterWatch, rdkafka::error::KafkaError> {
        let consumer: rdkafka::consumer::BaseConsumer = client.create()?;
        let replication = Arc::new(Mutex::new(Replication::default()));
        let topics: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (replication, topics, stop) = (replication.clone(), topics.clone(), stop.clone());
            std::thread::Builder::new()
                .name("cluster-watch".to_owned())
                .spawn(move || {
                    use rdkafka::consumer::Consumer;
                    let mut seen = Replication::default();
                    while !stop.load(Ordering::Relaxed) {
                        let wanted: BTreeSet<String> = lock(&topics).clone();
                        if !wanted.is_empty() {
                            // A cluster that does not answer: nothing known, nothing changed.
                            if let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_secs(10)) {
                                let mut now = Replication::default();
                                for topic in metadata.topics().iter().filter(|t| wanted.contains(t.name())) {
                                    for partition in topic.partitions() {
                                        now.partitions += 1;
                                        now.under += usize::from(partition.isr().len() < partition.replicas().len());
                                    }
                                }
                                if now.under != seen.under {
                                    events::under_replicated(now.under, now.partitions);
                                }
                                seen = now;
                                *lock(&replication) = now;
                            }
                        }
                        let until = Instant::now() + every;
                        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
                // As `std::thread::spawn`: out of threads, the process is in no state to go on.
                .expect("cannot start the cluster watch thread")
        };
        Ok(ClusterWatch { replication, topics, stop, thread: Some(thread) })
    }

    /// The topics whose replication to watch (those of the assigned partitions).
    pub fn watch(&self, topics: BTreeSet<String>) {
        *lock(&self.topics) = topics;
    }

    pub fn replication(&self) -> Replication {
        *lock(&self.replication)
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let degraded = Readiness { under_replicated: Replication { under: 4, partitions: 12 }, ..ready.clone() };
        assert_eq!(degraded.reasons(), ["4 of 12 partitions under-replicated: a Kafka broker is down or catching up"]);
        let whole = Readiness { under_replicated: Replication { under: 0, partitions: 12 }, ..ready };
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
