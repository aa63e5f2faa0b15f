//! The service loop: consume → core → produce, on a thread of its own (Kafka Streams'
//! `StreamThread`). One turn: restore what was assigned, hold back while too much is in
//! flight, poll one record (rebalance and statistics callbacks run inside the poll), run the
//! core on it and send what it planned, settle delivery reports, commit when the interval is
//! over, answer session queries. At the stop: drain and commit.
//!
//! Everything here may block (waiting for acknowledgements, transactional calls, topic
//! creation through the tokio runtime's handle): the thread is the service's own, never an
//! async worker.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer as _;
use rdkafka::{ClientConfig, Offset};
use tracing::{debug, info, warn};

use super::client;
use super::delivery::{AtLeastOnce, Delivery, DeliveryError, ExactlyOnce};
use super::events;
use super::health::{ClusterWatch, Heartbeat};
use super::offsets::TopicPartition;
use super::outbox::{Fallback, Input, Outbox, Pending, Raw};
use super::plan::{self, Destinations, Role, Step};
use super::rebalance::{ConsumerCtx, lock};
use super::repartition;
use super::restore::{self, Rebuild, Rebuilt, RestoreFailure};
use super::runtime::{Observers, RunSummary, RuntimeError, now_ms};
use super::shared::{Names, REVOKE_DRAIN_MAX, Shared, committed_or, set_paused};
use super::topics::Topics;
use crate::config::{Config, Guarantee};
use crate::encode::dead_letter::headers::OUTPUT;
use crate::model::Source;
use crate::pipeline::{Outcome, PartitionState, Processor, Record};
use crate::telemetry::{self, Meters};

/// How long the loop waits for acknowledgements while too much is in flight before it pauses
/// its partitions: a pause makes librdkafka fetch again only about a second after the resume
/// (BENCHMARKS.md), while acknowledgements usually come within milliseconds.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(500);
/// Longest wait of one poll: the loop turns at least this often (queries, the stop, commits).
const POLL_MAX: Duration = Duration::from_millis(100);
/// How often what the partition states keep for a replay is let go below the positions
/// already safe (between commits): a tenant's burst of alerts within one commit interval
/// would otherwise make its changelog record larger than the brokers take (seen at 50 k
/// events/s with a 5 s interval: refused, the partition stopped).
const PRUNE_EVERY: Duration = Duration::from_millis(250);

/// The changelog read of the partitions waiting for their state, on a thread of its own,
/// each record applied as it arrives.
struct RestoreTask<S> {
    handle: JoinHandle<Result<Vec<Rebuilt<S>>, RestoreFailure>>,
    /// The partitions it restores, with the number of their assignment.
    waiting: HashMap<TopicPartition, u64>,
    /// Set when nobody waits for it any more (its partitions revoked, or the service stopping).
    cancel: Arc<AtomicBool>,
    started: Instant,
}

