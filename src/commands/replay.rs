//! `acs-stream replay`: dead letters back to where they came from, after a fix (a catalog, a
//! tenant allow-list, a clock).
//!
//! Reads a dead-letter topic from its beginning to the end offsets it had at the start
//! (partitions assigned directly: no group, nothing committed) and produces each dead
//! letter's original key and value to its source topic (`acs.source.topic`) or to `--to`,
//! with the header [`REPLAYED_FROM`] naming the dead letter (`topic/partition/offset`).
//! Filters: error codes, source topics, the dead letter's time. Refused unless forced: the
//! codes a replay cannot fix ([`UNFIXABLE`]: the bytes themselves are broken). Never
//! replayable: a dead letter without its value (too large, or withheld for privacy: the
//! value is in the input at its source offset). Replaying input that was already processed
//! is harmless: the session state recognises its message ids (marked `duplicate`, counted
//! once; a record without a message id gets one from its bytes, the same again).
//!
//! `--dry-run` reads and judges without producing. `--rate` paces the records produced.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::warn;

use super::StopRequests;
use super::generate::{Deliveries, Pacer, ProduceError, producer_config};
use super::tail::TailError;
use crate::encode::dead_letter::headers;

/// The header of a replayed record: the dead letter it came from, `topic/partition/offset`.
pub const REPLAYED_FROM: &str = "acs.replayed.from";

/// Codes a replay cannot fix: the record's bytes are not an event whatever the configuration.
pub const UNFIXABLE: [&str; 2] = ["malformed_json", "invalid_utf8"];

/// Which dead letters to replay, and how.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub brokers: String,
    /// The dead-letter topic.
    pub topic: String,
    /// Where to produce instead of each dead letter's source topic.
    pub to: Option<String>,
    /// Only these error codes (all when empty).
    pub codes: Vec<String>,
    /// Only dead letters of these source topics (all when empty).
    pub source_topics: Vec<String>,
    /// Only dead letters written at or after / before this time (epoch milliseconds).
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Records per second produced (all at once when absent).
    pub rate: Option<f64>,
    /// Judge and count only.
    pub dry_run: bool,
    /// Replay the [`UNFIXABLE`] codes too.
    pub force: bool,
    pub consumer_config: Vec<(String, String)>,
    pub producer_config: Vec<(String, String)>,
}

/// What becomes of one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Replay,
    /// Outside the filters.
    Filtered,
    /// An [`UNFIXABLE`] code without `--force`.
    Refused,
    /// The dead letter has no value to replay.
    NoValue,
    /// Neither `--to` nor a source topic header.
    NoDestination,
}

/// What is known of a dead letter for judging it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Letter<'a> {
    pub code: Option<&'a str>,
    pub source_topic: Option<&'a str>,
    /// Record timestamp, epoch milliseconds.
    pub timestamp: Option<i64>,
    pub has_value: bool,
    pub value_omitted: bool,
}

impl ReplayOptions {
    /// The verdict on `letter`, and where it would go.
    pub fn judge<'a>(&'a self, letter: &Letter<'a>) -> (Verdict, Option<&'a str>) {
        let code = letter.code.unwrap_or("");
        let listed = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|l| l == v))
        };
        let in_time = |bound: Option<i64>, before: bool| {
            bound.is_none_or(|bound| letter.timestamp.is_some_and(|t| if before { t < bound } else { t >= bound }))
        };
        if !listed(&self.codes, letter.code)
            || !listed(&self.source_topics, letter.source_topic)
            || !in_time(self.since, false)
            || !in_time(self.until, true)
        {
            return (Verdict::Filtered, None);
        }
        if letter.value_omitted || !letter.has_value {
            return (Verdict::NoValue, None);
        }
        if UNFIXABLE.contains(&code) && !self.force {
            return (Verdict::Refused, None);
        }
        match self.to.as_deref().or(letter.source_topic) {
            Some(topic) => (Verdict::Replay, Some(topic)),
            None => (Verdict::NoDestination, None),
        }
    }
}

/// Counts of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub topic: String,
    pub dry_run: bool,
    /// Dead letters read.
    pub read: u64,
    /// Per error code, per verdict.
    pub per_code: BTreeMap<String, BTreeMap<Verdict, u64>>,
    /// Replayed records acknowledged and failed (0 in a dry run).
    pub acknowledged: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// Stopped by SIGINT or SIGTERM before the end.
    pub stopped: bool,
}

impl ReplaySummary {
    pub fn count(&self, verdict: Verdict) -> u64 {
        self.per_code.values().filter_map(|verdicts| verdicts.get(&verdict)).sum()
    }

