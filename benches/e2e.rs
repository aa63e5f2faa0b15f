//! End to end, on one broker: (a) a raw pass-through against (b) `acs-stream run`.
//!
//! Both variants run through the very same service loop, `acs_stream::kafka::runtime::run`,
//! with the same `Config` (client settings, `max_in_flight`, commit interval, prefetch), the
//! same offset discipline (commit only what every output of is acknowledged) and the same
//! input topic, each in its own consumer group:
//! - (a) `PassThrough`: republishes each record's key and value unchanged, without headers
//!   (the input records carry none), to one output topic;
//! - (b) the core (`Pipeline`, protobuf output, the default rules): events to the four tenant
//!   topics (with their four headers), alerts to the four alert topics, dead letters (1% of
//!   the corpus) to the dead-letter topic, the session changelog, and the events matching the
//!   tenant-scoped rule forwarded to the tenant topic, where the same service counts them.
//!
//! Corpus: `synth::Generator`, stress profile (seed 42, four tenants, 1% malformed; the mix the
//! figures of BENCHMARKS.md were measured with),
//! the same `ACS_BENCH_EVENTS` records loaded once into the input topic before any round.
//!
//! Window: from the first record handed to the processor (the group join, about 3 s on the
//! mock cluster, is excluded) to the first time a watcher thread, polling every 20 ms with
//! its own client, sees the group's committed offsets equal the input's end offsets (and,
//! for (b), then the tenant topic's). The service is asked to stop when it has processed the
//! N-th record (and, for (b), counted every event it forwarded); it then drains the outputs
//! in flight and commits (the commit timer keeps its default of 5 s, so the end does not
//! wait for a tick). CPU: the process's user + system time (getrusage) over the
//! window; with the mock cluster the broker runs in this process, so its CPU is included.
//!
//! Rounds alternate a, b, a, b, ... (`ACS_BENCH_ROUNDS` pairs, default 3); each round has a
//! fresh group and fresh output topics, and is checked: consumed = N, drained, outputs in
//! the topics = N (pass-through) or events + dead letters = N with the expected dead-letter
//! count and every forwarded event in the tenant topic and counted there (run), nothing
//! truncated by the broker. Any mismatch stops the bench with an error.
//!
//! Run: `cargo bench --bench e2e`. Environment:
//! - `ACS_BENCH_EVENTS`: records (default 60,000; 2,000 when not run by `cargo bench`). The
//!   tenant topic is keyed by tenant: the corpus's four tenants each fill one partition,
//!   about 1.1 KB per forwarded record (the front-end logs with their stack traces), which
//!   the mock cluster truncates beyond 5 MiB: 60,000 fits, 100,000 does not (the check
//!   fails);
//! - `ACS_BENCH_ROUNDS`: pairs of rounds (default 3; 1 when not run by `cargo bench`);
//! - `ACS_BENCH_BROKERS=host:port`: a real broker instead of the in-process mock cluster
//!   (topics created with the admin API, names unique per invocation);
//! - `ACS_BENCH_PARTITIONS`: partitions of every topic, input and outputs (default on the
//!   mock cluster: enough for about 2 MiB of input per partition, at least 32, because the
//!   mock cluster keeps only 5 MiB per partition and silently drops older data; 8 on a
//!   real broker);
//! - `ACS_BENCH_ORDER=abab|abba`: `abba` runs the even rounds' pair as b then a, which
//!   cancels a broker that slows down as it fills (tansu); default `abab`;
//! - `ACS_BENCH_ONLY=a|b`: one variant only (for profiling; no ratio);
//! - `ACS_BENCH_PASSTHROUGH_SHAPE=raw|headers|topics|run`: for analysis, the pass-through's
//!   output takes the shape of the run's: four constant headers like an event's, four topics
//!   chosen by a hash of the key like the tenant topics, or both (`run`: the difference is
//!   then the core's own cost); default `raw`;
//! - `ACS_STREAM__KAFKA__GUARANTEE=exactly_once`: both variants with Kafka transactions (a
//!   real broker only: the mock cluster does not keep offsets committed in a transaction);
//!   outputs are then counted as a `read_committed` consumer reads them;
//! - `ACS_STREAM__...`: configuration overrides, applied to both variants, as for `run`; on
//!   the mock cluster the consumer's `fetch.wait.max.ms` is 50 (see `Bench::config`);
//! - `RUST_LOG`: the service's logs, to stderr.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a smoke test: 2,000
//! records, one round of each.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use acs_stream::commands::demo;
use acs_stream::config::{Config, Guarantee};
use acs_stream::encode::{DeadLetter, Headers, Output};
use acs_stream::kafka::runtime::{self, RunSummary};
use acs_stream::model::ReasonCatalog;
use acs_stream::pipeline::{Alerts, Facts, Outcome, Pipeline, Processor, Record};
use acs_stream::synth::{Generator, SynthOptions};
use anyhow::{Context, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// As in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the watcher asks for the group's committed offsets.
const WATCH_EVERY: Duration = Duration::from_millis(20);
/// A gap between two records this long or longer is counted as idle (waiting for input).
const IDLE_GAP: Duration = Duration::from_millis(100);
/// Average input per partition on the mock cluster (it keeps at most 5 MiB per partition).
const MOCK_BYTES_PER_PARTITION: usize = 2 << 20;
/// The synthetic corpus's tenants (`SynthOptions::default()`).
const TENANTS: usize = 4;

/// (a) Republishes each record unchanged: same key, same value, no headers, one topic. For
/// analysis only (`ACS_BENCH_PASSTHROUGH_SHAPE=run`): four constant headers like an event's,
/// and the records spread over four topics by a hash of the key, like the tenant topics.
struct PassThrough {
    topics: Vec<String>,
    headers: Headers,
    dead_letter_topic: String,
}

impl Processor for PassThrough {
    type State = ();

    fn state(&self) {}

    fn process<'a>(&self, record: &Record<'a>, _state: &mut (), _now_ms: i64) -> Outcome<'a> {
        let topic = match self.topics.as_slice() {
            [one] => one,
            many => {
                let hash = xxhash_rust::xxh3::xxh3_64(record.key.unwrap_or_default());
                &many[(hash % many.len() as u64) as usize]
            }
        };
        let output = Output {
            topic: Cow::Owned(topic.clone()),
            key: record.key.map(Cow::Borrowed),
            value: Cow::Borrowed(record.value),
            headers: self.headers.clone(),
        };
        Outcome::Event {
            output,
            alerts: Default::default(),
            incidents: Vec::new(),
            forward: Default::default(),
            facts: Facts::default(),
        }
    }

    fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }
}

