//! Session state: memory per session, and the restore rate from the changelog.
//!
//! Targets (session-state issue): at most 512 bytes per active session; a restore of at
//! least 500,000 sessions/s for 1,000,000 sessions on the mock cluster.
//!
//! 1. **Memory per session.** The global allocator is mimalloc (as in the binary) wrapped in
//!    a counter of the live bytes requested from it (`Layout::size`), and of what mimalloc
//!    actually holds for them (`mi_usable_size`: the size class). A `Sessions` is built with
//!    N sessions; reported: (live bytes after − before) / sessions, checked against the bytes
//!    freed when that `Sessions` is dropped (they must agree: nothing else was allocated in the
//!    window). Measured in the steady state: after `Sessions::drain_changes` (the service
//!    drains after every record, so its dirty list holds at most one id). Shapes:
//!    - (a) synthetic traffic: `synth::Generator`s (stress mix, 1,000 sessions open at once,
//!      one generator after the other with its own seed until N sessions) run through
//!      `Pipeline::process` without rules, 20 records per session on average: sessions in
//!      the middle of their exam (about 20 recent message ids each, a few past the 32 kept);
//!      (a+r) the same with the default rules (the session state then holds its rule state),
//!      measured once the input is committed (the alerts kept for a replay let go, as the
//!      runtime's commit tick does);
//!    - (b) worst case, every session holding the maximum `remembered_ids` (32) recent ids:
//!      (b1) restored from N changelog records (the ids' buffer is then exactly 32 long);
//!      (b2) the same sessions after one more event each through `Pipeline::process` without
//!      rules, (b2+r) with the default rules (the event, a pause, starts the rule state).
//!
//!    Also reported: the changelog record (key and value bytes) of each shape, and where the
//!    bytes go (the hash table's slots estimated from its growth policy, the heap of the keys,
//!    of the tenant ids and of the recent ids' buffers, measured from the sessions; the rest
//!    is the rule state).
//! 2. **Restore.** N changelog records of the worst-case shape (distinct session ids, 32
//!    recent ids each) are produced to a changelog topic on librdkafka's mock cluster, with
//!    enough partitions for about 2 MiB each (it keeps only 5 MiB per partition), checked
//!    (low watermark 0, N records in all). Then, timed, as the runtime does it:
//!    `kafka::restore::read` of every partition with the service's restore consumer
//!    (`kafka::client::restore_consumer`), each record applied as it is read by
//!    `kafka::restore::Rebuild` (`Sessions::restore_record` into one `Sessions` per
//!    partition). For analysis, the two steps apart: the read alone (records copied out),
//!    then `Sessions::restore_record` of every record. Reported: sessions/s and wall times;
//!    checked: N records read, N sessions restored, no record refused. The apply is also
//!    timed again into the memory just freed (mostly still mapped: few page faults, so about
//!    the cost of decoding and inserting alone). The restored state's memory is measured
//!    too, by applying the records a third time (untimed) while counting.
//!
//! Run: `cargo bench --bench sessions`. `ACS_BENCH_SESSIONS`: N (default 1,000,000). Run
//! without `--bench` (as `cargo test --all-targets` does), it is a smoke test of a few
//! seconds: N = 10,000 by default, and at most 500 sessions for the synthetic shape (its
//! records are slow to generate in a debug build). Counting is off while the restore is
//! timed (its cost is then one relaxed load per allocation). `ACS_BENCH_ONLY=memory|restore`:
//! one part only (for a profiler).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use acs_stream::config::Config;
use acs_stream::encode::proto::pb;
use acs_stream::kafka::client;
use acs_stream::kafka::offsets::TopicPartition;
use acs_stream::kafka::restore::{self, Read, Rebuild};
use acs_stream::model::{ReasonCatalog, Source};
use acs_stream::pipeline::{Outcome, Pipeline, Record};
use acs_stream::session::{SessionState, Sessions, changelog};
use acs_stream::synth::{Generator, SynthOptions};
use anyhow::{Context, bail, ensure};
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// mimalloc, as in the binary, counting the live bytes while [`COUNTING`] is on.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Live bytes requested (`Layout::size`), since counting was first turned on.
static REQUESTED: AtomicI64 = AtomicI64::new(0);
/// Live bytes held by mimalloc for them (each allocation's size class).
static USABLE: AtomicI64 = AtomicI64::new(0);

