//! `acs-stream tail`: prints the records of an output topic as JSON lines.
//!
//! Every line is one JSON object whose first member is `_kafka`, where the record was
//! read: `{"topic", "partition", "offset", "key", "timestamp"}` (`key` the key as text, or
//! base64 with `"keyEncoding": "base64"` when it is not UTF-8; `null` when absent;
//! `timestamp` epoch milliseconds or `null`). The rest depends on what the record holds
//! ([`Kind`], from its headers):
//!
//! - an event (`acs-schema: acs.v1.EnrichedEvent`, or no schema header): the event in the
//!   JSON contract, exactly as `process` writes it, its members after `_kafka`. Protobuf
//!   values are converted with [`crate::encode::json::from_proto`]; a value that is a JSON
//!   object (`output.format = "json"`) is passed through as it is (line breaks between
//!   tokens become spaces, so that it stays one line);
//! - an alert (`acs-schema: acs.v1.Alert`): the alert in the alert contract
//!   ([`Alert::to_json`]), its members after `_kafka`. Protobuf values are decoded as
//!   `acs.v1.Alert` and converted with [`Alert::from_proto`]; a JSON object (an alert
//!   written as JSON, `content-type: application/json`) is passed through as events are;
//! - a dead letter (header `acs.error.code`): `"deadLetter": {"code", "detail",
//!   "sourceTopic", "sourcePartition", "sourceOffset", "processorVersion"}` from its
//!   headers, then `"key"` and `"value"`, the original bytes as text, or base64 with
//!   `"keyEncoding"` / `"valueEncoding": "base64"` when they are not UTF-8;
//! - anything that cannot be decoded, or of a schema tail does not know: `"error"` (why) and
//!   `"value"` (as above). Never a crash: the next record follows.
//!
//! Partitions are assigned directly: no consumer group is joined, and offsets are committed
//! only with `--group` (then tail starts from the group's committed offsets and commits
//! what it printed).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use base64::Engine;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::warn;

use super::StopRequests;
use crate::encode::ALERT_SCHEMA;
use crate::encode::dead_letter::headers as dead_letter;
use crate::encode::proto::{EVENT_SCHEMA, pb};
use crate::encode::{headers, json};
use crate::rules::Alert;

/// Where to start reading (when `--group` has no committed offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
}

/// How event and alert values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// A JSON object is passed through, anything else is decoded as protobuf.
    Auto,
    Protobuf,
    Json,
}

/// What to read and when to stop.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    pub from: StartAt,
    /// Stop after this many records.
    pub max: Option<u64>,
    /// Stop at the end offsets the partitions had when tail started.
    pub exit_at_end: bool,
    /// Consumer group to start from and commit to; none: nothing is committed.
    pub group: Option<String>,
    pub format: ValueFormat,
    /// librdkafka consumer settings, applied last ([`consumer_config`] refuses the ones
    /// fixed here).
    pub consumer_config: Vec<(String, String)>,
}

/// Why tail could not run.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("--consumer-config {key}: {why}")]
    Fixed { key: String, why: &'static str },
    #[error("cannot create the Kafka consumer: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot read the metadata of topic {topic}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("cannot assign the partitions of {topic}: {source}")]
    Assign { topic: String, source: KafkaError },
    #[error("cannot write to standard output: {0}")]
    Write(#[source] io::Error),
}

/// Why tail stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailEnd {
    /// `--max` records were printed.
    Max,
    /// `--exit-at-end`: every partition reached its end offset of the start.
    EndOffsets,
    /// A stop was requested (SIGINT or SIGTERM).
    Stopped,
    /// Standard output was closed (e.g. `| head`).
    OutputClosed,
}

/// What tail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailSummary {
    pub printed: u64,
    /// Lines with an `error` member.
    pub undecodable: u64,
    pub end: TailEnd,
}

