//! The Kafka service end to end on librdkafka's in-process mock cluster: every valid input
//! lands in its tenant's topic with its key and headers, every malformed one in the
//! dead-letter topic with its original bytes, committed offsets reach the end of the input,
//! and a restarted processor resumes where it stopped.

use std::collections::BTreeMap;
use std::time::Duration;

use acs_stream::commands::demo::{self, OutputRecord};
use acs_stream::config::Config;
use acs_stream::encode::proto::pb;
use acs_stream::kafka::runtime::{self, RunSummary};
use acs_stream::model::ReasonCatalog;
use acs_stream::pipeline::Pipeline;
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};

const INPUT: &str = "acs.raw";
const INPUT_PARTITIONS: i32 = 3;
const OUTPUTS: [&str; 3] = ["acs.dlq", "acs.tenant-01.events", "acs.tenant-02.events"];
/// Upper bound on waiting for outputs: a guard against a hang, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(120);

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

fn records(seed: u64, count: usize) -> Vec<SynthRecord> {
    let options =
        SynthOptions { seed, tenants: 2, malformed_ratio: 0.1, start_ms: now_ms() - 3_600_000, ..Default::default() };
    Generator::new(options).take_records(count)
}

fn produce(brokers: &str, records: &[SynthRecord]) {
    demo::produce(brokers, INPUT, records.iter().cloned()).expect("input produced");
}

/// Reads the output topics from the beginning until `expected` records are there.
fn read_outputs(brokers: &str, expected: usize) -> Vec<OutputRecord> {
    let topics: Vec<String> = OUTPUTS.iter().map(|t| t.to_string()).collect();
    demo::read_outputs(brokers, &topics, 2, expected, PATIENCE, |_| {}).expect("all outputs arrive")
}

fn config(brokers: &str, producer: &str) -> Config {
    // A small in-flight window, so that backpressure (pausing and resuming partitions)
    // happens. A short session: the mock cluster keeps a stopped member in the group until its
    // session times out (45 s by default), which the restart below would wait out.
    let file = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"acs-test\"\ninput_topics = [\"{INPUT}\"]\ncommit_interval = \"200ms\"\n\
         max_in_flight = 50\n\
         [kafka.consumer]\n\"session.timeout.ms\" = 6000\n[kafka.producer]\n{producer}\n[topics]\ncreate = false\n[shutdown]\ngrace = \"20s\"\n"
    );
    Config::layered(Some(("test", &file)), []).unwrap()
}

/// Runs the service until `expected` outputs exist in total, then shuts it down.
async fn run_until(brokers: &str, expected: usize, producer: &str) -> (RunSummary, Vec<OutputRecord>) {
    let config = config(brokers, producer);
    let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap();
    let reader_brokers = brokers.to_owned();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let outputs = read_outputs(&reader_brokers, expected);
        let _ = done_tx.send(());
        outputs
    });
    let shutdown = async {
        let _ = done_rx.await;
    };
    let summary =
        runtime::run(&config, &pipeline, shutdown).await.unwrap_or_else(|error| panic!("the service stopped: {error}"));
    (summary, reader.await.unwrap())
}

fn committed(brokers: &str) -> BTreeMap<i32, (i64, i64)> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "acs-test").create().unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..INPUT_PARTITIONS {
        list.add_partition(INPUT, partition);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    (0..INPUT_PARTITIONS)
        .map(|partition| {
            let offset = match committed.find_partition(INPUT, partition).unwrap().offset() {
                Offset::Offset(offset) => offset,
                other => panic!("partition {partition}: no committed offset ({other:?})"),
            };
            let (_, high) = consumer.fetch_watermarks(INPUT, partition, Duration::from_secs(10)).unwrap();
            (partition, (offset, high))
        })
        .collect()
}