/// Runs the service until `stop` is set, then drains and commits (within `shutdown.grace`).
pub(super) fn run<P: Processor>(
    config: &Config,
    pipeline: &P,
    observers: Observers,
    stop: &AtomicBool,
    runtime: tokio::runtime::Handle,
) -> Result<RunSummary, RuntimeError> {
    let Observers { assignment, readiness, queries, heartbeat } = observers;
    let mut queries = queries;
    let guarantee = config.kafka.guarantee;
    let producer_config = match guarantee {
        Guarantee::AtLeastOnce => client::producer(config),
        Guarantee::ExactlyOnce => client::transactional_producer(config),
    };
    let outbox = Outbox::new(producer_config, pipeline.dead_letter_topic(), config.shutdown.grace)
        .map_err(|source| RuntimeError::Client { client: "producer", source })?;
    let delivery: Box<dyn Delivery> = match guarantee {
        Guarantee::AtLeastOnce => Box::new(AtLeastOnce),
        Guarantee::ExactlyOnce => {
            info!(transactional_id = %config.kafka.transactional_id(), "Exactly-once: initializing transactions.");
            let delivery =
                ExactlyOnce::init(outbox.producer.clone(), config.kafka.transaction_timeout, heartbeat.clone())
                    .map_err(|error| RuntimeError::Fatal { client: "producer", reason: error.to_string() })?;
            Box::new(delivery)
        }
    };
    let names = Names {
        dead_letter: pipeline.dead_letter_topic().to_owned(),
        changelog: pipeline.changelog_topic().map(str::to_owned),
        repartition: pipeline.repartition_topic().map(str::to_owned),
        tenant: pipeline.tenant_topic().map(str::to_owned),
    };
    let revoke_timeout = config.shutdown.grace.min(REVOKE_DRAIN_MAX);
    let shared: Arc<Mutex<Shared<P::State>>> =
        Arc::new(Mutex::new(Shared::new(outbox, delivery, names, revoke_timeout)));
    let reset = match config.kafka.consumer.get("auto.offset.reset").map(String::as_str) {
        Some("latest" | "largest" | "end") => Offset::End,
        _ => Offset::Beginning,
    };
    // Every statistics interval (5 s by default), as the lag.
    let every = config
        .kafka
        .consumer
        .get("statistics.interval.ms")
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis);
    let cluster = ClusterWatch::start(&client::restore_consumer(config), every)
        .map_err(|source| RuntimeError::Client { client: "metadata client", source })?;
    let context = ConsumerCtx {
        shared: shared.clone(),
        assignment,
        readiness,
        stuck_after: config.admin.stuck_after,
        reset,
        cluster,
    };
    let consumer: BaseConsumer<ConsumerCtx<P::State>> = client::consumer(config)
        .create_with_context(context)
        .map_err(|source| RuntimeError::Client { client: "consumer", source })?;
    let admin = if config.topics.create {
        Some(client::admin(config).create().map_err(|source| RuntimeError::Client { client: "admin client", source })?)
    } else {
        None
    };
    let mut topics = Topics::new(config, admin, runtime);
    topics.ensure(pipeline.dead_letter_topic());
    topics.ensure_internal(
        &consumer,
        &config.kafka.input_topics,
        pipeline.repartition_topic(),
        pipeline.tenant_topic(),
        pipeline.changelog_topic(),
    );
    // Subscribed once the internal topics exist: a topic missing at subscription is only
    // seen at the next metadata refresh (minutes). Re-keyed input is consumed twice in the
    // group: from the input topics (to re-key it) and from the repartition topic (to process
    // it); events of tenant-scoped rules, re-keyed by tenant, are counted where their tenant is.
    let mut subscribed: Vec<&str> = config.kafka.input_topics.iter().map(String::as_str).collect();
    subscribed.extend(pipeline.repartition_topic());
    subscribed.extend(pipeline.tenant_topic());
    consumer.subscribe(&subscribed).map_err(|source| RuntimeError::Subscribe {
        topics: subscribed.iter().map(|t| t.to_string()).collect(),
        source,
    })?;
    info!(brokers = %config.kafka.brokers, group = %config.kafka.group_id, topics = ?config.kafka.input_topics,
          guarantee = guarantee.as_str(), "Consuming.");

    let mut service = Service {
        config,
        pipeline,
        consumer: &consumer,
        shared: &shared,
        topics,
        source_topics: HashMap::new(),
        meters: Meters::new(config.admin.tenant_label_limit),
        restore_client: client::restore_consumer(config),
        restore: None,
        paused_for_backpressure: false,
        paused_poisoned: BTreeSet::new(),
        heartbeat: &heartbeat,
        reset,
        commit_now: false,
        fenced: Vec::new(),
    };
    let mut next_commit = Instant::now() + config.kafka.commit_interval;
    let mut next_prune = Instant::now() + PRUNE_EVERY;
    let outcome = loop {
        heartbeat.beat();
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let Err(error) = service.check_fatal() {
            break Err(error);
        }
        if let Err(error) = service.restore_step() {
            break Err(error);
        }
        if let Err(error) = service.abort_if_needed() {
            break Err(error);
        }
        service.backpressure();
        let timeout = next_commit.saturating_duration_since(Instant::now()).min(POLL_MAX);
        if let Some(polled) = consumer.poll(timeout) {
            match polled {
                Ok(message) => {
                    if let Err(error) = service.process(&message) {
                        break Err(error);
                    }
                }
                Err(error) => {
                    if let Some((_, reason)) = consumer.client().fatal_error() {
                        events::fatal("consumer", &reason);
                        break Err(RuntimeError::Fatal { client: "consumer", reason });
                    }
                    warn!(%error, "Consumer error.");
                }
            }
        }
        lock(&shared).settle_ready();
        if Instant::now() >= next_commit || std::mem::take(&mut service.commit_now) {
            next_commit = Instant::now() + config.kafka.commit_interval;
            service.commit_tick();
        } else if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_EVERY;
            service.prune();
        }
        if let Some(receiver) = queries.as_mut() {
            match receiver.try_recv() {
                Ok(query) => service.answer(query),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => queries = None,
            }
        }
    };
    if let Some(task) = service.restore.take() {
        task.cancel.store(true, Ordering::Relaxed);
    }
    let drained = match outcome {
        Ok(()) => service.drain(),
        Err(error) => {
            consumer.unsubscribe();
            return Err(error);
        }
    };
    let mut state = lock(&shared);
    // The consumer's close revokes its partitions: commit only, no second wait.
    state.closing = true;
    state.summary.drained = drained;
    let summary = state.summary.clone();
    let in_flight = state.outbox.tracker.in_flight();
    drop(state);
    if drained {
        info!(consumed = summary.consumed, "Drained and committed; stopping.");
    } else {
        warn!(in_flight, "Grace period over; uncommitted input is processed again on restart.");
    }
    consumer.unsubscribe();
    Ok(summary)
}