    /// Everything to replay was replayed and acknowledged.
    pub fn complete(&self) -> bool {
        self.failed == 0 && !self.stopped && (self.dry_run || self.acknowledged == self.count(Verdict::Replay))
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let replay = self.count(Verdict::Replay);
        let verb = if self.dry_run { "would replay" } else { "replayed" };
        write!(f, "acs-stream replay: {} dead letters read from {}; {verb} {replay}", self.read, self.topic)?;
        if !self.dry_run {
            write!(f, " ({} acknowledged, {} failed)", self.acknowledged, self.failed)?;
        }
        writeln!(
            f,
            "; refused {} (use --force), {} without value, {} without destination, {} filtered out{}",
            self.count(Verdict::Refused),
            self.count(Verdict::NoValue),
            self.count(Verdict::NoDestination),
            self.count(Verdict::Filtered),
            if self.stopped { " (stopped)" } else { "" }
        )?;
        writeln!(f, "{:<32} {:>8} {:>8} {:>9} {:>9}", "code", "replay", "refused", "no value", "filtered")?;
        for (code, verdicts) in &self.per_code {
            let n = |verdict| verdicts.get(&verdict).copied().unwrap_or(0);
            writeln!(
                f,
                "{code:<32} {:>8} {:>8} {:>9} {:>9}",
                n(Verdict::Replay),
                n(Verdict::Refused),
                n(Verdict::NoValue),
                n(Verdict::Filtered)
            )?;
        }
        if let Some(error) = &self.first_error {
            writeln!(f, "first failure: {error}")?;
        }
        Ok(())
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] TailError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("--consumer-config {0}: set by replay itself")]
    Fixed(String),
}

/// Longest wait for a record, so that stop requests are seen about this often.
const POLL_SLICE: Duration = Duration::from_millis(100);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the last acknowledgements are waited for.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Replays as `options` say; `progress` is told of every dead letter read (and the total
/// first).
pub fn run(
    options: &ReplayOptions,
    stop: &StopRequests,
    mut progress: impl FnMut(Progress),
) -> Result<ReplaySummary, ReplayError> {
    let consumer: BaseConsumer = consumer_config(options)?.create().map_err(TailError::Client)?;
    let producer: BaseProducer<Deliveries> = producer_config(&options.brokers, &options.producer_config)?
        .create_with_context(Deliveries::default())
        .map_err(ProduceError::Client)?;
    let topic = options.topic.as_str();
    let partitions = super::tail::partitions(&consumer, topic)?;
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    let mut total = 0;
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|source| TailError::Metadata { topic: topic.to_owned(), source })?;
        if high > low {
            remaining.insert(partition, high);
            total += (high - low) as u64;
        }
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(|source| TailError::Assign { topic: topic.to_owned(), source })?;
    }
    consumer.assign(&list).map_err(|source| TailError::Assign { topic: topic.to_owned(), source })?;
    progress(Progress::Total(total));

    let started = Instant::now();
    let pacer = options.rate.map(|rate| Pacer { start: started, rate });
    let mut summary = ReplaySummary { topic: topic.to_owned(), dry_run: options.dry_run, ..ReplaySummary::default() };
    let mut sent = 0;
    while !remaining.is_empty() {
        if stop.requested() {
            summary.stopped = true;
            break;
        }
        let message = match consumer.poll(POLL_SLICE) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                remaining.remove(&partition);
                continue;
            }
            Some(Err(error)) => {
                warn!(topic, error = %error, "Kafka consumer error; retrying.");
                continue;
            }
            Some(Ok(message)) => message,
        };
        if remaining.get(&message.partition()).is_some_and(|&end| message.offset() + 1 >= end) {
            remaining.remove(&message.partition());
        }
        summary.read += 1;
        progress(Progress::Read);
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
            })
        };
        let letter = Letter {
            code: header(headers::CODE),
            source_topic: header(headers::SOURCE_TOPIC),
            timestamp: message.timestamp().to_millis(),
            has_value: message.payload().is_some_and(|value| !value.is_empty()),
            value_omitted: header(headers::VALUE_OMITTED).is_some(),
        };
        let (verdict, destination) = options.judge(&letter);
        let code = letter.code.unwrap_or("(no code)").to_owned();
        *summary.per_code.entry(code).or_default().entry(verdict).or_default() += 1;
        let (Verdict::Replay, Some(destination), false) = (verdict, destination, options.dry_run) else { continue };
        while let Some(wait) = pacer.map(|pacer| pacer.wait(sent, Instant::now())).filter(|w| !w.is_zero()) {
            if stop.requested() {
                break;
            }
            producer.poll(wait.min(POLL_SLICE));
        }
        let from = format!("{topic}/{}/{}", message.partition(), message.offset());
        let headers = OwnedHeaders::new().insert(rdkafka::message::Header { key: REPLAYED_FROM, value: Some(&from) });
        let mut record = BaseRecord::to(destination).payload(message.payload().unwrap_or_default()).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(POLL_SLICE);
                }
                Err((error, _)) => {
                    producer.context().fail(&error);
                    break;
                }
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    if let Err(error) = producer.flush(FLUSH_TIMEOUT) {
        warn!(error = %error, "Not every replayed record was acknowledged in time.");
    }
    let deliveries = producer.context();
    summary.acknowledged = deliveries.acknowledged.load(std::sync::atomic::Ordering::Relaxed);
    summary.failed = deliveries.failed.load(std::sync::atomic::Ordering::Relaxed);
    summary.first_error = deliveries.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(summary)
}