fn check_outputs(inputs: &[SynthRecord], outputs: &[OutputRecord]) {
    let mut dead: Vec<&[u8]> = Vec::new();
    let mut events: Vec<(&str, &[u8], pb::EnrichedEvent)> = Vec::new();
    for OutputRecord { topic, key, value, headers } in outputs {
        if topic == "acs.dlq" {
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
            assert_eq!(headers["acs.source.topic"], INPUT);
            dead.push(value);
        } else {
            assert_eq!(headers.get("content-type").map(String::as_str), Some("application/x-protobuf"));
            assert_eq!(headers.get("acs-schema").map(String::as_str), Some("acs.v1.EnrichedEvent"));
            let event = pb::EnrichedEvent::decode(value.as_slice()).expect("protobuf event");
            assert_eq!(key.as_deref(), Some(event.delivery_execution_id.as_bytes()), "keyed by delivery execution id");
            assert_eq!(topic, &format!("acs.{}.events", event.tenant_id), "routed to its tenant");
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

/// A one-broker cluster with the input and output topics (the mock cluster does not
/// support CreateTopics, so they are made through its own API).
fn cluster() -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic(INPUT, INPUT_PARTITIONS, 1).unwrap();
    for topic in OUTPUTS {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    (cluster, brokers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_lands_offsets_are_committed_and_a_restart_resumes() {
    // Kept alive for the whole test: dropping it stops the cluster.
    let (_cluster, brokers) = cluster();

    let first = records(1, 400);
    produce(&brokers, &first);
    let (summary, outputs) = run_until(&brokers, first.len(), "").await;
    assert!(summary.drained, "{summary:?}");
    assert_eq!(summary.consumed, first.len() as u64);
    assert_eq!(outputs.len(), first.len());
    check_outputs(&first, &outputs);
    for (partition, (offset, high)) in committed(&brokers) {
        assert_eq!(offset, high, "partition {partition}: committed up to the end of the input");
    }

    // A restart with the same group resumes after what was committed: only new input.
    let second = records(2, 200);
    produce(&brokers, &second);
    let (summary, outputs) = run_until(&brokers, first.len() + second.len(), "").await;
    assert!(summary.drained, "{summary:?}");
    assert_eq!(summary.consumed, second.len() as u64, "nothing consumed twice after a clean stop");
    let all: Vec<SynthRecord> = first.iter().chain(&second).cloned().collect();
    check_outputs(&all, &outputs);
    for (partition, (offset, high)) in committed(&brokers) {
        assert_eq!(offset, high, "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky on the mock cluster (2 of about 12 runs under load): after the injected \
            MSG_SIZE_TOO_LARGE, 2 of 120 outputs sometimes never arrive; to investigate with \
            the issue-3 work (suspect: the dead-letter send refused while the idempotent \
            producer recovers, which the runtime then treats as lost)"]
async fn an_output_the_broker_refuses_is_dead_lettered_as_produce_failed() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let (cluster, brokers) = cluster();
    let inputs = records(3, 120);
    produce(&brokers, &inputs);
    // The next produce request (the service's first batch) is refused for good.
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    // One produce request in flight at a time: the refused batch is then the only one, and
    // the idempotent producer continues without a sequence gap (with later batches in
    // flight, librdkafka must bump the producer epoch, which the mock cluster may refuse
    // with a fatal error: the service then stops, and the input is processed again).
    let producer = "\"max.in.flight.requests.per.connection\" = 1";
    let (summary, outputs) = run_until(&brokers, inputs.len(), producer).await;
    assert!(summary.drained, "{summary:?}");
    assert!(summary.produce_failed >= 1, "{summary:?}");
    let failed: Vec<&OutputRecord> = outputs
        .iter()
        .filter(|o| o.headers.get("acs.error.code").map(String::as_str) == Some("produce_failed"))
        .collect();
    assert_eq!(failed.len() as u64, summary.produce_failed);
    for dead in &failed {
        let input = inputs.iter().find(|r| r.value == dead.value).expect("the original value, unchanged");
        assert!(!input.malformed);
        assert_eq!(dead.key.as_deref(), Some(input.key.as_slice()), "the original key");
    }
    assert_eq!(outputs.len(), inputs.len(), "every record ends in exactly one output");
}