struct Service<'s, P: Processor> {
    config: &'s Config,
    pipeline: &'s P,
    consumer: &'s BaseConsumer<ConsumerCtx<P::State>>,
    shared: &'s Arc<Mutex<Shared<P::State>>>,
    topics: Topics,
    /// Shared topic names (one allocation per topic, not per record).
    source_topics: HashMap<String, Arc<str>>,
    meters: Meters,
    restore_client: ClientConfig,
    /// The restore running now (one at a time: it covers every partition waiting when it
    /// starts).
    restore: Option<RestoreTask<P::State>>,
    paused_for_backpressure: bool,
    paused_poisoned: BTreeSet<TopicPartition>,
    heartbeat: &'s Heartbeat,
    reset: Offset,
    /// Commit at the next turn, whatever the interval says (exactly once, caught up after
    /// an abort).
    commit_now: bool,
    /// When the producer was last fenced (exactly once).
    fenced: Vec<Instant>,
}

/// A producer fenced (or broken) more often than this within `FENCED_WINDOW` is not replaced
/// again: two instances share a transactional id (a configuration error), or something
/// lasting is wrong, and the service stops.
const FENCED_MAX: usize = 10;
const FENCED_WINDOW: Duration = Duration::from_secs(300);

impl<P: Processor> Service<'_, P> {
    fn check_fatal(&self) -> Result<(), RuntimeError> {
        let mut shared = lock(self.shared);
        if let Some(reason) = shared.fatal.clone() {
            events::fatal("producer", &reason);
            return Err(RuntimeError::Fatal { client: "producer", reason });
        }
        if let Some((_, reason)) = shared.outbox.producer.client().fatal_error() {
            if !shared.delivery.reroutes_refusals() {
                // Exactly once: fenced, or failed for good, a new producer with the same
                // transactional id goes on (see `abort_if_needed`; its initialization fails
                // at once when the cause is lasting, e.g. not authorized).
                shared.must_reset.get_or_insert(reason);
                return Ok(());
            }
            events::fatal("producer", &reason);
            return Err(RuntimeError::Fatal { client: "producer", reason });
        }
        Ok(())
    }

    /// Exactly once: a transaction that cannot commit is aborted, and its partitions processed
    /// again from their committed offsets over restored state; a fenced (or broken, see
    /// `DeliveryError::Broken`) producer is replaced by a new one with the same
    /// transactional id first (at most `FENCED_MAX` times in
    /// `FENCED_WINDOW`: more is another instance with the same id, and the service stops).
    fn abort_if_needed(&mut self) -> Result<(), RuntimeError> {
        let mut shared = lock(self.shared);
        if let Some(reason) = shared.must_reset.take() {
            let now = Instant::now();
            self.fenced.retain(|at| now.duration_since(*at) < FENCED_WINDOW);
            self.fenced.push(now);
            if self.fenced.len() > FENCED_MAX {
                let reason = format!(
                    "producer replaced {} times within {FENCED_WINDOW:?} (fenced by another instance with kafka.instance_id {:?}, or failing for a lasting cause?): {reason}",
                    self.fenced.len(),
                    self.config.kafka.instance()
                );
                events::fatal("producer", &reason);
                return Err(RuntimeError::Fatal { client: "producer", reason });
            }
            events::fenced(&reason);
            shared.settle_ready();
            let producer =
                shared.outbox.recreate().map_err(|source| RuntimeError::Client { client: "producer", source })?;
            match shared.delivery.replace(producer) {
                Ok(()) => {}
                // A lasting cause (e.g. not authorized): the new producer cannot start either.
                Err(DeliveryError::Fatal(reason)) => {
                    events::fatal("producer", &reason);
                    return Err(RuntimeError::Fatal { client: "producer", reason });
                }
                // Its initialization failed for a passing cause (or hung, as librdkafka can
                // on a dead coordinator): replaced again at the next turn, within the limit.
                Err(error) => {
                    shared.must_reset.get_or_insert(error.to_string());
                    return Ok(());
                }
            }
            shared.must_abort.get_or_insert(reason);
        }
        let Some(reason) = shared.must_abort.clone() else { return Ok(()) };
        shared.settle_ready();
        let rewind = shared.abort(&reason);
        drop(shared);
        rewind.apply(self.consumer, self.reset);
        self.paused_poisoned.extend(rewind.stop);
        Ok(())
    }

    /// Holds back while too much is in flight: first by waiting for acknowledgements, then,
    /// if they do not come, by pausing every partition (the consumer keeps polling, so that
    /// rebalance callbacks still run). Resumes below half the bounds. Stopped partitions stay
    /// paused.
    fn backpressure(&mut self) {
        let max = self.config.kafka.max_in_flight;
        let max_bytes = self.config.kafka.max_in_flight_bytes;
        let mut shared = lock(self.shared);
        let over =
            |shared: &Shared<P::State>| shared.live_in_flight() >= max || shared.outbox.in_flight_bytes >= max_bytes;
        let under = |shared: &Shared<P::State>| {
            shared.live_in_flight() <= max / 2 && shared.outbox.in_flight_bytes <= max_bytes / 2
        };
        if !self.paused_for_backpressure && over(&shared) {
            let deadline = Instant::now() + BACKPRESSURE_WAIT;
            while !under(&shared) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                shared.settle_one(left.min(Duration::from_millis(50)));
                self.heartbeat.beat();
            }
            if over(&shared) {
                self.paused_for_backpressure = set_paused(self.consumer, &shared.assigned, true);
            }
        } else if self.paused_for_backpressure && under(&shared) {
            let runnable = shared.runnable();
            self.paused_for_backpressure = !set_paused(self.consumer, &runnable, false);
        } else if self.paused_for_backpressure {
            // Still over: wait for acknowledgements a little before the next poll.
            shared.settle_one(Duration::from_millis(10));
        }
        let newly: Vec<TopicPartition> =
            shared.poisoned.iter().filter(|tp| !self.paused_poisoned.contains(*tp)).cloned().collect();
        if !newly.is_empty() && set_paused(self.consumer, &newly, true) {
            self.paused_poisoned.extend(newly);
        }
        self.paused_poisoned.retain(|tp| shared.poisoned.contains(tp));
        drop(shared);
    }

    /// Starts the restore of the partitions waiting for their state, or takes one finished.
    fn restore_step(&mut self) -> Result<(), RuntimeError> {
        let Some(task) = &self.restore else {
            self.restore = self.start_restore();
            return Ok(());
        };
        {
            // Nobody waits for it any more: every partition revoked, or assigned again (which
            // starts another restore).
            let shared = lock(self.shared);
            if task.waiting.iter().all(|(tp, number)| shared.restoring.get(tp) != Some(number)) {
                task.cancel.store(true, Ordering::Relaxed);
            }
        }
        if !task.handle.is_finished() {
            return Ok(());
        }
        let task = self.restore.take().expect("checked above");
        let rebuilt = match task.handle.join() {
            Ok(Ok(rebuilt)) => rebuilt,
            // Given up: every partition of the batch was revoked meanwhile.
            Ok(Err(RestoreFailure::Kafka { .. })) => return Ok(()),
            Ok(Err(failure)) => return Err(failure.into()),
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let mut shared = lock(self.shared);
        for Rebuilt { tp, state, records, errors } in rebuilt {
            // Revoked, or assigned again since (a newer restore follows).
            if shared.restoring.get(&tp) != task.waiting.get(&tp) {
                continue;
            }
            shared.summary.restore_errors += errors;
            shared.summary.restored_records += records;
            shared.summary.restored_entries += state.entries() as u64;
            events::restored(&tp, records, errors, state.entries());
            shared.restoring.remove(&tp);
            shared.states.insert(tp.clone(), state);
            // Entries that expired while nobody owned the partition go now (their tombstones
            // with them), before any record is applied to one.
            shared.flush(Some(std::slice::from_ref(&tp)), now_ms());
            if let Some(&position) = shared.unsaved.get(&tp) {
                // Assigned back after a revoke whose commit failed: where it was.
                shared.rewind.remove(&tp);
                let seek =
                    self.consumer.seek(&tp.topic, tp.partition, Offset::Offset(position), Duration::from_secs(10));
                if let Err(error) = seek {
                    let reason = format!("cannot resume {tp} at {position} after its restore: {error}");
                    return Err(RuntimeError::Fatal { client: "consumer", reason });
                }
            } else if shared.rewind.remove(&tp) {
                // Records were taken (and skipped) while it restored, or its transaction
                // aborted: start again where the group committed.
                let start = committed_or(self.consumer, &tp, self.reset);
                let seek = start
                    .and_then(|offset| self.consumer.seek(&tp.topic, tp.partition, offset, Duration::from_secs(10)));
                if let Err(error) = seek {
                    // Not processed from the right place: better stopped than skipping.
                    let reason = format!("cannot rewind {tp} after its restore: {error}");
                    return Err(RuntimeError::Fatal { client: "consumer", reason });
                }
            }
            if !self.paused_for_backpressure && !shared.poisoned.contains(&tp) {
                set_paused(self.consumer, std::slice::from_ref(&tp), false);
            }
        }
        events::restore_finished(task.started.elapsed());
        self.consumer.context().publish_readiness(&shared);
        Ok(())
    }

    /// Starts reading the changelog for every partition waiting for its state, if any.
    fn start_restore(&self) -> Option<RestoreTask<P::State>> {
        let topic = self.pipeline.changelog_topic()?.to_owned();
        let waiting: HashMap<TopicPartition, u64> = lock(self.shared).restoring.clone();
        if waiting.is_empty() {
            return None;
        }
        let partitions: BTreeSet<i32> = waiting.keys().map(|tp| tp.partition).collect();
        info!(topic, partitions = partitions.len(), "Restoring partition state from the changelog.");
        let mut rebuild = Rebuild::new(self.pipeline.state(), waiting.keys().cloned());
        let client = self.restore_client.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let handle = std::thread::Builder::new()
            .name("changelog-restore".to_owned())
            .spawn(move || {
                let give_up = || cancelled.load(Ordering::Relaxed);
                restore::read(&client, &topic, &partitions, give_up, |read| rebuild.apply(read))?;
                Ok(rebuild.into_partitions())
            })
            // As `std::thread::spawn`: out of threads, the process is in no state to go on.
            .expect("cannot start the changelog restore thread");
        Some(RestoreTask { handle, waiting, cancel, started: Instant::now() })
    }

    /// One consumed record: the core, then its outputs sent.
    fn process(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) -> Result<(), RuntimeError> {
        let topic = intern(&mut self.source_topics, message.topic());
        let tp = TopicPartition { topic: topic.clone(), partition: message.partition() };
        let offset = message.offset();
        {
            let mut shared = lock(self.shared);
            // A stale fetch of a partition no longer ours, or a stopped partition: not
            // processed, so nothing can be committed for it here.
            if !shared.assigned.contains(&tp) || shared.poisoned.contains(&tp) {
                debug!(topic = %tp.topic, partition = tp.partition, offset, "Skipped a record of a partition not processed now.");
                return Ok(());
            }
            // Fetched before the pause of a partition being restored took hold (or left from an
            // earlier assignment): fetched again once the state is back.
            if shared.restoring.contains_key(&tp) {
                shared.rewind.insert(tp);
                return Ok(());
            }
        }
        let consumed_at = Instant::now();
        self.meters.consumed(&topic);
        let source = Source { topic, partition: message.partition(), offset };
        let mut record = Record::new(message.key(), message.payload().unwrap_or_default(), source);
        let repartition = self.pipeline.repartition_topic();
        let tenant_topic = self.pipeline.tenant_topic();
        // Input re-keyed through the repartition topic: from an input topic, only re-keyed;
        // from the repartition topic, processed as the upstream record it carries (lineage and
        // key), at its position in the repartition partition.
        let rekey_into = repartition.filter(|topic| *tp.topic != **topic && tenant_topic != Some(&*tp.topic));
        let from_tenant_topic = tenant_topic == Some(&*tp.topic);
        if (repartition.is_some() && rekey_into.is_none()) || from_tenant_topic {
            if let Some(upstream) = repartition::upstream(message.headers()) {
                record.key = upstream.key;
                let source_topics = &mut self.source_topics;
                record.source = upstream.source(|name| intern(source_topics, name));
            }
        }
        let now = now_ms();
        let mut shared = lock(self.shared);
        let (step, hold) = match rekey_into {
            Some(topic) => match self.pipeline.rekey(&record, now) {
                Ok(key) => (Step::Rekeyed { topic, key }, false),
                Err(dead) => (Step::Dead(dead), false),
            },
            None => {
                let pipeline = self.pipeline;
                let state = shared.states.entry(tp.clone()).or_insert_with(|| pipeline.state());
                let step = if from_tenant_topic {
                    let matched = repartition::matched_rules(message.headers());
                    match pipeline.process_tenant(&record, &matched, state, now) {
                        Ok(alerts) => Step::Tenant(alerts),
                        Err(dead) => Step::Dead(dead),
                    }
                } else {
                    match pipeline.process(&record, state, now) {
                        Outcome::Event { output, alerts, incidents, forward, facts } => {
                            self.meters.event(&facts, now);
                            Step::Event { output, alerts, incidents, forward, tenant: facts.tenant.into_owned() }
                        }
                        Outcome::DeadLetter(dead) => Step::Dead(dead),
                    }
                };
                // Its state change is written with the next flush.
                (step, shared.names.changelog.is_some())
            }
        };
        let refused = shared.refusals.get(&(tp.clone(), offset)).cloned();
        let to = Destinations { dead_letter: self.pipeline.dead_letter_topic(), tenant: tenant_topic };
        // The record's tenant, for its dead letter if its outputs are refused: the event's, or
        // the key of a tenant-topic record.
        let tenant: Option<String> = match &step {
            Step::Event { tenant, .. } => Some(tenant.clone()),
            Step::Tenant(_) => record.key.and_then(|key| std::str::from_utf8(key).ok()).map(str::to_owned),
            Step::Rekeyed { .. } | Step::Dead(_) => None,
        };
        let pipeline = self.pipeline;
        let produce_failed = |detail: String| pipeline.produce_failed(detail, tenant.as_deref());
        let plan =
            plan::plan(step, &record, &to, from_tenant_topic, refused.as_ref().map(|r| (r, &produce_failed as _)), now);
        drop(shared);
        for out in &plan.outgoing {
            match out.role {
                Role::Alert => {
                    if let plan::Body::Alert(alerted) = &out.body {
                        self.topics.ensure(alerted.topic());
                        Meters::alert(alerted.rule(), alerted.severity);
                    }
                }
                Role::DeadLetter => {
                    if let Some(dead) = &plan.dead {
                        Meters::dead_letter(dead.rejection.code);
                    }
                }
                Role::Event => {
                    self.topics.ensure(&out.output().topic);
                    if let Some(tenant) = &tenant {
                        self.topics.ensure_tenant(tenant);
                    }
                }
                Role::Incident => self.topics.ensure_compacted(&out.output().topic),
                Role::TenantTopic | Role::Repartition => {}
            }
        }
        let mut shared = lock(self.shared);
        let tally = plan.tally;
        let summary = &mut shared.summary;
        summary.consumed += tally.consumed;
        summary.events += tally.events;
        summary.dead_letters += tally.dead_letters;
        summary.repartitioned += tally.repartitioned;
        summary.tenant_records += tally.tenant_records;
        summary.alerts += tally.alerts;
        summary.incidents += tally.incidents;
        summary.tenant_forwarded += tally.tenant_forwarded;
        let outputs = plan.outgoing.len();
        let ticket = if hold {
            shared.outbox.tracker.begin_held(&tp, offset, outputs)
        } else {
            shared.outbox.tracker.begin(&tp, offset, outputs)
        };
        // The input copy, kept for a dead letter, by the outputs that fall back to it.
        let inputs = plan.outgoing.iter().filter(|o| o.role != Role::DeadLetter).count() as u32;
        let input = (inputs > 0).then(|| Input::new(&record, inputs, produce_failed(String::new())));
        let mut input_bytes = input.as_ref().map_or(0, |input| input.bytes());
        for (index, out) in plan.outgoing.iter().enumerate() {
            let output = out.output();
            let fallback = match (&input, out.role) {
                (Some(input), role) if role != Role::DeadLetter => Fallback::Input { input: input.clone(), role },
                _ => match &plan.dead {
                    Some(dead) => Fallback::DeadLetter {
                        dead: Box::new(dead.clone()),
                        key: record.key.map(Box::from),
                        output: output.headers.iter().find(|(name, _)| *name == OUTPUT).map(|(_, v)| v.to_string()),
                    },
                    None => Fallback::Nothing,
                },
            };
            // Held until acknowledged: librdkafka's copy of the output, and the input copy
            // (counted with the first output that holds it).
            let bytes = output.key.as_deref().map_or(0, <[u8]>::len)
                + output.value.len()
                + if matches!(fallback, Fallback::Input { .. }) { std::mem::take(&mut input_bytes) } else { 0 };
            let own = matches!(out.role, Role::Event | Role::DeadLetter | Role::Repartition);
            let pending = Box::new(Pending {
                ticket,
                acks: 1,
                tp: tp.clone(),
                offset,
                index,
                bytes,
                fallback,
                kind: out.role.published(),
                consumed_at: own.then_some(consumed_at),
            });
            shared.send(Raw::output(&output, out.headers.clone()), pending);
        }
        if shared.caught_up(&tp, offset + 1) {
            self.commit_now = true;
        }
        let live = shared.live_in_flight();
        let bytes = shared.outbox.in_flight_bytes;
        shared.summary.peak_in_flight = shared.summary.peak_in_flight.max(live);
        shared.summary.peak_in_flight_bytes = shared.summary.peak_in_flight_bytes.max(bytes);
        Ok(())
    }

    /// The commit interval is over: state changes flushed, work committed.
    fn commit_tick(&mut self) {
        let mut shared = lock(self.shared);
        shared.settle_ready();
        if shared.must_abort.is_some() {
            return;
        }
        if shared.delivery.reroutes_refusals() {
            // At least once: what was kept for a replay below the positions already durable
            // goes first (the flush does not write it); the flush's records are committed at
            // the next tick (or on revoke or shutdown, which wait for them).
            let positions = shared.positions(&super::delivery::GroupConsumer::app_positions(self.consumer));
            shared.committed(&positions);
            shared.flush(None, now_ms());
            shared.commit(self.consumer, false);
        } else {
            // Exactly once: the state changes go into the transaction, which commits the
            // positions of every record processed in it.
            shared.flush(None, now_ms());
            shared.commit(self.consumer, true);
        }
        let sessions: usize = shared.states.values().map(PartitionState::entries).sum();
        metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(shared.assigned.len() as f64);
        metrics::gauge!(telemetry::IN_FLIGHT).set(shared.live_in_flight() as f64);
        metrics::gauge!(telemetry::ACTIVE_SESSIONS).set(sessions as f64);
    }

    /// Lets go of what the partition states keep for a replay below what is published.
    fn prune(&mut self) {
        let mut shared = lock(self.shared);
        shared.settle_ready();
        shared.prune();
    }

    fn answer(&self, query: super::runtime::SessionQuery) {
        let shared = lock(self.shared);
        let found = shared.states.iter().find_map(|(tp, state)| {
            let session = state.describe(&query.id)?;
            Some(serde_json::json!({
                "input": {"topic": &*tp.topic, "partition": tp.partition},
                "session": session,
            }))
        });
        let _ = query.reply.send(found);
    }

    /// Stop: state changes written, in-flight outputs drained, work committed, within the
    /// grace period. True when nothing is left behind.
    fn drain(&mut self) -> bool {
        let deadline = Instant::now() + self.config.shutdown.grace;
        let mut shared = lock(self.shared);
        shared.settle_ready();
        if let Some(reason) = shared.must_abort.clone() {
            // Exactly once: the open transaction cannot commit; its input is processed again.
            let _ = shared.abort(&reason);
            return false;
        }
        shared.flush(None, now_ms());
        if !shared.delivery.reroutes_refusals() {
            let committed = shared.commit(self.consumer, true);
            shared.settle_ready();
            return committed && shared.must_abort.is_none() && shared.poisoned.is_empty();
        }
        let drained = loop {
            shared.settle_ready();
            if shared.live_in_flight() == 0 {
                break shared.poisoned.is_empty();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            shared.settle_one(left.min(Duration::from_millis(100)));
            self.heartbeat.beat();
        };
        shared.commit(self.consumer, true);
        drained
    }
}

/// The shared name of a topic (one allocation per topic, not per record).
fn intern(topics: &mut HashMap<String, Arc<str>>, name: &str) -> Arc<str> {
    match topics.get(name) {
        Some(topic) => topic.clone(),
        None => topics.entry(name.to_owned()).or_insert_with(|| Arc::from(name)).clone(),
    }
}