/// What [`run`] reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Dead letters to read (the end offsets at the start less the beginning).
    Total(u64),
    /// One more read.
    Read,
}

/// The consumer's settings: no group offsets (assigned directly, nothing committed), every
/// partition read to its end; then the passthrough settings.
fn consumer_config(options: &ReplayOptions) -> Result<ClientConfig, ReplayError> {
    const FIXED: [&str; 5] =
        ["bootstrap.servers", "group.id", "enable.auto.commit", "enable.partition.eof", "auto.offset.reset"];
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", "acs-stream-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    for (key, value) in &options.consumer_config {
        if FIXED.iter().any(|fixed| key.trim().eq_ignore_ascii_case(fixed)) {
            return Err(ReplayError::Fixed(key.clone()));
        }
        config.set(key, value);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(code: &'static str) -> Letter<'static> {
        Letter {
            code: Some(code),
            source_topic: Some("acs.raw"),
            timestamp: Some(1_000),
            has_value: true,
            value_omitted: false,
        }
    }

    #[test]
    fn dead_letters_are_judged_by_filter_then_value_then_code() {
        let all = ReplayOptions::default();
        assert_eq!(all.judge(&letter("invalid_time")), (Verdict::Replay, Some("acs.raw")));
        assert_eq!(all.judge(&letter("malformed_json")).0, Verdict::Refused);
        assert_eq!(all.judge(&letter("invalid_utf8")).0, Verdict::Refused);
        let forced = ReplayOptions { force: true, to: Some("fixed".into()), ..ReplayOptions::default() };
        assert_eq!(forced.judge(&letter("malformed_json")), (Verdict::Replay, Some("fixed")));
        let omitted = Letter { value_omitted: true, has_value: false, ..letter("invalid_time") };
        assert_eq!(forced.judge(&omitted).0, Verdict::NoValue, "nothing to replay, even forced");
        let nowhere = Letter { source_topic: None, ..letter("invalid_time") };
        assert_eq!(all.judge(&nowhere).0, Verdict::NoDestination);

        let codes = ReplayOptions { codes: vec!["unknown_tenant".into()], ..ReplayOptions::default() };
        assert_eq!(codes.judge(&letter("invalid_time")).0, Verdict::Filtered);
        assert_eq!(codes.judge(&letter("unknown_tenant")).0, Verdict::Replay);
        let topics = ReplayOptions { source_topics: vec!["other".into()], ..ReplayOptions::default() };
        assert_eq!(topics.judge(&letter("invalid_time")).0, Verdict::Filtered);
        let window = |since, until| ReplayOptions { since, until, ..ReplayOptions::default() };
        assert_eq!(window(Some(1_000), Some(1_001)).judge(&letter("invalid_time")).0, Verdict::Replay);
        assert_eq!(window(Some(1_001), None).judge(&letter("invalid_time")).0, Verdict::Filtered);
        assert_eq!(window(None, Some(1_000)).judge(&letter("invalid_time")).0, Verdict::Filtered, "until excludes");
        let untimed = Letter { timestamp: None, ..letter("invalid_time") };
        assert_eq!(window(Some(0), None).judge(&untimed).0, Verdict::Filtered);
    }

    #[test]
    fn the_summary_counts_per_code_and_says_what_was_refused() {
        let mut summary = ReplaySummary { topic: "acs.dlq".into(), dry_run: true, read: 3, ..Default::default() };
        summary.per_code.entry("invalid_time".into()).or_default().insert(Verdict::Replay, 2);
        summary.per_code.entry("malformed_json".into()).or_default().insert(Verdict::Refused, 1);
        let text = summary.to_string();
        assert!(
            text.starts_with("acs-stream replay: 3 dead letters read from acs.dlq; would replay 2; refused 1"),
            "{text}"
        );
        assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["invalid_time", "2", "0", "0", "0"]));
        assert!(summary.complete());
    }
}