unsafe extern "C" {
    /// Part of every mimalloc build (libmimalloc-sys declares it only with its `extended`
    /// feature): the usable size of a block, i.e. its size class.
    fn mi_usable_size(p: *const c_void) -> usize;
}

fn count(requested: i64, block: *const u8, sign: i64) {
    // SAFETY: `block` is a live block of mimalloc's (just allocated, or not yet freed).
    let usable = unsafe { mi_usable_size(block.cast()) } as i64;
    REQUESTED.fetch_add(sign * requested, Ordering::Relaxed);
    USABLE.fetch_add(sign * usable, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to mimalloc unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's.
        let block = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !block.is_null() && COUNTING.load(Ordering::Relaxed) {
            count(layout.size() as i64, block, 1);
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's.
        let block = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !block.is_null() && COUNTING.load(Ordering::Relaxed) {
            count(layout.size() as i64, block, 1);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            count(layout.size() as i64, block, -1);
        }
        // SAFETY: as the caller's.
        unsafe { mimalloc::MiMalloc.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let counting = COUNTING.load(Ordering::Relaxed);
        if counting {
            count(layout.size() as i64, block, -1);
        }
        // SAFETY: as the caller's.
        let moved = unsafe { mimalloc::MiMalloc.realloc(block, layout, new_size) };
        if counting {
            // On failure the old block stays allocated.
            if moved.is_null() {
                count(layout.size() as i64, block, 1);
            } else {
                count(new_size as i64, moved, 1);
            }
        }
        moved
    }
}

/// Live bytes (requested, held by mimalloc).
#[derive(Debug, Clone, Copy)]
struct Live {
    requested: i64,
    usable: i64,
}

impl Live {
    fn now() -> Live {
        Live { requested: REQUESTED.load(Ordering::Relaxed), usable: USABLE.load(Ordering::Relaxed) }
    }

    fn minus(self, before: Live) -> Live {
        Live { requested: self.requested - before.requested, usable: self.usable - before.usable }
    }
}

/// The input topic the sessions' events come from.
const INPUT_TOPIC: &str = "acs.raw";
/// Records per session on average in the synthetic shape.
const RECORDS_PER_SESSION: usize = 20;
/// Sessions of the synthetic shape at most, when not run by `cargo bench`.
const SMOKE_SYNTHETIC_SESSIONS: usize = 500;
/// Open sessions of each generator of the synthetic shape.
const GENERATOR_SESSIONS: usize = 1_000;
/// Average changelog data per partition on the mock cluster (it keeps at most 5 MiB).
const MOCK_BYTES_PER_PARTITION: usize = 2 << 20;
/// Per-record overhead in a partition's log, for the partition count (batch headers, varints).
const RECORD_OVERHEAD: usize = 32;
/// The recent message ids of the worst-case shape (`sessions.remembered_ids`' default).
const REMEMBERED_IDS: usize = 32;
/// Processing time of the whole bench, epoch milliseconds (2026-01-01T10:00:00Z).
const NOW: i64 = 1_767_261_600_000;

/// One measured shape of the state.
#[derive(Clone)]
struct Measured {
    /// For the breakdown table.
    short: &'static str,
    label: String,
    sessions: usize,
    /// Live bytes after − before the build.
    grown: Live,
    /// Bytes freed when the `Sessions` were dropped.
    freed: Live,
    /// Changelog records: key bytes and value bytes, summed, and how many.
    key_bytes: usize,
    value_bytes: usize,
    records: usize,
    parts: Parts,
}

/// Where the bytes of a set of `Sessions` go (measured from the sessions, table estimated).
#[derive(Debug, Default, Clone, Copy)]
struct Parts {
    table: usize,
    /// The tables' buckets (estimated).
    buckets: usize,
    keys: usize,
    /// The boxed states.
    states: usize,
    recent_ids: usize,
    /// Recent ids held (length, not capacity).
    recent_len: usize,
}

impl Parts {
    /// Adds the sessions `ids` of `sessions`: their heap, and the table's slots.
    fn add<'a>(&mut self, sessions: &Sessions, ids: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        self.table += table_bytes(sessions.len());
        self.buckets += buckets(sessions.len());
        for id in ids {
            let state = sessions.get(id).with_context(|| format!("session {id} is not held"))?;
            // The map's key is a boxed copy of the id; the tenant id is shared by a tenant's
            // sessions (not counted per session).
            self.keys += id.len();
            self.states += size_of::<acs_stream::session::SessionState>();
            self.recent_ids += state.recent_ids.heap_bytes();
            self.recent_len += state.recent_ids.len();
        }
        Ok(())
    }

    fn total(&self) -> usize {
        self.table + self.keys + self.states + self.recent_ids
    }
}

/// The buckets of the std `HashMap<Box<str>, Box<SessionState>>` table (hashbrown) that grew to
/// hold `len` entries: the smallest power of two whose 7/8 holds them.
fn buckets(len: usize) -> usize {
    match len {
        0 => 0,
        1..=3 => 4,
        4..=7 => 8,
        _ => (len * 8).div_ceil(7).next_power_of_two(),
    }
}

/// The bytes of such a table: one slot and one control byte per bucket, plus a group of
/// control bytes.
fn table_bytes(len: usize) -> usize {
    match buckets(len) {
        0 => 0,
        buckets => buckets * (size_of::<(Box<str>, Box<SessionState>)>() + 1) + 16,
    }
}

/// The id of synthetic session `n`, shaped like `synth`'s (reversed login, delivery, hash, tenant).
fn session_id(n: usize, rng: &mut fastrand::Rng) -> String {
    let login: String = format!("student{n:07}").chars().rev().collect();
    format!("{login}#delivery-{}#{:016x}#tenant-{:02}", n % 7, rng.u64(..), n % 4 + 1)
}

/// A worst-case session state: mid-exam, 32 recent message ids all within the duplicate
/// horizon, belonging to input partition `partition`.
fn worst_state(n: usize, partition: i32, rng: &mut fastrand::Rng) -> pb::SessionState {
    let ids = REMEMBERED_IDS as i64;
    pb::SessionState {
        input_topic: INPUT_TOPIC.to_owned(),
        input_partition: partition,
        tenant_id: format!("tenant-{:02}", n % 4 + 1),
        status: "interacting".to_owned(),
        sequence: 40,
        pause_count: 3,
        security_flag_count: 2,
        extra_time_minutes: 15.0,
        first_seen: NOW - 2_400_000 - rng.i64(0..60_000),
        last_seen: NOW - 5_000 - rng.i64(0..5_000),
        touched_at: NOW - 5_000,
        finished_at: None,
        applied_offset: 40 * n as i64,
        // Upper 48 bits: the id's hash; lower 16: the minute it was seen (one a minute).
        recent_ids: (0..ids).map(|i| (rng.u64(..) & !0xFFFF) | ((NOW / 60_000 - (ids - i)) as u64 & 0xFFFF)).collect(),
        rules: None,
        silent: false,
        silence_alerted_at: None,
    }
}

/// The default pipeline, with its default rules or none.
fn pipeline(rules: bool) -> anyhow::Result<Pipeline> {
    // The defaults: 32 recent ids, a changelog topic (so changes are tracked, as in `run`).
    let config = Config::defaults();
    ensure!(config.changelog_topic().is_some(), "the default configuration has a changelog topic");
    ensure!(config.sessions.remembered_ids == REMEMBERED_IDS, "32 recent ids by default");
    let pipeline = Pipeline::new(&config, ReasonCatalog::builtin())?;
    ensure!(!pipeline.rules().rules().is_empty(), "rules are on by default");
    Ok(if rules { pipeline } else { pipeline.with_rules(acs_stream::rules::RuleSet::empty()) })
}

/// Drains the changes of `sessions` (the steady state), summing their records' sizes.
fn drain(sessions: &mut Sessions, measured: &mut Measured) -> Vec<String> {
    let changes = sessions.drain_changes(INPUT_TOPIC, 0);
    let mut ids = Vec::with_capacity(changes.len());
    for (key, value) in changes {
        measured.key_bytes += key.len();
        measured.value_bytes += value.map_or(0, |v| v.len());
        measured.records += 1;
        ids.push(changelog::split_key(&key).expect("a key of drain_changes").1.to_owned());
    }
    ids
}

/// (a) Sessions from synthetic traffic through the core, with the default rules or none.
fn synthetic(n: usize, rules: bool) -> anyhow::Result<Measured> {
    let pipeline = pipeline(rules)?;
    let records = n * RECORDS_PER_SESSION;
    // Processing time: after the last record's incident time (records are 1-19 ms apart).
    // Not capped with `Generator::cap_clock`: records of one session at the same time may be
    // byte-identical, hence duplicates.
    let start_ms = SynthOptions::default().start_ms;
    let now = start_ms + (GENERATOR_SESSIONS * RECORDS_PER_SESSION) as i64 * 20 + 60_000;
    let topic: Arc<str> = Arc::from(INPUT_TOPIC);
    let mut measured = if rules {
        Measured::new(
            "(a+r)",
            format!("(a+r) synthetic traffic, {RECORDS_PER_SESSION} records/session on average, default rules"),
        )
    } else {
        Measured::new(
            "(a)",
            format!("(a) synthetic traffic, {RECORDS_PER_SESSION} records/session on average, no rules"),
        )
    };

    let before = Live::now();
    let mut sessions = pipeline.sessions();
    let mut events = 0;
    // Generators of `GENERATOR_SESSIONS` sessions each, one after the other (a generator's
    // cost per record grows with its open sessions), each with its own seed: distinct ids.
    let mut offset = 0;
    for (shard, first) in (0..n).step_by(GENERATOR_SESSIONS).enumerate() {
        let open = GENERATOR_SESSIONS.min(n - first);
        let options = SynthOptions { seed: 42 + shard as u64, concurrent_sessions: open, ..SynthOptions::stress() };
        let mut generator = Generator::new(options);
        for _ in 0..open * RECORDS_PER_SESSION {
            let record = generator.next_record();
            let source = Source { topic: topic.clone(), partition: 0, offset };
            offset += 1;
            let record = Record::new(Some(&record.key), &record.value, source);
            if let Outcome::Event { .. } = pipeline.process(&record, &mut sessions, now) {
                events += 1;
            }
            // As the runtime's commit tick: the alerts kept for a replay are let go.
            if offset % 10_000 == 0 {
                sessions.committed(offset);
            }
        }
    }
    // Only the malformed records (1%) may be dead letters.
    ensure!(events >= records * 97 / 100, "{events} events of {records} records");
    // Every input committed, as at the runtime's commit tick (before its flush): the alerts
    // kept for a replay are let go.
    sessions.committed(offset);
    // Measured after the changes are drained: the steady state. The ids of the changes (all
    // the sessions) are only used to sum the parts, and dropped before `after`.
    let ids = drain(&mut sessions, &mut measured);
    measured.sessions = sessions.len();
    ensure!(ids.len() == sessions.len(), "{} changes for {} sessions", ids.len(), sessions.len());
    measured.parts.add(&sessions, ids.iter().map(String::as_str))?;
    drop(ids);
    measured.grown = Live::now().minus(before);
    let held = Live::now();
    drop(sessions);
    measured.freed = held.minus(Live::now());
    Ok(measured)
}

impl Measured {
    fn new(short: &'static str, label: String) -> Measured {
        let zero = Live { requested: 0, usable: 0 };
        Measured {
            short,
            label,
            sessions: 0,
            grown: zero,
            freed: zero,
            key_bytes: 0,
            value_bytes: 0,
            records: 0,
            parts: Parts::default(),
        }
    }
}

/// Worst-case sessions: (b1) restored from changelog records, or (b2) restored then given
/// one more event each (`one_more`).
/// (with the default rules when `rules`: the event then starts the session's rule state).
fn worst_case(n: usize, one_more: bool, rules: bool) -> anyhow::Result<Measured> {
    let pipeline = pipeline(rules)?;
    let mut rng = fastrand::Rng::with_seed(7);
    let ids: Vec<String> = (0..n).map(|i| session_id(i, &mut rng)).collect();
    let mut measured = match (one_more, rules) {
        (false, _) => {
            Measured::new("(b1)", format!("(b1) worst case: {REMEMBERED_IDS} recent ids, restored from the changelog"))
        }
        (true, false) => Measured::new(
            "(b2)",
            format!("(b2) worst case: {REMEMBERED_IDS} recent ids, after one more event, no rules"),
        ),
        (true, true) => Measured::new(
            "(b2+r)",
            format!("(b2+r) worst case: {REMEMBERED_IDS} recent ids, after one more event (a pause), default rules"),
        ),
    };
    let topic: Arc<str> = Arc::from(INPUT_TOPIC);
    let mut event = Vec::with_capacity(256);

    let before = Live::now();
    let mut sessions = pipeline.sessions();
    for (i, id) in ids.iter().enumerate() {
        let value = worst_state(i, 0, &mut rng).encode_to_vec();
        let key = changelog::key(INPUT_TOPIC, id);
        if !one_more {
            measured.key_bytes += key.len();
            measured.value_bytes += value.len();
            measured.records += 1;
        }
        sessions.restore_record(INPUT_TOPIC, 0, &key, Some(&value))?;
    }
    ensure!(sessions.len() == n, "{} sessions restored of {n}", sessions.len());
    if one_more {
        // One event per session, past its restored offset, within the duplicate horizon.
        for (i, id) in ids.iter().enumerate() {
            event.clear();
            let json = format!(r#"{{"deliveryExecutionId":"{id}","incidentTime":{},"action":"pause"}}"#, NOW / 1000);
            event.extend_from_slice(json.as_bytes());
            let source = Source { topic: topic.clone(), partition: 0, offset: 40 * i as i64 + 1 };
            let record = Record::new(Some(id.as_bytes()), &event, source);
            match pipeline.process(&record, &mut sessions, NOW) {
                Outcome::Event { .. } => {}
                Outcome::DeadLetter(dead) => bail!("the event of {id} was refused: {:?}", dead.rejection),
            }
        }
        let changed = drain(&mut sessions, &mut measured);
        ensure!(changed.len() == n, "{} sessions changed of {n}", changed.len());
    }
    let after = Live::now();
    measured.grown = after.minus(before);
    measured.sessions = sessions.len();
    measured.parts.add(&sessions, ids.iter().map(String::as_str))?;
    for id in &ids {
        let state = sessions.get(id).context("held")?;
        ensure!(state.recent_ids.len() == REMEMBERED_IDS, "{id}: {} recent ids", state.recent_ids.len());
    }
    let held = Live::now();
    drop(sessions);
    measured.freed = held.minus(Live::now());
    Ok(measured)
}

/// What the restore measured.
struct Restore {
    partitions: i32,
    records: usize,
    bytes: usize,
    produce: Duration,
    /// Read and apply in one pass, as the runtime does.
    streamed: Duration,
    read: Duration,
    apply: Duration,
    apply_again: Duration,
    memory: Measured,
}

/// Changelog records read, by partition (key, value).
type Collected = BTreeMap<i32, Vec<(Vec<u8>, Option<Vec<u8>>)>>;

/// `Sessions::restore_record` of every record read, into one `Sessions` per partition.
fn apply(pipeline: &Pipeline, read: &Collected) -> anyhow::Result<Vec<Sessions>> {
    let mut restored = Vec::with_capacity(read.len());
    for (&partition, records) in read {
        let mut sessions = pipeline.sessions();
        for (key, value) in records {
            let key = std::str::from_utf8(key).context("a key that is not UTF-8")?;
            sessions.restore_record(INPUT_TOPIC, partition, key, value.as_deref())?;
        }
        restored.push(sessions);
    }
    Ok(restored)
}

fn restore_bench(n: usize) -> anyhow::Result<Restore> {
    let mut rng = fastrand::Rng::with_seed(11);
    // Partitions: about 2 MiB of records each (the first record gives the size).
    let sample = worst_state(0, 0, &mut rng).encoded_len()
        + changelog::key(INPUT_TOPIC, &session_id(0, &mut rng)).len()
        + RECORD_OVERHEAD;
    let partitions = i32::try_from((n * sample).div_ceil(MOCK_BYTES_PER_PARTITION).max(4))?;
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    let topic = "bench.sessions.changelog";
    cluster.create_topic(topic, partitions, 1)?;
    eprintln!("sessions: producing {n} changelog records to {partitions} partitions of the mock cluster ...");

    let started = Instant::now();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let (mut bytes, mut key_bytes) = (0, 0);
    for i in 0..n {
        let partition = (i % partitions as usize) as i32;
        let key = changelog::key(INPUT_TOPIC, &session_id(i, &mut rng));
        let value = worst_state(i, partition, &mut rng).encode_to_vec();
        bytes += key.len() + value.len();
        key_bytes += key.len();
        let mut pending = BaseRecord::to(topic).partition(partition).key(&key).payload(&value);
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    pending = back;
                    producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(error).context("producing the changelog"),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).context("flushing the changelog")?;
    let produce = started.elapsed();
    {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        let mut total = 0;
        for partition in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            ensure!(low == 0, "{topic}[{partition}]: the mock cluster dropped records (low watermark {low})");
            total += high;
        }
        ensure!(total == n as i64, "{total} records in {topic}, {n} produced");
    }
    eprintln!(
        "sessions: {n} records, {:.1} MB, produced in {:.1} s; restoring ...",
        bytes as f64 / 1e6,
        produce.as_secs_f64()
    );

    // The service's restore consumer, as the runtime builds it.
    let file = format!("[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"bench-sessions\"\n");
    let config = Config::layered(Some(("sessions bench", &file)), [])?;
    let client = client::restore_consumer(&config);
    let pipeline = Pipeline::new(&config, ReasonCatalog::builtin())?;
    let all: BTreeSet<i32> = (0..partitions).collect();

    // As the runtime does it: each record applied to its partition's sessions as it is read.
    let started = Instant::now();
    let inputs = (0..partitions).map(|partition| TopicPartition::new(INPUT_TOPIC, partition));
    let mut rebuild = Rebuild::new(pipeline.sessions(), inputs);
    restore::read(&client, topic, &all, || false, |read| rebuild.apply(read)).context("reading the changelog")?;
    let streamed_time = started.elapsed();
    let streamed = rebuild.into_partitions();
    let errors: u64 = streamed.iter().map(|rebuilt| rebuilt.errors).sum();
    ensure!(errors == 0, "{errors} changelog records could not be restored");
    let held: usize = streamed.iter().map(|rebuilt| rebuilt.state.len()).sum();
    ensure!(held == n, "{held} sessions restored (streamed) of {n}");
    drop(streamed);

    // The two steps apart, for analysis: the read alone (records copied out), then the apply.
    let started = Instant::now();
    let mut read = Collected::new();
    restore::read(
        &client,
        topic,
        &all,
        || false,
        |step| match step {
            Read::Record { partition, key, value } => {
                read.entry(partition).or_default().push((key.to_vec(), value.map(<[u8]>::to_vec)));
            }
            Read::Restart => read.clear(),
        },
    )
    .context("reading the changelog")?;
    let read_time = started.elapsed();
    let restored = apply(&pipeline, &read)?;
    let apply_time = started.elapsed() - read_time;

    let records: usize = read.values().map(Vec::len).sum();
    ensure!(records == n, "{records} records read of {n}");
    let held: usize = restored.iter().map(Sessions::len).sum();
    ensure!(held == n, "{held} sessions restored of {n}");
    drop(restored);
    // For analysis: the same apply into the memory just freed (mostly already mapped by the
    // process: no page faults), i.e. the cost of the decoding and the maps alone.
    let started = Instant::now();
    let restored = apply(&pipeline, &read)?;
    let apply_again = started.elapsed();
    drop(restored);

    // The restored state's memory: the same records applied again, counted.
    let mut memory = Measured::new(
        "(b1), partitions",
        format!("(b1) worst case, restored into {partitions} partitions (as the runtime does)"),
    );
    memory.sessions = n;
    memory.records = n;
    memory.key_bytes = key_bytes;
    memory.value_bytes = bytes - key_bytes;
    COUNTING.store(true, Ordering::Relaxed);
    let before = Live::now();
    let restored = apply(&pipeline, &read)?;
    memory.grown = Live::now().minus(before);
    for ((_, records), sessions) in read.iter().zip(&restored) {
        let ids = records
            .iter()
            .map(|(key, _)| Ok(changelog::split_key(std::str::from_utf8(key)?)?.1))
            .collect::<anyhow::Result<Vec<_>>>()?;
        memory.parts.add(sessions, ids)?;
    }
    let held = Live::now();
    drop(restored);
    memory.freed = held.minus(Live::now());
    COUNTING.store(false, Ordering::Relaxed);

    Ok(Restore {
        partitions,
        records,
        bytes,
        produce,
        streamed: streamed_time,
        read: read_time,
        apply: apply_time,
        apply_again,
        memory,
    })
}

fn per(bytes: i64, sessions: usize) -> f64 {
    bytes as f64 / sessions.max(1) as f64
}

/// The measure is clean when the growth equals what the drop frees (within 1%).
fn check_clean(m: &Measured) -> anyhow::Result<()> {
    let (grown, freed) = (m.grown.requested as f64, m.freed.requested as f64);
    ensure!(
        (grown - freed).abs() <= 0.01 * grown.abs().max(1.0),
        "{}: live bytes grew by {grown} but dropping the sessions freed {freed}",
        m.label
    );
    ensure!(m.sessions > 0, "{}: no sessions", m.label);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|arg| arg == "--bench");
    let n: usize = match std::env::var("ACS_BENCH_SESSIONS") {
        Ok(value) => value.parse().with_context(|| format!("ACS_BENCH_SESSIONS={value:?}"))?,
        Err(_) if full => 1_000_000,
        Err(_) => 10_000,
    };
    ensure!(n > 0, "ACS_BENCH_SESSIONS must be at least 1");
    if !full {
        eprintln!("sessions: smoke test ({n} sessions); `cargo bench --bench sessions` measures");
    }

    let only = std::env::var("ACS_BENCH_ONLY").unwrap_or_default();
    ensure!(matches!(only.as_str(), "" | "memory" | "restore"), "ACS_BENCH_ONLY={only:?}: expected memory or restore");
    let mut measures = Vec::new();
    if only != "restore" {
        eprintln!("sessions: memory, {n} sessions per shape ...");
        COUNTING.store(true, Ordering::Relaxed);
        let started = Instant::now();
        // Smoke test: a debug build makes the synthetic records slow.
        let synthetic_n = if full { n } else { n.min(SMOKE_SYNTHETIC_SESSIONS) };
        measures.push(synthetic(synthetic_n, false)?);
        eprintln!("sessions: (a) built in {:.1} s", started.elapsed().as_secs_f64());
        measures.push(synthetic(synthetic_n, true)?);
        eprintln!("sessions: (a+r) built in {:.1} s", started.elapsed().as_secs_f64());
        measures.push(worst_case(n, false, false)?);
        measures.push(worst_case(n, true, false)?);
        measures.push(worst_case(n, true, true)?);
        COUNTING.store(false, Ordering::Relaxed);
    }
    let restore = if only != "memory" { Some(restore_bench(n)?) } else { None };
    measures.extend(restore.as_ref().map(|r| r.memory.clone()));
    for m in &measures {
        check_clean(m)?;
    }

    println!();
    println!("Session state memory (mimalloc; after draining the changes, i.e. the steady state):");
    println!();
    println!(
        "| shape | sessions | bytes/session requested | bytes/session held by mimalloc | recent ids/session \
         | changelog key + value bytes |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for m in &measures {
        println!(
            "| {} | {} | **{:.0}** | {:.0} | {:.1} | {:.0} + {:.0} |",
            m.label,
            m.sessions,
            per(m.grown.requested, m.sessions),
            per(m.grown.usable, m.sessions),
            m.parts.recent_len as f64 / m.sessions as f64,
            m.key_bytes as f64 / m.records.max(1) as f64,
            m.value_bytes as f64 / m.records.max(1) as f64,
        );
    }
    println!();
    println!(
        "Where the requested bytes go, per session: the table's slots (estimated: {} bytes per bucket, \
         power-of-two buckets at most 7/8 full), the heap of the key (the delivery execution id), the boxed \
         state ({} bytes; its tenant id is shared), the recent ids' buffer (8 bytes per id of capacity), and \
         the rest: the rule state (windows and their evidence, distinct IP and user-agent hashes):",
        size_of::<(Box<str>, Box<SessionState>)>() + 1,
        size_of::<SessionState>()
    );
    println!();
    println!("| shape | table load | table | key | state | recent ids | rules (the rest) | measured |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in &measures {
        let s = m.sessions;
        let p = &m.parts;
        println!(
            "| {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            m.short,
            s as f64 / p.buckets.max(1) as f64,
            per(p.table as i64, s),
            per(p.keys as i64, s),
            per(p.states as i64, s),
            per(p.recent_ids as i64, s),
            per(m.grown.requested - p.total() as i64, s),
            per(m.grown.requested, s),
        );
    }

    let Some(restore) = restore else { return Ok(()) };
    let rate = |time: Duration| n as f64 / time.as_secs_f64();
    println!();
    println!(
        "Restore on the mock cluster: {} changelog records (worst-case shape, {:.1} MB), {} partitions, \
         produced in {:.1} s:",
        restore.records,
        restore.bytes as f64 / 1e6,
        restore.partitions,
        restore.produce.as_secs_f64()
    );
    println!();
    println!("| step | wall s | sessions/s |");
    println!("|---|---:|---:|");
    println!(
        "| **restore as the runtime does: each record applied as it is read** | **{:.2}** | **{:.0} k** |",
        restore.streamed.as_secs_f64(),
        rate(restore.streamed) / 1e3
    );
    println!(
        "| (analysis: `restore::read` alone, records copied out) | {:.2} | {:.0} k |",
        restore.read.as_secs_f64(),
        rate(restore.read) / 1e3
    );
    println!(
        "| (analysis: then `Sessions::restore_record`, one `Sessions` per partition) | {:.2} | {:.0} k |",
        restore.apply.as_secs_f64(),
        rate(restore.apply) / 1e3
    );
    println!(
        "| (analysis: `restore_record` again, into memory just freed) | {:.2} | {:.0} k |",
        restore.apply_again.as_secs_f64(),
        rate(restore.apply_again) / 1e3
    );
    println!();
    println!("Targets: ≤ 512 bytes per active session; restore ≥ 500 k sessions/s for 1 M sessions.");
    Ok(())
}