/// Consumer settings `--consumer-config` may not change, and why.
const CONSUMER_FIXED: &[(&str, &str)] = &[
    ("bootstrap.servers", "given with --brokers"),
    ("metadata.broker.list", "given with --brokers"),
    ("group.id", "given with --group"),
    ("enable.auto.commit", "fixed: offsets are committed with --group only"),
    ("enable.auto.offset.store", "fixed: an offset is stored once its record is printed"),
    ("enable.partition.eof", "fixed to true: --exit-at-end needs it"),
    ("auto.offset.reset", "given with --from"),
];

/// The group id when `--group` is not given: librdkafka wants one, nothing is committed.
const NO_GROUP: &str = "acs-stream-tail";

/// The consumer's settings: brokers, the group (committing only with `--group`), where to
/// start, end-of-partition events; then the passthrough settings.
pub fn consumer_config(options: &TailOptions) -> Result<ClientConfig, TailError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", options.group.as_deref().unwrap_or(NO_GROUP))
        .set("enable.auto.commit", if options.group.is_some() { "true" } else { "false" })
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set(
            "auto.offset.reset",
            match options.from {
                StartAt::Beginning => "earliest",
                StartAt::End => "latest",
            },
        );
    for (key, value) in &options.consumer_config {
        if let Some((_, why)) = CONSUMER_FIXED.iter().find(|(fixed, _)| key.trim().eq_ignore_ascii_case(fixed)) {
            return Err(TailError::Fixed { key: key.clone(), why });
        }
        config.set(key, value);
    }
    Ok(config)
}

/// Longest wait for a record, so that stop requests are seen about this often.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Output is flushed at least this often while records keep coming.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// `--exit-at-end`: the partitions still short of the end offset they had at the start.
#[derive(Debug, Default)]
struct Ends {
    remaining: HashMap<i32, i64>,
}

impl Ends {
    fn reached(&mut self, partition: i32, next_offset: i64) {
        if self.remaining.get(&partition).is_some_and(|&end| next_offset >= end) {
            self.remaining.remove(&partition);
        }
    }

    fn all_reached(&self) -> bool {
        self.remaining.is_empty()
    }
}

/// Reads `options.topic` and writes one line per record to `out` until `--max`,
/// `--exit-at-end`, a stop request, or `out` closing.
pub fn run(options: &TailOptions, stop: &StopRequests, out: &mut impl Write) -> Result<TailSummary, TailError> {
    let consumer: BaseConsumer = consumer_config(options)?.create().map_err(TailError::Client)?;
    let topic = options.topic.as_str();
    let partitions = partitions(&consumer, topic)?;
    let mut list = TopicPartitionList::new();
    for &partition in &partitions {
        let offset = match (&options.group, options.from) {
            (Some(_), _) => Offset::Stored,
            (None, StartAt::Beginning) => Offset::Beginning,
            (None, StartAt::End) => Offset::End,
        };
        list.add_partition_offset(topic, partition, offset)
            .map_err(|source| TailError::Assign { topic: topic.to_owned(), source })?;
    }
    let mut ends = Ends::default();
    if options.exit_at_end {
        for &partition in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                .map_err(|source| TailError::Metadata { topic: topic.to_owned(), source })?;
            // From the end (without a group) there is nothing to read.
            let from_end = options.group.is_none() && options.from == StartAt::End;
            if high > low && !from_end {
                ends.remaining.insert(partition, high);
            }
        }
    }
    consumer.assign(&list).map_err(|source| TailError::Assign { topic: topic.to_owned(), source })?;

    let mut summary = TailSummary { printed: 0, undecodable: 0, end: TailEnd::Stopped };
    let mut flushed = Instant::now();
    summary.end = loop {
        if options.max.is_some_and(|max| summary.printed >= max) {
            break TailEnd::Max;
        }
        if options.exit_at_end && ends.all_reached() {
            break TailEnd::EndOffsets;
        }
        if stop.requested() {
            break TailEnd::Stopped;
        }
        let message = match consumer.poll(POLL_SLICE) {
            None => {
                if let Some(end) = flush(out)? {
                    break end;
                }
                flushed = Instant::now();
                continue;
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // The partition's end now, which is at or past its end at the start.
                ends.remaining.remove(&partition);
                continue;
            }
            Some(Err(error)) => {
                warn!(topic, error = %error, "Kafka consumer error; retrying.");
                continue;
            }
            Some(Ok(message)) => message,
        };
        let line = render(&RecordView::of(&message), options.format);
        if let Some(end) = write_line(out, &line.bytes)? {
            break end;
        }
        summary.printed += 1;
        summary.undecodable += u64::from(line.error);
        ends.reached(message.partition(), message.offset() + 1);
        if options.group.is_some() {
            if let Err(error) = consumer.store_offset_from_message(&message) {
                warn!(topic, partition = message.partition(), error = %error, "Cannot store the offset.");
            }
        }
        if flushed.elapsed() >= FLUSH_EVERY {
            if let Some(end) = flush(out)? {
                break end;
            }
            flushed = Instant::now();
        }
    };
    if summary.end != TailEnd::OutputClosed {
        flush(out)?;
    }
    if options.group.is_some() {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => warn!(topic, error = %error, "Cannot commit the offsets of what was printed."),
        }
    }
    Ok(summary)
}

