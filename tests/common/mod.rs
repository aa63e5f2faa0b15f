//! Checks shared by the Kafka tests (mock cluster and real broker).

#![allow(dead_code)] // each test target uses its own part

pub mod alerts;
pub mod broker;
pub mod checks;
pub mod processor;
pub mod service;
pub mod topics;

/// Upper bound on waiting for outputs and commits in the broker tests: a guard against a
/// hang, not a speed assertion.
pub const BROKER_PATIENCE: Duration = Duration::from_secs(240);

use std::collections::BTreeMap;
use std::time::Duration;

use acs_stream::commands::demo::OutputRecord;
use acs_stream::encode::proto::pb;
use acs_stream::synth::SynthRecord;
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// Every valid input became exactly one event in `<prefix>.<tenant>.events`, keyed by its
/// delivery execution id, with the protobuf headers; every malformed one exactly one dead
/// letter in `<prefix>.dlq` with its original bytes and the six headers, read from
/// `input` (or, for a regex subscription, a topic whose name starts with it).
pub fn check_outputs(inputs: &[SynthRecord], outputs: &[OutputRecord], prefix: &str, input: &str) {
    let mut dead: Vec<&[u8]> = Vec::new();
    let mut events: Vec<(&str, &[u8], pb::EnrichedEvent)> = Vec::new();
    for OutputRecord { topic, key, value, headers } in outputs {
        if *topic == format!("{prefix}.dlq") {
            for header in [
                "acs.error.code",
                "acs.error.detail",
                "acs.source.topic",
                "acs.source.partition",
                "acs.source.offset",
                "acs.processor.version",
            ] {
                assert!(headers.contains_key(header), "{header} missing: {headers:?}");
            }
            assert!(headers["acs.source.topic"].starts_with(input), "{headers:?}");
            dead.push(value);
        } else {
            assert_eq!(headers.get("content-type").map(String::as_str), Some("application/x-protobuf"));
            assert_eq!(headers.get("acs-schema").map(String::as_str), Some("acs.v1.EnrichedEvent"));
            let event = pb::EnrichedEvent::decode(value.as_slice()).expect("protobuf event");
            assert_eq!(key.as_deref(), Some(event.delivery_execution_id.as_bytes()), "keyed by delivery execution id");
            assert_eq!(topic, &format!("{prefix}.{}.events", event.tenant_id), "routed to its tenant");
            events.push((topic, key.as_deref().unwrap(), event));
        }
    }
    let mut expected_dead: Vec<&[u8]> = inputs.iter().filter(|r| r.malformed).map(|r| r.value.as_slice()).collect();
    expected_dead.sort();
    dead.sort();
    assert_eq!(dead, expected_dead, "every malformed input, and only those, dead-lettered with its original bytes");
    let mut expected_keys: Vec<&[u8]> = inputs.iter().filter(|r| !r.malformed).map(|r| r.key.as_slice()).collect();
    let mut keys: Vec<&[u8]> = events.iter().map(|(_, key, _)| *key).collect();
    expected_keys.sort();
    keys.sort();
    assert_eq!(keys, expected_keys, "every valid input became one event");
}

/// The topics of the default rules for the tests' tenants (tenant-01, tenant-02), on a
/// cluster that does not create topics (the mock cluster): their alerts topics, and the
/// tenant topic of consumer group `group` with `partitions` partitions.
pub fn create_rule_topics<C: rdkafka::ClientContext>(
    cluster: &rdkafka::mocking::MockCluster<'_, C>,
    group: &str,
    partitions: i32,
) {
    for tenant in ["tenant-01", "tenant-02"] {
        cluster.create_topic(&format!("acs.{tenant}.alerts"), 2, 1).unwrap();
    }
    cluster.create_topic(&format!("{group}.tenant-signals"), partitions, 1).unwrap();
}

