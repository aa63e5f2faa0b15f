//! `acs-stream generate`: realistic synthetic traffic ([`Generator`]), written as JSON lines
//! (one record value per line, the input `process` reads: [`run`]) or produced to a Kafka
//! topic at a chosen rate ([`produce`]). The records are those of the seed either way.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};

use super::StopRequests;
use crate::synth::{Generator, SynthOptions};

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Output file, or `-` for standard output.
    pub out: PathBuf,
    /// Number of records.
    pub events: u64,
    pub synth: SynthOptions,
}

/// Writes the records; returns how many were malformed on purpose.
pub fn run(options: &GenerateOptions) -> io::Result<u64> {
    let writer: Box<dyn Write> = if options.out.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(&options.out)?)
    };
    let mut writer = BufWriter::with_capacity(1 << 16, writer);
    let mut malformed = 0;
    for record in Generator::new(options.synth.clone()).take(usize::try_from(options.events).unwrap_or(usize::MAX)) {
        malformed += u64::from(record.malformed);
        // A value that holds a newline cannot be one line: the generator's JSON never does
        // (serde_json escapes it), and its malformed bytes are built without one.
        debug_assert!(!record.value.contains(&b'\n'));
        writer.write_all(&record.value)?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(malformed)
}

/// Where and how fast to produce.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// Records to produce; `None`: until a stop is requested. Unbounded traffic's times
    /// never pass the wall clock ([`Generator::cap_clock`]).
    pub events: Option<u64>,
    /// Records per second; `None`: as fast as the producer takes them.
    pub rate: Option<f64>,
    /// librdkafka producer settings, applied last ([`producer_config`] refuses the ones
    /// fixed here).
    pub producer_config: Vec<(String, String)>,
    pub synth: SynthOptions,
}

/// Producer settings `--producer-config` may not change, and why.
const PRODUCER_FIXED: &[(&str, &str)] = &[
    ("bootstrap.servers", "given with --brokers"),
    ("metadata.broker.list", "given with --brokers"),
    ("enable.idempotence", "fixed to true: a retried send must not duplicate or reorder records"),
];

/// The producer's settings: the brokers, idempotence (so librdkafka's retries neither
/// duplicate nor reorder records; it implies `acks=all`), then the passthrough settings.
pub fn producer_config(brokers: &str, passthrough: &[(String, String)]) -> Result<ClientConfig, ProduceError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("enable.idempotence", "true");
    for (key, value) in passthrough {
        if let Some((_, why)) = PRODUCER_FIXED.iter().find(|(fixed, _)| key.trim().eq_ignore_ascii_case(fixed)) {
            return Err(ProduceError::Fixed { key: key.clone(), why });
        }
        config.set(key, value);
    }
    Ok(config)
}

/// Why production could not start. Failed deliveries are not errors: they are counted in
/// the [`ProduceSummary`].
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("--producer-config {key}: {why}")]
    Fixed { key: String, why: &'static str },
    #[error("cannot create the Kafka producer: {0}")]
    Client(#[source] KafkaError),
}

/// Counts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Records handed to the producer (refused ones included).
    pub sent: u64,
    pub acknowledged: u64,
    /// Refused by the producer or by the cluster.
    pub failed: u64,
    pub elapsed: Duration,
}

impl Progress {
    /// Records whose delivery report has not come yet.
    pub fn unacknowledged(&self) -> u64 {
        self.sent.saturating_sub(self.acknowledged + self.failed)
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.sent as f64 / self.elapsed.as_secs_f64().max(1e-3);
        write!(
            f,
            "{} sent, {} acknowledged, {} failed, {:.0} records/s",
            self.sent, self.acknowledged, self.failed, rate
        )
    }
}

/// What [`produce`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceSummary {
    pub topic: String,
    /// The final counts; `elapsed` includes the wait for the last acknowledgements.
    pub progress: Progress,
    /// Records malformed on purpose (the service dead-letters them).
    pub malformed: u64,
    /// The first failure's error.
    pub first_error: Option<String>,
    /// librdkafka's fatal error, which stopped production (idempotence broken).
    pub fatal_error: Option<String>,
    /// True when a stop request ended production (the normal end of unbounded traffic).
    pub stopped: bool,
}