/// The topic's partitions.
pub(crate) fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, TailError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|source| TailError::Metadata { topic: topic.to_owned(), source })?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(TailError::UnknownTopic(topic.to_owned()));
    };
    match found.error() {
        None => {}
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            return Err(TailError::UnknownTopic(topic.to_owned()));
        }
        Some(error) => {
            let source = KafkaError::MetadataFetch(error.into());
            return Err(TailError::Metadata { topic: topic.to_owned(), source });
        }
    }
    let partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    if partitions.is_empty() {
        return Err(TailError::UnknownTopic(topic.to_owned()));
    }
    Ok(partitions)
}

/// Writes one line; a closed output (broken pipe) ends tail normally.
fn write_line(out: &mut impl Write, line: &[u8]) -> Result<Option<TailEnd>, TailError> {
    closed(out.write_all(line).and_then(|()| out.write_all(b"\n")))
}

fn flush(out: &mut impl Write) -> Result<Option<TailEnd>, TailError> {
    closed(out.flush())
}

fn closed(result: io::Result<()>) -> Result<Option<TailEnd>, TailError> {
    match result {
        Ok(()) => Ok(None),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(Some(TailEnd::OutputClosed)),
        Err(error) => Err(TailError::Write(error)),
    }
}

/// One record as read, borrowed.
#[derive(Debug, Clone)]
pub struct RecordView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Epoch milliseconds.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub value: Option<&'a [u8]>,
}

impl<'a> RecordView<'a> {
    pub fn of(message: &'a BorrowedMessage<'a>) -> RecordView<'a> {
        RecordView {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            headers: message.headers().map(|h| h.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default(),
            value: message.payload(),
        }
    }

    /// The first header of that name, as text.
    fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| String::from_utf8_lossy(value.unwrap_or_default()))
    }
}

/// What a record holds, told by its headers (not by its topic: topic names are templates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `acs.v1.EnrichedEvent`, or no schema header.
    Event,
    /// `acs.v1.Alert`.
    Alert,
    /// Header `acs.error.code`.
    DeadLetter,
    /// A schema tail does not know.
    Unknown(Cow<'a, str>),
}

pub fn kind<'a>(record: &RecordView<'a>) -> Kind<'a> {
    if record.header(dead_letter::CODE).is_some() {
        return Kind::DeadLetter;
    }
    match record.header(headers::SCHEMA) {
        None => Kind::Event,
        Some(schema) if schema == EVENT_SCHEMA => Kind::Event,
        Some(schema) if schema == ALERT_SCHEMA => Kind::Alert,
        Some(schema) => Kind::Unknown(schema),
    }
}

/// One output line (without its newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    /// The line is an `error` line.
    pub error: bool,
}

/// Bytes as a JSON string: the text when UTF-8, else base64 (and the encoding's name).
fn text_or_base64(bytes: &[u8]) -> (Cow<'_, str>, Option<&'static str>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Cow::Borrowed(text), None),
        Err(_) => (Cow::Owned(base64::engine::general_purpose::STANDARD.encode(bytes)), Some("base64")),
    }
}