/// Per partition of `topic`: the group's committed offset (None before any commit) and the
/// end of the partition.
pub fn committed_for(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, (Option<i64>, i64)> {
    try_committed_for(brokers, group, topic, partitions).expect("committed offsets and watermarks")
}

/// Waits until `group` has committed every partition of `topic` up to its end (an empty
/// partition needs no commit), failing the test after `patience`.
pub fn wait_committed(brokers: &str, group: &str, topic: &str, partitions: i32, patience: std::time::Duration) {
    let started = std::time::Instant::now();
    loop {
        // A request the loaded broker times out is asked again, within the same patience.
        let committed = try_committed_for(brokers, group, topic, partitions);
        if committed.as_ref().is_ok_and(|c| c.values().all(|(offset, high)| offset.unwrap_or(0) == *high)) {
            return;
        }
        assert!(started.elapsed() < patience, "not committed to the end within {patience:?}: {committed:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// [`committed_for`], with the broker's error (a loaded broker may time out a request: a
/// caller that polls retries).
pub fn try_committed_for(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, (Option<i64>, i64)>, KafkaError> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    (0..partitions)
        .map(|partition| {
            let offset = match committed.find_partition(topic, partition).map(|p| p.offset()) {
                Some(Offset::Offset(offset)) => Some(offset),
                _ => None,
            };
            let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            Ok((partition, (offset, high)))
        })
        .collect()
}

/// Session views by delivery execution id, each with where its event was read from (input
/// partition and offset).
pub type SessionViews = BTreeMap<String, Vec<((i32, i64), pb::Session)>>;

/// Session views of the events of `outputs`, by delivery execution id, in input order
/// (source partition, then offset).
pub fn sessions_of(outputs: &[OutputRecord], prefix: &str) -> SessionViews {
    let mut sessions = SessionViews::new();
    for output in outputs.iter().filter(|o| o.topic != format!("{prefix}.dlq")) {
        let event = pb::EnrichedEvent::decode(output.value.as_slice()).expect("protobuf event");
        let source = event.source.as_ref().expect("source");
        let position = (source.partition, source.offset);
        let session = event.session.expect("every event carries its session");
        sessions.entry(event.delivery_execution_id).or_default().push((position, session));
    }
    for views in sessions.values_mut() {
        views.sort_by_key(|(position, _)| *position);
    }
    sessions
}

/// The session views one processor gives the valid `inputs` when it sees them all, in order,
/// without a restart, at processing time `now_ms`: what a restarted processor must continue.
pub fn reference_sessions(inputs: &[SynthRecord], now_ms: i64) -> BTreeMap<String, Vec<pb::Session>> {
    use std::sync::Arc;

    use acs_stream::config::Config;
    use acs_stream::model::{ReasonCatalog, Source};
    use acs_stream::pipeline::{Outcome, Pipeline, Record};

    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let mut state = pipeline.sessions();
    let mut sessions: BTreeMap<String, Vec<pb::Session>> = BTreeMap::new();
    for (offset, input) in inputs.iter().enumerate() {
        let source = Source { topic: Arc::from("reference"), partition: 0, offset: offset as i64 };
        let record = Record::new(Some(&input.key), &input.value, source);
        if let Outcome::Event { output, .. } = pipeline.process(&record, &mut state, now_ms) {
            let event = pb::EnrichedEvent::decode(&*output.value).unwrap();
            sessions.entry(event.delivery_execution_id).or_default().push(event.session.unwrap());
        }
    }
    sessions
}

/// What must carry over a restart: status, position and counters (not `status_before` and
/// `transition_valid`, which describe one event).
pub fn counters(session: &pb::Session) -> (i32, u64, u32, u32, u64) {
    let extra = (session.extra_time_minutes * 1000.0).round() as u64;
    (session.status_after, session.sequence, session.pause_count, session.security_flag_count, extra)
}

/// Where the input record of an output (an event, or a dead letter in `<prefix>.dlq`) was
/// read: its source partition and offset.
pub fn source_position(output: &OutputRecord, prefix: &str) -> (i32, i64) {
    if output.topic == format!("{prefix}.dlq") {
        let header = |name: &str| output.headers.get(name).unwrap_or_else(|| panic!("{name} missing"));
        (header("acs.source.partition").parse().unwrap(), header("acs.source.offset").parse().unwrap())
    } else {
        let event = pb::EnrichedEvent::decode(output.value.as_slice()).expect("protobuf event");
        let source = event.source.expect("source");
        (source.partition, source.offset)
    }
}