/// A point in time, wall clock and process CPU.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: Duration,
}

impl Mark {
    fn now() -> Mark {
        Mark { at: Instant::now(), cpu: process_cpu() }
    }
}

/// User + system CPU time of the whole process (every thread, the mock broker's included).
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which is valid and
    // large enough; on failure (impossible for RUSAGE_SELF) the zeroed value is read.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// What the measuring wrapper saw.
struct Probe {
    target: u64,
    seen: AtomicU64,
    /// Input records whose event was forwarded to the tenant topic, and tenant-topic records
    /// counted: the service stops once every input record is processed and every forwarded
    /// event counted (the tenant-scoped rules' work is part of the run).
    forwarded: AtomicU64,
    tenant_seen: AtomicU64,
    first: OnceLock<Mark>,
    /// Stops the service: the N-th record was processed and every forwarded event counted,
    /// or the watcher saw everything committed, or it gave up.
    stop: tokio::sync::Notify,
    /// Stop as soon as the work is done (at least once: the drain commits at once, instead of
    /// at the next tick of the 5 s commit timer). Not under exactly-once: the service commits
    /// every 100 ms anyway, and must poll once more after the last tenant-topic record to
    /// step over the transaction marker that follows it (its commit reaches the topic's end
    /// only then, which the watcher waits for).
    stop_early: bool,
    /// Times below are nanoseconds since this instant.
    origin: Instant,
    /// When the last record was handed to the processor.
    last_ns: AtomicU64,
    /// Sum of the gaps of at least `IDLE_GAP` between two records, and the longest gap.
    idle_ns: AtomicU64,
    longest_ns: AtomicU64,
}

impl Probe {
    fn new(target: u64, stop_early: bool) -> Probe {
        Probe {
            target,
            stop_early,
            seen: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            tenant_seen: AtomicU64::new(0),
            first: OnceLock::new(),
            stop: tokio::sync::Notify::new(),
            origin: Instant::now(),
            last_ns: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            longest_ns: AtomicU64::new(0),
        }
    }