/// The `_kafka` member.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KafkaJson<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    key: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    timestamp: Option<i64>,
}

impl<'a> KafkaJson<'a> {
    fn of(record: &RecordView<'a>) -> KafkaJson<'a> {
        let (key, key_encoding) = match record.key.map(text_or_base64) {
            Some((key, encoding)) => (Some(key), encoding),
            None => (None, None),
        };
        KafkaJson {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            key,
            key_encoding,
            timestamp: record.timestamp,
        }
    }
}

/// Renders one record as its line.
pub fn render(record: &RecordView<'_>, format: ValueFormat) -> Line {
    let result = match kind(record) {
        Kind::Event => value_line(record, format, event_json),
        Kind::Alert => value_line(record, format, alert_json),
        Kind::DeadLetter => Ok(dead_letter_line(record)),
        Kind::Unknown(schema) => Err(format!("unknown schema {schema}")),
    };
    match result {
        Ok(bytes) => Line { bytes, error: false },
        Err(error) => Line { bytes: error_line(record, &error), error: true },
    }
}

/// `{"_kafka":{...},` followed by the members of `object` (a JSON object's text).
fn with_kafka(record: &RecordView<'_>, object: &str) -> Vec<u8> {
    let mut line = b"{\"_kafka\":".to_vec();
    serde_json::to_writer(&mut line, &KafkaJson::of(record)).expect("plain data serializes");
    let members = object.strip_prefix('{').unwrap_or(object);
    if !members.trim_start().starts_with('}') {
        line.push(b',');
    }
    line.extend_from_slice(members.as_bytes());
    line
}

/// A JSON object's text, if `value` is one.
fn json_object(value: &[u8]) -> Option<&str> {
    let raw: &RawValue = serde_json::from_slice(value).ok()?;
    Some(raw.get()).filter(|text| text.starts_with('{'))
}

/// An event's or an alert's line: a JSON object value passed through (as `format` allows),
/// anything else converted to its contract's JSON object by `decode`.
fn value_line(
    record: &RecordView<'_>,
    format: ValueFormat,
    decode: fn(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let value = record.value.ok_or("no value (a tombstone)")?;
    let passed = match format {
        ValueFormat::Protobuf => None,
        ValueFormat::Auto | ValueFormat::Json => json_object(value),
    };
    if let Some(object) = passed {
        // Raw line breaks can only be whitespace between tokens in valid JSON.
        if object.contains(['\n', '\r']) {
            return Ok(with_kafka(record, &object.replace(['\n', '\r'], " ")));
        }
        return Ok(with_kafka(record, object));
    }
    if format == ValueFormat::Json {
        return Err("the value is not a JSON object".to_owned());
    }
    let contract = decode(value)?;
    // The contract is a JSON object: UTF-8 by construction.
    Ok(with_kafka(record, std::str::from_utf8(&contract).expect("serde_json writes UTF-8")))
}

/// A protobuf event in the event JSON contract.
fn event_json(value: &[u8]) -> Result<Vec<u8>, String> {
    let event = pb::EnrichedEvent::decode(value).map_err(|error| format!("cannot decode {EVENT_SCHEMA}: {error}"))?;
    json::from_proto(&event).map_err(|error| format!("cannot convert {EVENT_SCHEMA}: {error}"))
}

/// A protobuf alert in the alert JSON contract.
fn alert_json(value: &[u8]) -> Result<Vec<u8>, String> {
    let alert = pb::Alert::decode(value).map_err(|error| format!("cannot decode {ALERT_SCHEMA}: {error}"))?;
    let stamped = crate::encode::stamp::AlertStamp::fields(&alert);
    let alert = Alert::from_proto(alert)
        .ok_or_else(|| format!("cannot convert {ALERT_SCHEMA}: a severity or an action outside the alert contract"))?;
    let mut json = alert.to_json().into_bytes();
    if let Some(stamp) = crate::encode::stamp::AlertStamp::of(&stamped) {
        stamp.put_json(&mut json);
    }
    Ok(json)
}

/// A header that holds a number: the number, else its text (`null` when absent).
fn number_or_text(text: Option<Cow<'_, str>>) -> serde_json::Value {
    match text {
        None => serde_json::Value::Null,
        Some(text) => text.parse::<i64>().map_or_else(|_| serde_json::Value::from(text.as_ref()), Into::into),
    }
}

fn dead_letter_line(record: &RecordView<'_>) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct DeadLetterJson<'a> {
        code: Option<Cow<'a, str>>,
        detail: Option<Cow<'a, str>>,
        source_topic: Option<Cow<'a, str>>,
        source_partition: serde_json::Value,
        source_offset: serde_json::Value,
        processor_version: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rules_version: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        catalog_version: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_omitted: Option<Cow<'a, str>>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Line<'a> {
        #[serde(rename = "_kafka")]
        kafka: KafkaJson<'a>,
        dead_letter: DeadLetterJson<'a>,
        key: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        key_encoding: Option<&'static str>,
        value: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_encoding: Option<&'static str>,
    }
    let kafka = KafkaJson::of(record);
    let (value, value_encoding) = match record.value.map(text_or_base64) {
        Some((value, encoding)) => (Some(value), encoding),
        None => (None, None),
    };
    let line = Line {
        dead_letter: DeadLetterJson {
            code: record.header(dead_letter::CODE),
            detail: record.header(dead_letter::DETAIL),
            source_topic: record.header(dead_letter::SOURCE_TOPIC),
            source_partition: number_or_text(record.header(dead_letter::SOURCE_PARTITION)),
            source_offset: number_or_text(record.header(dead_letter::SOURCE_OFFSET)),
            processor_version: record.header(dead_letter::PROCESSOR_VERSION),
            rules_version: record.header(dead_letter::RULES_VERSION),
            catalog_version: record.header(dead_letter::CATALOG_VERSION),
            value_omitted: record.header(dead_letter::VALUE_OMITTED),
        },
        key: kafka.key.clone(),
        key_encoding: kafka.key_encoding,
        kafka,
        value,
        value_encoding,
    };
    serde_json::to_vec(&line).expect("plain data serializes")
}

fn error_line(record: &RecordView<'_>, error: &str) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Line<'a> {
        #[serde(rename = "_kafka")]
        kafka: KafkaJson<'a>,
        error: &'a str,
        value: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_encoding: Option<&'static str>,
    }
    let (value, value_encoding) = match record.value.map(text_or_base64) {
        Some((value, encoding)) => (Some(value), encoding),
        None => (None, None),
    };
    let line = Line { kafka: KafkaJson::of(record), error, value, value_encoding };
    serde_json::to_vec(&line).expect("plain data serializes")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::config::Config;
    use crate::decode::{ErrorCode, Rejection};
    use crate::encode::DeadLetter;
    use crate::model::{ReasonCatalog, Source};
    use crate::pipeline::{Outcome, Pipeline, Record};

    const NOW: i64 = 1_767_261_400_000;
    const GOOD: &[u8] =
        br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"actor":"proctor","action":"pause"}"#;

    fn record<'a>(headers: Vec<(&'a str, Option<&'a [u8]>)>, value: Option<&'a [u8]>) -> RecordView<'a> {
        RecordView {
            topic: "acs.acme.events",
            partition: 1,
            offset: 41,
            timestamp: Some(1_767_261_300_123),
            key: Some(b"u#d#h#acme"),
            headers,
            value,
        }
    }