impl ProduceSummary {
    /// Every record sent was acknowledged.
    pub fn complete(&self) -> bool {
        self.progress.failed == 0 && self.progress.unacknowledged() == 0 && self.fatal_error.is_none()
    }
}

impl fmt::Display for ProduceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.progress;
        let seconds = p.elapsed.as_secs_f64();
        writeln!(
            f,
            "acs-stream generate: {} records sent to {}{}, {} acknowledged, {} failed, {} malformed, in {:.1} s \
             ({:.0} records/s acknowledged)",
            p.sent,
            self.topic,
            if self.stopped { " (stopped)" } else { "" },
            p.acknowledged,
            p.failed,
            self.malformed,
            seconds,
            p.acknowledged as f64 / seconds.max(1e-3),
        )?;
        if let Some(error) = &self.first_error {
            writeln!(f, "acs-stream generate: first failure: {error}")?;
        }
        if let Some(error) = &self.fatal_error {
            writeln!(f, "acs-stream generate: fatal producer error, production stopped: {error}")?;
        }
        if p.unacknowledged() > 0 {
            writeln!(
                f,
                "acs-stream generate: {} records not acknowledged (the wait was abandoned)",
                p.unacknowledged()
            )?;
        }
        Ok(())
    }
}

/// Delivery reports, counted (they arrive during `poll`, on the producing thread).
#[derive(Default)]
pub(crate) struct Deliveries {
    pub(crate) acknowledged: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) first_error: Mutex<Option<String>>,
}

impl Deliveries {
    pub(crate) fn fail(&self, error: &KafkaError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        first.get_or_insert_with(|| error.to_string());
    }

    fn progress(&self, sent: u64, started: Instant) -> Progress {
        Progress {
            sent,
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => self.fail(error),
        }
    }
}

/// Deadline pacing: record `n` (from 0) is due `n / rate` seconds after the start, so the
/// pace does not drift: a late wake-up or a slow send is made up by the next records
/// instead of delaying all later ones. `governor` was considered: its GCRA limiter answers
/// "may one more pass now, else when", which is this one division plus a burst allowance;
/// the waiting (here: serving delivery reports meanwhile) and the catching up would still
/// be ours, for six more crates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacer {
    pub(crate) start: Instant,
    pub(crate) rate: f64,
}

impl Pacer {
    /// How long record `n` must still wait at `now` (zero once due).
    pub(crate) fn wait(&self, n: u64, now: Instant) -> Duration {
        let due = Duration::try_from_secs_f64(n as f64 / self.rate).unwrap_or(Duration::MAX);
        due.saturating_sub(now.saturating_duration_since(self.start))
    }
}

/// Longest single wait, so that stop requests and progress are seen about this often.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// How long to let the producer work when its local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Calls `report` about once a [`PROGRESS_EVERY`].
struct Ticker<F> {
    next: Instant,
    report: F,
}