    fn nanos(&self, value: &AtomicU64) -> Duration {
        Duration::from_nanos(value.load(Ordering::Relaxed))
    }

    /// Stops the service once every input record is processed and every event forwarded to
    /// the tenant topic is counted there.
    fn stop_when_done(&self) {
        let seen = self.seen.load(Ordering::Relaxed);
        if self.stop_early
            && seen >= self.target
            && self.tenant_seen.load(Ordering::Relaxed) >= self.forwarded.load(Ordering::Relaxed)
        {
            // Its output is sent before the loop looks at the shutdown future again.
            self.stop.notify_one();
        }
    }
}

/// Wraps either variant identically: marks the first record, stops after the N-th (and
/// the last forwarded event counted); every other method is the inner processor's.
struct Timed<'p, P> {
    inner: &'p P,
    probe: &'p Probe,
}

impl<P: Processor> Processor for Timed<'_, P> {
    type State = P::State;

    fn state(&self) -> P::State {
        self.inner.state()
    }

    #[inline]
    fn process<'a>(&self, record: &Record<'a>, state: &mut P::State, now_ms: i64) -> Outcome<'a> {
        let probe = self.probe;
        let seen = probe.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if seen == 1 {
            let _ = probe.first.set(Mark::now());
        }
        // One task calls this, record after record: relaxed atomics only make `Probe` Sync.
        let now = probe.origin.elapsed().as_nanos() as u64;
        let previous = probe.last_ns.swap(now, Ordering::Relaxed);
        if seen > 1 {
            let gap = now.saturating_sub(previous);
            if gap >= IDLE_GAP.as_nanos() as u64 {
                probe.idle_ns.fetch_add(gap, Ordering::Relaxed);
            }
            probe.longest_ns.fetch_max(gap, Ordering::Relaxed);
        }
        let outcome = self.inner.process(record, state, now_ms);
        if matches!(&outcome, Outcome::Event { forward, .. } if !forward.is_empty()) && self.tenant_topic().is_some() {
            probe.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        probe.stop_when_done();
        outcome
    }

    // Every other method is the inner processor's: a default here would switch a part of
    // the service off (the tenant topic, the repartition topic) and leave its work unmeasured.

    fn dead_letter_topic(&self) -> &str {
        self.inner.dead_letter_topic()
    }

    fn changelog_topic(&self) -> Option<&str> {
        self.inner.changelog_topic()
    }

    fn repartition_topic(&self) -> Option<&str> {
        self.inner.repartition_topic()
    }

    fn rekey(&self, record: &Record<'_>, now_ms: i64) -> Result<Vec<u8>, DeadLetter> {
        self.inner.rekey(record, now_ms)
    }

    fn tenant_topic(&self) -> Option<&str> {
        self.inner.tenant_topic()
    }

    fn process_tenant<'a>(
        &self,
        record: &Record<'a>,
        matched: &[&str],
        state: &mut P::State,
        now_ms: i64,
    ) -> Result<Alerts, DeadLetter> {
        let result = self.inner.process_tenant(record, matched, state, now_ms);
        self.probe.tenant_seen.fetch_add(1, Ordering::Relaxed);
        self.probe.stop_when_done();
        result
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    PassThrough,
    Run,
}

impl Variant {
    fn label(self, shape: Shape) -> &'static str {
        match (self, shape) {
            (Variant::Run, _) => "(b) acs-stream run",
            (Variant::PassThrough, Shape { headers: false, topics: false }) => "(a) pass-through",
            (Variant::PassThrough, Shape { headers: true, topics: false }) => "(a) pass-through, 4 headers",
            (Variant::PassThrough, Shape { headers: false, topics: true }) => "(a) pass-through, 4 topics",
            (Variant::PassThrough, Shape { headers: true, topics: true }) => "(a) pass-through, 4 headers, 4 topics",
        }
    }
}

/// The pass-through's output: raw (no headers, one topic), or shaped like the run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Four constant headers, like an event's.
    headers: bool,
    /// Four topics, chosen by a hash of the key, like the tenant topics.
    topics: bool,
}

impl Variant {
    fn tag(self) -> char {
        match self {
            Variant::PassThrough => 'a',
            Variant::Run => 'b',
        }
    }
}