    fn parsed(line: &Line) -> Value {
        serde_json::from_slice(&line.bytes).unwrap()
    }

    /// The event's output record in protobuf and in JSON.
    fn event_outputs(value: &[u8]) -> (Vec<(&'static str, String)>, Vec<u8>, Vec<u8>) {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let input = Record::new(None, value, Source { topic: Arc::from("acs.raw"), partition: 0, offset: 3 });
        let Outcome::Event { output: proto, .. } = pipeline.process(&input, &mut pipeline.sessions(), NOW) else {
            panic!("an event")
        };
        let json_pipeline = pipeline.clone().with_format(crate::encode::Format::Json);
        let Outcome::Event { output: json, .. } = json_pipeline.process(&input, &mut json_pipeline.sessions(), NOW)
        else {
            panic!("an event")
        };
        let headers = proto.headers.iter().map(|(name, value)| (*name, value.to_string())).collect();
        (headers, proto.value.into_owned(), json.value.into_owned())
    }

    /// A real alert: `repeated-pauses`, fired by a session's third pause within 30 minutes.
    fn an_alert() -> Alert {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let rules = crate::rules::RuleSet::defaults();
        let mut sessions = crate::session::Sessions::new(crate::session::SessionLimits::default());
        let mut alerts = crate::encode::Alerts::new();
        for offset in 1..=5 {
            let (at, action) = (1_767_261_000 + offset * 300, if offset % 2 == 1 { "pause" } else { "resume" });
            let value = format!(
                r#"{{"deliveryExecutionId":"u#d#h#acme","incidentTime":{at},"actor":"proctor","action":"{action}","actionStatus":"succeeded","messageId":"m{offset}","testTaker":"student1","reasonCode":"N52"}}"#
            );
            let source = Source { topic: Arc::from("acs.raw"), partition: 0, offset };
            let mut event = pipeline.enrich(value.as_bytes(), &source, NOW).unwrap();
            alerts = sessions.apply_evaluating(&mut event, offset, NOW, Some((&rules, None))).alerts;
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        alerts[0].alert().expect("an alert of the contract")
    }

    #[test]
    fn an_alert_is_printed_in_the_alert_contract_after_where_it_was_read() {
        let alert = an_alert();
        let kafka = r#"{"_kafka":{"topic":"acs.acme.events","partition":1,"offset":41,"key":"u#d#h#acme","timestamp":1767261300123},"#;
        let expected = [kafka, &alert.to_json()[1..]].concat();
        let proto = alert.to_proto_vec();
        let schema = ("acs-schema", Some(ALERT_SCHEMA.as_bytes()));
        let protobuf = ("content-type", Some(&b"application/x-protobuf"[..]));
        for format in [ValueFormat::Auto, ValueFormat::Protobuf] {
            let line = render(&record(vec![protobuf, schema], Some(&proto)), format);
            assert!(!line.error, "{}", String::from_utf8_lossy(&line.bytes));
            assert_eq!(String::from_utf8(line.bytes).unwrap(), expected);
        }
        // Written as JSON: passed through as it is.
        let json = alert.to_json();
        let json_type = ("content-type", Some(&b"application/json"[..]));
        for format in [ValueFormat::Auto, ValueFormat::Json] {
            let line = render(&record(vec![json_type, schema], Some(json.as_bytes())), format);
            assert!(!line.error);
            assert_eq!(String::from_utf8(line.bytes).unwrap(), expected);
        }
        let forced = render(&record(vec![schema], Some(&proto)), ValueFormat::Json);
        assert_eq!(parsed(&forced)["error"], "the value is not a JSON object");
        let line = parsed(&render(&record(vec![schema], Some(&proto)), ValueFormat::Auto));
        assert_eq!((&line["ruleId"], &line["count"]), (&json!("repeated-pauses"), &json!(3)));
        assert_eq!(line["evidence"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_protobuf_event_is_printed_in_the_json_contract_after_where_it_was_read() {
        let (headers, proto, json) = event_outputs(GOOD);
        let headers: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|(n, v)| (*n, Some(v.as_bytes()))).collect();
        for format in [ValueFormat::Auto, ValueFormat::Protobuf] {
            let line = render(&record(headers.clone(), Some(&proto)), format);
            assert!(!line.error);
            let kafka = r#"{"_kafka":{"topic":"acs.acme.events","partition":1,"offset":41,"key":"u#d#h#acme","timestamp":1767261300123},"#;
            let expected = [kafka.as_bytes(), &json[1..]].concat();
            assert_eq!(String::from_utf8(line.bytes).unwrap(), String::from_utf8(expected).unwrap());
        }
    }

    #[test]
    fn a_json_event_is_passed_through_and_kept_on_one_line() {
        let (_, proto, json) = event_outputs(GOOD);
        let line = render(&record(vec![], Some(&json)), ValueFormat::Auto);
        let mut value = parsed(&line);
        assert_eq!(value.as_object_mut().unwrap().remove("_kafka").unwrap()["offset"], 41);
        assert_eq!(value, serde_json::from_slice::<Value>(&json).unwrap());
        assert!(line.bytes.ends_with(&json[1..]), "the value's bytes, as they are");

        let pretty = b"  {\n  \"a\": [1,\r\n 2]\n}\n";
        let line = render(&record(vec![], Some(pretty)), ValueFormat::Json);
        assert!(!line.bytes.contains(&b'\n') && !line.bytes.contains(&b'\r'));
        assert_eq!(parsed(&line)["a"], json!([1, 2]));
        let empty = render(&record(vec![], Some(b"{}")), ValueFormat::Auto);
        assert_eq!(parsed(&empty).as_object().unwrap().keys().collect::<Vec<_>>(), ["_kafka"]);

        let forced = render(&record(vec![], Some(&proto)), ValueFormat::Json);
        assert!(forced.error, "--format json on a protobuf value");
        assert_eq!(parsed(&forced)["error"], "the value is not a JSON object");
    }

    #[test]
    fn what_cannot_be_decoded_is_an_error_line_with_the_value() {
        type Headers<'a> = Vec<(&'a str, Option<&'a [u8]>)>;
        let alert = || vec![("acs-schema", Some(&b"acs.v1.Alert"[..]))];
        let unknown_severity = pb::Alert { severity: 9, ..an_alert().to_proto() }.encode_to_vec();
        let cases: [(Headers, Option<&[u8]>, &str); 8] = [
            (vec![], Some(b"\xff\x00garbage"), "cannot decode acs.v1.EnrichedEvent"),
            (vec![], Some(b"[1, 2]"), "cannot"),
            (vec![], None, "no value (a tombstone)"),
            (vec![("acs-schema", Some(b"acs.v9.Mystery"))], Some(b"x"), "unknown schema acs.v9.Mystery"),
            (alert(), Some(b"\xff\x00garbage"), "cannot decode acs.v1.Alert"),
            (alert(), Some(&unknown_severity), "cannot convert acs.v1.Alert: a severity or an action outside"),
            (alert(), Some(b"[1, 2]"), "cannot decode acs.v1.Alert"),
            (alert(), None, "no value (a tombstone)"),
        ];
        for (headers, value, error) in cases {
            let line = render(&record(headers, value), ValueFormat::Auto);
            assert!(line.error);
            let line = parsed(&line);
            assert!(line["error"].as_str().unwrap().starts_with(error), "{line}");
            assert_eq!(line["_kafka"]["partition"], 1);
            match value.map(std::str::from_utf8) {
                Some(Ok(text)) => assert_eq!(line["value"], text),
                Some(Err(_)) => {
                    assert_eq!(line["valueEncoding"], "base64");
                    let bytes = base64::engine::general_purpose::STANDARD.decode(line["value"].as_str().unwrap());
                    assert_eq!(bytes.unwrap(), value.unwrap());
                }
                None => assert_eq!(line["value"], Value::Null),
            }
        }
    }

    #[test]
    fn a_dead_letter_is_printed_with_its_error_and_original_bytes() {
        let dead = DeadLetter {
            rejection: Rejection::new(ErrorCode::InvalidUtf8, "not UTF-8 at byte 1"),
            source: Source { topic: Arc::from("acs.raw"), partition: 2, offset: 77 },
            processed_at: NOW,
        };
        let value: &[u8] = b"{\xff}";
        let key: &[u8] = b"k\xfe";
        let output = dead.to_record("acs.dlq", Some(key), value);
        let headers: Vec<(&str, Option<&[u8]>)> =
            output.headers.iter().map(|(name, value)| (*name, Some(value.as_bytes()))).collect();
        let mut view = record(headers, Some(value));
        view.key = Some(key);
        view.topic = "acs.dlq";
        let line = render(&view, ValueFormat::Auto);
        assert!(!line.error);
        let line = parsed(&line);
        assert_eq!(
            line["deadLetter"],
            json!({"code": "invalid_utf8", "detail": "not UTF-8 at byte 1", "sourceTopic": "acs.raw",
                   "sourcePartition": 2, "sourceOffset": 77, "processorVersion": crate::VERSION})
        );
        let decode = |field: &str| base64::engine::general_purpose::STANDARD.decode(line[field].as_str().unwrap());
        assert_eq!((decode("value").unwrap(), &line["valueEncoding"]), (value.to_vec(), &json!("base64")));
        assert_eq!((decode("key").unwrap(), &line["keyEncoding"]), (key.to_vec(), &json!("base64")));
        assert_eq!(line["_kafka"]["keyEncoding"], "base64");
        let first: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(first[0], "_kafka");

        // Only the code header: the rest is null.
        let view = record(vec![("acs.error.code", Some(b"malformed_json"))], Some(b"{"));
        let line = parsed(&render(&view, ValueFormat::Auto));
        assert_eq!(line["deadLetter"]["code"], "malformed_json");
        assert_eq!((&line["deadLetter"]["sourceOffset"], &line["value"]), (&Value::Null, &json!("{")));
    }

    #[test]
    fn records_are_told_apart_by_their_headers() {
        let event = record(vec![("acs-schema", Some(EVENT_SCHEMA.as_bytes()))], None);
        assert_eq!(kind(&event), Kind::Event);
        assert_eq!(kind(&record(vec![], None)), Kind::Event);
        let dead = record(vec![("acs-schema", Some(b"x")), ("acs.error.code", Some(b"too_large"))], None);
        assert_eq!(kind(&dead), Kind::DeadLetter);
        assert_eq!(kind(&record(vec![("acs-schema", Some(b"acs.v1.Alert"))], None)), Kind::Alert);
        assert_eq!(
            kind(&record(vec![("acs-schema", Some(b"acs.v9.Mystery"))], None)),
            Kind::Unknown("acs.v9.Mystery".into())
        );
    }

    #[test]
    fn tail_settings_commit_only_with_a_group() {
        let options = TailOptions {
            brokers: "b:1".into(),
            topic: "t".into(),
            from: StartAt::End,
            max: None,
            exit_at_end: false,
            group: None,
            format: ValueFormat::Auto,
            consumer_config: vec![("fetch.min.bytes".into(), "1".into())],
        };
        let config = consumer_config(&options).unwrap();
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("auto.offset.reset"), Some("latest"));
        assert_eq!(config.get("fetch.min.bytes"), Some("1"));
        let grouped = TailOptions { group: Some("g".into()), ..options.clone() };
        let config = consumer_config(&grouped).unwrap();
        assert_eq!((config.get("group.id"), config.get("enable.auto.commit")), (Some("g"), Some("true")));
        let refused = TailOptions { consumer_config: vec![("group.id".into(), "x".into())], ..options };
        assert!(matches!(consumer_config(&refused), Err(TailError::Fixed { .. })));
    }

    #[test]
    fn a_closed_output_ends_tail_and_other_write_errors_fail_it() {
        struct Failing(io::ErrorKind);
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(self.0.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(self.0.into())
            }
        }
        let closed = write_line(&mut Failing(io::ErrorKind::BrokenPipe), b"{}");
        assert_eq!(closed.unwrap(), Some(TailEnd::OutputClosed));
        assert!(matches!(flush(&mut Failing(io::ErrorKind::StorageFull)), Err(TailError::Write(_))));
        let mut out = Vec::new();
        assert_eq!(write_line(&mut out, b"{}").unwrap(), None);
        assert_eq!(out, b"{}\n");
    }

    #[test]
    fn end_offsets_are_reached_per_partition() {
        let mut ends = Ends { remaining: HashMap::from([(0, 10), (1, 3)]) };
        ends.reached(0, 9);
        ends.reached(1, 3);
        assert!(!ends.all_reached());
        ends.reached(0, 10);
        assert!(ends.all_reached());
    }
}