impl<F: FnMut(Progress)> Ticker<F> {
    fn tick(&mut self, deliveries: &Deliveries, sent: u64, started: Instant) {
        let now = Instant::now();
        if now >= self.next {
            self.next = now + PROGRESS_EVERY;
            (self.report)(deliveries.progress(sent, started));
        }
    }
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Produces the records to `options.topic`, keyed by their key (the delivery execution id),
/// paced at `options.rate`, calling `progress` about once a second. Stops early at the
/// first stop request, then waits until every record sent is acknowledged or has failed
/// (`message.timeout.ms` bounds that wait; a second stop request abandons it). A fatal
/// producer error also stops production.
pub fn produce(
    options: &ProduceOptions,
    stop: &StopRequests,
    progress: impl FnMut(Progress),
) -> Result<ProduceSummary, ProduceError> {
    let producer: BaseProducer<Deliveries> = producer_config(&options.brokers, &options.producer_config)?
        .create_with_context(Deliveries::default())
        .map_err(ProduceError::Client)?;
    let deliveries = producer.context();
    let mut generator = Generator::new(options.synth.clone());
    let started = Instant::now();
    let pacer = options.rate.map(|rate| Pacer { start: started, rate });
    let mut ticker = Ticker { next: started + PROGRESS_EVERY, report: progress };
    let mut sent = 0;
    let mut malformed = 0;
    let mut fatal_error = None;
    'records: while options.events.is_none_or(|events| sent < events) {
        // The record's turn: wait, serving delivery reports meanwhile.
        loop {
            if stop.requested() {
                break 'records;
            }
            let wait = pacer.map_or(Duration::ZERO, |pacer| pacer.wait(sent, Instant::now()));
            if wait.is_zero() {
                break;
            }
            producer.poll(wait.min(POLL_SLICE));
            ticker.tick(deliveries, sent, started);
        }
        if options.events.is_none() {
            generator.cap_clock(now_ms());
        }
        let record = generator.next_record();
        let mut pending = BaseRecord::to(&options.topic).key(&record.key).payload(&record.value);
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if stop.requested() {
                        break 'records;
                    }
                    pending = back;
                    producer.poll(QUEUE_FULL_WAIT);
                    ticker.tick(deliveries, sent, started);
                }
                Err((error, _)) => {
                    deliveries.fail(&error);
                    fatal_error = producer.client().fatal_error().map(|(_, reason)| reason);
                    break;
                }
            }
        }
        sent += 1;
        malformed += u64::from(record.malformed);
        if fatal_error.is_some() {
            break;
        }
        producer.poll(Duration::ZERO);
        ticker.tick(deliveries, sent, started);
    }
    let stopped = stop.requested();
    // The flush: every record sent is acknowledged or has failed.
    while deliveries.progress(sent, started).unacknowledged() > 0 && stop.count() < 2 {
        // Ok once nothing is left to deliver, a timeout error after the slice.
        let delivered = producer.flush(POLL_SLICE).is_ok();
        ticker.tick(deliveries, sent, started);
        if delivered {
            break;
        }
    }
    if fatal_error.is_none() {
        fatal_error = producer.client().fatal_error().map(|(_, reason)| reason);
    }
    let first_error = deliveries.first_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    Ok(ProduceSummary {
        topic: options.topic.clone(),
        progress: deliveries.progress(sent, started),
        malformed,
        first_error,
        fatal_error,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_line_per_record_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let out = dir.path().join(name);
            let options = GenerateOptions { out: out.clone(), events: 500, synth: SynthOptions::default() };
            let malformed = run(&options).unwrap();
            (std::fs::read(out).unwrap(), malformed)
        };
        let (a, malformed) = write("a.jsonl");
        let (b, _) = write("b.jsonl");
        assert_eq!(a, b, "same seed, same bytes");
        assert_eq!(a.iter().filter(|&&byte| byte == b'\n').count(), 500);
        assert!(malformed < 500);
    }

    #[test]
    fn the_pacer_counts_from_the_start_without_drift() {
        let start = Instant::now();
        let pacer = Pacer { start, rate: 10.0 };
        assert_eq!(pacer.wait(0, start), Duration::ZERO, "the first record goes at once");
        assert_eq!(pacer.wait(10, start), Duration::from_secs(1));
        assert_eq!(pacer.wait(20, start + Duration::from_millis(1_500)), Duration::from_millis(500));
        assert_eq!(pacer.wait(10, start + Duration::from_secs(3)), Duration::ZERO, "a late record goes at once");
        let slow = Pacer { start, rate: 0.5 };
        assert_eq!(slow.wait(3, start), Duration::from_secs(6));
        let tiny = Pacer { start, rate: 1e-300 };
        assert_eq!(tiny.wait(1, start), Duration::MAX, "no overflow");
    }

    #[test]
    fn idempotence_and_brokers_cannot_be_overridden() {
        let setting = |key: &str, value: &str| vec![(key.to_owned(), value.to_owned())];
        let config = producer_config("b:1", &setting("linger.ms", "50")).unwrap();
        assert_eq!(
            (config.get("bootstrap.servers"), config.get("enable.idempotence"), config.get("linger.ms")),
            (Some("b:1"), Some("true"), Some("50"))
        );
        for key in ["enable.idempotence", "Enable.Idempotence", "bootstrap.servers"] {
            match producer_config("b:1", &setting(key, "false")) {
                Err(ProduceError::Fixed { key: refused, .. }) => assert_eq!(refused, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn progress_counts_what_is_still_awaited() {
        let progress = Progress { sent: 10, acknowledged: 6, failed: 1, elapsed: Duration::from_secs(2) };
        assert_eq!(progress.unacknowledged(), 3);
        assert_eq!(progress.to_string(), "10 sent, 6 acknowledged, 1 failed, 5 records/s");
    }
}