/// One measured round.
#[derive(Debug, Clone, Copy)]
struct Measure {
    wall: Duration,
    cpu: Duration,
    /// From starting the service to its first record (group join): not measured.
    startup: Duration,
    /// Sum of the gaps of 100 ms or more between two records, and the longest gap.
    idle: Duration,
    longest_gap: Duration,
    /// From the last record to the commits seen (drain and final commit).
    tail: Duration,
    /// Events forwarded to the tenant topic (and counted there).
    forwarded: u64,
}

struct Settings {
    events: usize,
    rounds: usize,
    brokers: Option<String>,
    partitions: Option<i32>,
    variants: Vec<Variant>,
    shape: Shape,
    /// Rounds ordered a, b, b, a, a, b, ... instead of a, b, a, b, ...
    abba: bool,
}

fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => {
            text.trim().replace('_', "").parse().map(Some).map_err(|_| anyhow::anyhow!("{name}={text}: not a number"))
        }
        _ => Ok(None),
    }
}

impl Settings {
    fn from_env(full: bool) -> anyhow::Result<Settings> {
        let events = env_number("ACS_BENCH_EVENTS")?.unwrap_or(if full { 60_000 } else { 2_000 });
        let rounds = env_number("ACS_BENCH_ROUNDS")?.unwrap_or(if full { 3 } else { 1 });
        let partitions = env_number("ACS_BENCH_PARTITIONS")?;
        ensure!(events > 0 && rounds > 0, "ACS_BENCH_EVENTS and ACS_BENCH_ROUNDS must be at least 1");
        ensure!(partitions.is_none_or(|p| p > 0), "ACS_BENCH_PARTITIONS must be at least 1");
        let brokers = std::env::var("ACS_BENCH_BROKERS").ok().filter(|b| !b.trim().is_empty());
        let variants = match std::env::var("ACS_BENCH_ONLY").as_deref().map(str::trim) {
            Err(_) | Ok("") => vec![Variant::PassThrough, Variant::Run],
            Ok("a") => vec![Variant::PassThrough],
            Ok("b") => vec![Variant::Run],
            Ok(other) => bail!("ACS_BENCH_ONLY={other}: a or b"),
        };
        let (headers, topics) = match std::env::var("ACS_BENCH_PASSTHROUGH_SHAPE").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("raw") => (false, false),
            Ok("headers") => (true, false),
            Ok("topics") => (false, true),
            Ok("run") => (true, true),
            Ok(other) => bail!("ACS_BENCH_PASSTHROUGH_SHAPE={other}: raw, headers, topics or run"),
        };
        let abba = match std::env::var("ACS_BENCH_ORDER").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("abab") => false,
            Ok("abba") => true,
            Ok(other) => bail!("ACS_BENCH_ORDER={other}: abab or abba"),
        };
        Ok(Settings { events, rounds, brokers, partitions, variants, shape: Shape { headers, topics }, abba })
    }
}

/// The broker under test: the in-process mock cluster, or a real one.
enum Broker {
    /// Kept alive for the whole bench: dropping it stops the cluster.
    Mock(MockCluster<'static, DefaultProducerContext>),
    Real,
}

struct Bench {
    broker: Broker,
    brokers: String,
    partitions: i32,
    runtime: tokio::runtime::Runtime,
    /// Unique per invocation: topic and group names.
    run_id: String,
    input: String,
    events: usize,
    malformed: usize,
    shape: Shape,
    /// `kafka.guarantee = "exactly_once"` (an `ACS_STREAM__KAFKA__GUARANTEE` override): both
    /// variants run transactions.
    exactly_once: bool,
}

impl Bench {
    fn create_topics(&self, names: &[String]) -> anyhow::Result<()> {
        match &self.broker {
            Broker::Mock(cluster) => {
                for name in names {
                    cluster.create_topic(name, self.partitions, 1).with_context(|| format!("creating {name}"))?;
                }
            }
            Broker::Real => {
                let admin: AdminClient<DefaultClientContext> =
                    ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
                let new: Vec<NewTopic<'_>> =
                    names.iter().map(|name| NewTopic::new(name, self.partitions, TopicReplication::Fixed(1))).collect();
                let results = self.runtime.block_on(admin.create_topics(&new, &AdminOptions::new()))?;
                for result in results {
                    if let Err((topic, code)) = result {
                        bail!("cannot create {topic}: {code}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Records in `topic`, checking that the broker dropped none (low watermark 0). Under
    /// exactly-once, the records a `read_committed` consumer reads (each transaction's
    /// markers take offsets: the end offsets do not count records).
    fn count(&self, consumer: &BaseConsumer, topic: &str) -> anyhow::Result<i64> {
        if self.exactly_once {
            return self.count_committed(topic);
        }
        let mut total = 0;
        for partition in 0..self.partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}[{partition}]"))?;
            ensure!(low == 0, "{topic}[{partition}]: the broker dropped records (low watermark {low})");
            total += high;
        }
        Ok(total)
    }

    /// The records of `topic` a `read_committed` consumer reads, to the end.
    fn count_committed(&self, topic: &str) -> anyhow::Result<i64> {
        use rdkafka::error::KafkaError;
        use rdkafka::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "e2e-bench-count")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        for partition in 0..self.partitions {
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        let mut open: std::collections::BTreeSet<i32> = (0..self.partitions).collect();
        let (mut total, started) = (0, Instant::now());
        while !open.is_empty() {
            ensure!(started.elapsed() < Duration::from_secs(120), "{topic}: not read to its end: {open:?} left");
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => total += 1,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    open.remove(&partition);
                }
                Some(Err(error)) => return Err(error).with_context(|| format!("reading {topic}")),
                None => {}
            }
        }
        Ok(total)
    }

    fn config(&self, prefix: &str) -> anyhow::Result<Config> {
        let mut file = format!(
            "[output]\nevents_topic = \"{prefix}.{{tenant}}.events\"\nalerts_topic = \"{prefix}.{{tenant}}.alerts\"\n\
             dead_letter_topic = \"{prefix}.dlq\"\n\
             [kafka]\nbrokers = \"{}\"\ngroup_id = \"{prefix}\"\ninput_topics = [\"{}\"]\n[topics]\ncreate = false\n",
            self.brokers, self.input
        );
        if matches!(self.broker, Broker::Mock(_)) {
            // The mock cluster answers a fetch that found no data only when its wait is over,
            // even if data arrives meanwhile (rdkafka_mock_handlers.c says so); a real broker
            // answers at once. With the default 500 ms, the tenant topic's last records,
            // written after the input is read, would wait up to that long.
            file.push_str("[kafka.consumer]\n\"fetch.wait.max.ms\" = \"50\"\n");
        }
        Ok(Config::layered(Some(("e2e bench", &file)), std::env::vars())?)
    }

    /// Runs one variant once, checks its outputs, returns what was measured.
    fn round(&self, variant: Variant, round: usize) -> anyhow::Result<Measure> {
        let prefix = format!("bench-{}.{}{round}", self.run_id, variant.tag());
        let config = self.config(&prefix)?;
        let dead_letter_topic = config.output.dead_letter_topic.clone();
        let outputs: Vec<String> = match variant {
            Variant::PassThrough if self.shape.topics => (1..=TENANTS).map(|n| format!("{prefix}.out-{n}")).collect(),
            Variant::PassThrough => vec![format!("{prefix}.out")],
            Variant::Run => (1..=TENANTS).map(|n| format!("{prefix}.tenant-{n:02}.events")).collect(),
        };
        let mut created = outputs.clone();
        created.push(dead_letter_topic.clone());
        // The alerts' topics: a broker that does not create topics on first use (Apache
        // Kafka as the tests run it) refuses the alerts otherwise.
        if variant == Variant::Run {
            created.extend((1..=TENANTS).map(|n| format!("{prefix}.tenant-{n:02}.alerts")));
        }
        // The run writes its session changelog and the tenant topic too (the mock cluster
        // cannot create topics).
        let tenant_topic = config.tenant_topic().filter(|_| variant == Variant::Run);
        if let (Variant::Run, Some(changelog)) = (variant, config.changelog_topic()) {
            created.push(changelog);
        }
        created.extend(tenant_topic.clone());
        self.create_topics(&created)?;

        let pipeline = match variant {
            Variant::PassThrough => None,
            Variant::Run => Some(Pipeline::new(&config, ReasonCatalog::builtin())?),
        };
        let probe = Probe::new(self.events as u64, !self.exactly_once);
        let ended = AtomicBool::new(false);
        let patience = Duration::from_secs(120) + Duration::from_millis(self.events as u64);
        let (started, summary, end) = std::thread::scope(|scope| {
            let (brokers, input) = (&self.brokers, (self.input.as_str(), self.partitions));
            let tenant = tenant_topic.as_deref().map(|topic| (topic, self.partitions));
            let (prefix, probe_ref, ended_ref) = (&prefix, &probe, &ended);
            let watcher = scope.spawn(move || watch(brokers, input, tenant, prefix, probe_ref, ended_ref, patience));
            let started = Instant::now();
            let shutdown = probe.stop.notified();
            let summary = match &pipeline {
                None => {
                    let headers: Headers = if self.shape.headers {
                        [
                            ("content-type", "application/x-protobuf"),
                            ("acs-schema", "acs.v1.EnrichedEvent"),
                            ("acs-actor", "test-taker"),
                            ("acs-action", "pause"),
                        ]
                        .into_iter()
                        .map(|(name, value)| (name, Cow::Borrowed(value)))
                        .collect()
                    } else {
                        Headers::new()
                    };
                    let inner =
                        PassThrough { topics: outputs.clone(), headers, dead_letter_topic: dead_letter_topic.clone() };
                    self.runtime.block_on(runtime::run(&config, &Timed { inner: &inner, probe: &probe }, shutdown))
                }
                Some(inner) => self.runtime.block_on(runtime::run(&config, &Timed { inner, probe: &probe }, shutdown)),
            };
            if !matches!(summary, Ok(RunSummary { drained: true, .. })) {
                // The committed offsets will not reach the end: let the watcher go.
                ended.store(true, Ordering::Relaxed);
            }
            let end = watcher.join().expect("the watcher does not panic");
            anyhow::Ok((started, summary?, end?))
        })?;
        let first = *probe.first.get().context("no record was processed")?;

        // Honest: every record processed once and every output in its topic.
        let n = self.events as u64;
        ensure!(summary.drained, "{} round {round}: not drained: {summary:?}", variant.label(self.shape));
        ensure!(
            summary.consumed == n,
            "{} round {round}: consumed {} of {n}",
            variant.label(self.shape),
            summary.consumed
        );
        ensure!(
            summary.produce_failed == 0,
            "{} round {round}: outputs refused: {summary:?}",
            variant.label(self.shape)
        );
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
        let mut written = 0;
        for topic in &outputs {
            written += self.count(&consumer, topic)?;
        }
        let dead = self.count(&consumer, &dead_letter_topic)?;
        match variant {
            Variant::PassThrough => {
                ensure!(
                    written == n as i64 && dead == 0,
                    "pass-through round {round}: {written} records out and {dead} dead letters for {n} in"
                );
            }
            Variant::Run => {
                // The tenant topic is keyed by tenant: the corpus's four tenants fill four of
                // its partitions, which the mock cluster truncates beyond 5 MiB.
                let tenant_topic = tenant_topic.as_deref().context("the run has a tenant topic")?;
                let in_tenant_topic = self.count(&consumer, tenant_topic)?;
                ensure!(
                    summary.tenant_forwarded > 0
                        && summary.tenant_records == summary.tenant_forwarded
                        && in_tenant_topic == summary.tenant_forwarded as i64,
                    "run round {round}: {} events forwarded to the tenant topic, {in_tenant_topic} in it, {} counted",
                    summary.tenant_forwarded,
                    summary.tenant_records
                );
                ensure!(
                    summary.events + summary.dead_letters == n
                        && written == summary.events as i64
                        && dead == summary.dead_letters as i64
                        && dead == self.malformed as i64,
                    "run round {round}: {written} events and {dead} dead letters in the topics for {n} records \
                     ({} malformed); the service counted {summary:?}",
                    self.malformed
                );
            }
        }
        let last = probe.origin + probe.nanos(&probe.last_ns);
        Ok(Measure {
            wall: end.at - first.at,
            cpu: end.cpu.saturating_sub(first.cpu),
            startup: first.at - started,
            idle: probe.nanos(&probe.idle_ns),
            longest_gap: probe.nanos(&probe.longest_ns),
            tail: end.at.saturating_duration_since(last),
            forwarded: summary.tenant_forwarded,
        })
    }
}

/// Waits until the group has committed the input to its end, then (with a tenant topic: its
/// name and partitions) the tenant topic to its end as it stands once the input is
/// committed (complete then: an event's forward is acknowledged before its offset is
/// committed); the moment it sees that is the end of the window. Gives up after `patience`
/// (and stops the service), or when the service ended without draining.
#[allow(clippy::too_many_arguments)]
fn watch(
    brokers: &str,
    input: (&str, i32),
    tenant: Option<(&str, i32)>,
    group: &str,
    probe: &Probe,
    ended: &AtomicBool,
    patience: Duration,
) -> anyhow::Result<Mark> {
    let topics: Vec<(String, i32)> =
        std::iter::once(input).chain(tenant).map(|(topic, partitions)| (topic.to_owned(), partitions)).collect();
    let committed =
        demo::wait_committed(brokers, group, &topics, patience, WATCH_EVERY, || ended.load(Ordering::Relaxed));
    // Everything is committed, or never will be: the window is over, whether or not the
    // service has stopped itself (it has not when records of the tenant topic were lost: the
    // checks say so).
    probe.stop.notify_one();
    committed.with_context(|| format!("{group}: {} records processed", probe.seen.load(Ordering::Relaxed)))?;
    Ok(Mark::now())
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 }
}

fn range(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

/// `median (min – max)` with `digits` decimals, scaled by `scale`.
fn stat(values: &[f64], scale: f64, digits: usize, unit: &str) -> String {
    let (lo, hi) = range(values);
    let m = median(values);
    if values.len() == 1 {
        return format!("{:.digits$}{unit}", m / scale);
    }
    format!("{:.digits$}{unit} ({:.digits$} – {:.digits$})", m / scale, lo / scale, hi / scale)
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|arg| arg == "--bench");
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let settings = Settings::from_env(full)?;
    if !full {
        eprintln!(
            "e2e: smoke test ({} records, {} round of each); `cargo bench --bench e2e` measures",
            settings.events, settings.rounds
        );
    }

    eprintln!("e2e: generating {} records ...", settings.events);
    let corpus = Generator::new(SynthOptions::stress()).take_records(settings.events);
    let malformed = corpus.iter().filter(|r| r.malformed).count();
    let bytes: usize = corpus.iter().map(|r| r.key.len() + r.value.len()).sum();

    let run_id = format!("{}-{}", std::process::id(), now_nanos() % 1_000_000_000);
    let (broker, brokers, partitions, where_) = match &settings.brokers {
        None => {
            let cluster = MockCluster::new(1)?;
            let brokers = cluster.bootstrap_servers();
            let partitions =
                settings.partitions.unwrap_or_else(|| bytes.div_ceil(MOCK_BYTES_PER_PARTITION).max(32) as i32);
            (Broker::Mock(cluster), brokers, partitions, "librdkafka mock cluster, in process (its CPU is included)")
        }
        Some(brokers) => {
            (Broker::Real, brokers.clone(), settings.partitions.unwrap_or(8), "real broker (CPU: this process only)")
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let bench = Bench {
        broker,
        brokers,
        partitions,
        runtime,
        input: format!("bench-{run_id}.raw"),
        run_id,
        events: settings.events,
        malformed,
        shape: settings.shape,
        exactly_once: false,
    };
    let bench = Bench { exactly_once: bench.config("probe")?.kafka.guarantee == Guarantee::ExactlyOnce, ..bench };
    ensure!(
        !(bench.exactly_once && matches!(bench.broker, Broker::Mock(_))),
        "exactly-once needs a real broker (ACS_BENCH_BROKERS): the mock cluster does not keep offsets committed in a \
         transaction"
    );
    eprintln!(
        "e2e: {} at {}; input {} with {partitions} partitions; loading {} records ({malformed} malformed, {:.1} MB) ...",
        where_,
        bench.brokers,
        bench.input,
        settings.events,
        bytes as f64 / 1e6
    );
    bench.create_topics(std::slice::from_ref(&bench.input))?;
    let loading = Instant::now();
    demo::produce(&bench.brokers, &bench.input, corpus).context("loading the corpus")?;
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bench.brokers).create()?;
    let loaded = bench.count(&consumer, &bench.input)?;
    ensure!(loaded == settings.events as i64, "{loaded} records in the input topic, {} produced", settings.events);
    eprintln!("e2e: loaded in {:.1} s", loading.elapsed().as_secs_f64());

    let mut results: [Vec<Measure>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=settings.rounds {
        let order = if settings.abba && round % 2 == 0 {
            [(1, Variant::Run), (0, Variant::PassThrough)]
        } else {
            [(0, Variant::PassThrough), (1, Variant::Run)]
        };
        for (slot, variant) in order {
            if !settings.variants.contains(&variant) {
                continue;
            }
            let measure = bench.round(variant, round)?;
            eprintln!(
                "e2e: round {round} {}: {} records in {:.3} s = {:.0} records/s; CPU {:.2} s = {:.2} s per million; \
                 idle gaps {:.2} s (longest {:.3} s); last record to commits {:.3} s; group join {:.1} s (excluded){}",
                variant.label(settings.shape),
                settings.events,
                measure.wall.as_secs_f64(),
                settings.events as f64 / measure.wall.as_secs_f64(),
                measure.cpu.as_secs_f64(),
                measure.cpu.as_secs_f64() * 1e6 / settings.events as f64,
                measure.idle.as_secs_f64(),
                measure.longest_gap.as_secs_f64(),
                measure.tail.as_secs_f64(),
                measure.startup.as_secs_f64(),
                match measure.forwarded {
                    0 => String::new(),
                    n => format!("; {n} forwarded to the tenant topic and counted there"),
                },
            );
            results[slot].push(measure);
        }
    }
    // The input is checked again: nothing was dropped while the rounds ran.
    ensure!(bench.count(&consumer, &bench.input)? == loaded, "the input topic changed during the bench");

    let n = settings.events as f64;
    let walls = |m: &[Measure]| m.iter().map(|m| m.wall.as_secs_f64()).collect::<Vec<_>>();
    let rates = |m: &[Measure]| m.iter().map(|m| n / m.wall.as_secs_f64()).collect::<Vec<_>>();
    let cpus = |m: &[Measure]| m.iter().map(|m| m.cpu.as_secs_f64() * 1e6 / n).collect::<Vec<_>>();
    let idles = |m: &[Measure]| m.iter().map(|m| m.idle.as_secs_f64()).collect::<Vec<_>>();

    println!();
    println!(
        "End to end on the {}: {} records ({malformed} malformed, {:.1} MB), {partitions} partitions per topic, \
         {} round(s) of each variant alternated ({}); median (min – max).",
        where_,
        settings.events,
        bytes as f64 / 1e6,
        settings.rounds,
        if settings.abba { "a, b, b, a, ..." } else { "a, b, a, b, ..." }
    );
    println!();
    println!("| variant | records | wall s | events/s | CPU s per million events | idle gaps s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (variant, m) in [(Variant::PassThrough, &results[0]), (Variant::Run, &results[1])] {
        if m.is_empty() {
            continue;
        }
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            variant.label(settings.shape),
            settings.events,
            stat(&walls(m), 1.0, 2, ""),
            stat(&rates(m), 1e3, 1, " k"),
            stat(&cpus(m), 1.0, 2, ""),
            stat(&idles(m), 1.0, 2, ""),
        );
    }
    if let [a, b] = &results
        && !a.is_empty()
        && !b.is_empty()
    {
        let pair =
            |f: &dyn Fn(&[Measure]) -> Vec<f64>| -> Vec<f64> { f(b).iter().zip(f(a)).map(|(b, a)| b / a).collect() };
        let ratio = |f: &dyn Fn(&[Measure]) -> Vec<f64>| {
            let median = median(&f(b)) / median(&f(a));
            let pairs = pair(f);
            let (lo, hi) = range(&pairs);
            if pairs.len() == 1 { format!("**{median:.2}**") } else { format!("**{median:.2}** ({lo:.2} – {hi:.2})") }
        };
        println!("| **b/a** | | | {} | {} | |", ratio(&rates), ratio(&cpus));
        println!();
        println!("b/a: ratio of the medians (range: ratios of the pairs a_i, b_i). Target: events/s b/a ≥ 0.8.");
    }
    println!(
        "Idle gaps: the time spent in gaps of {} ms or more between two records (the service waiting for input).",
        IDLE_GAP.as_millis()
    );
    Ok(())
}
