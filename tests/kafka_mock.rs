//! The Kafka service end to end on librdkafka's in-process mock cluster: every valid input
//! lands in its tenant's topic with its key and headers, every malformed one in the
//! dead-letter topic with its original bytes, committed offsets reach the end of the input,
//! and a restarted processor resumes where it stopped.

mod common;

use std::time::Duration;

use acs_stream::commands::demo::{self, OutputRecord};
use acs_stream::config::Config;
use acs_stream::kafka::runtime::{self, RunSummary};
use acs_stream::model::ReasonCatalog;
use acs_stream::pipeline::Pipeline;
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use common::service::{Service, logs};
use common::{check_outputs, committed_for, reference_sessions, sessions_of};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;

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
    let options = SynthOptions {
        seed,
        tenants: 2,
        malformed_ratio: 0.1,
        start_ms: now_ms() - 3_600_000,
        ..SynthOptions::stress()
    };
    Generator::new(options).take_records(count)
}

fn produce(brokers: &str, records: &[SynthRecord]) {
    produce_to(brokers, INPUT, records);
}

fn produce_to(brokers: &str, topic: &str, records: &[SynthRecord]) {
    demo::produce(brokers, topic, records.iter().cloned()).expect("input produced");
}

/// Reads the output topics from the beginning until `expected` records are there.
fn read_outputs(brokers: &str, expected: usize) -> Vec<OutputRecord> {
    let topics: Vec<String> = OUTPUTS.iter().map(|t| t.to_string()).collect();
    demo::read_outputs(brokers, &topics, 2, expected, PATIENCE, |_| {}).expect("all outputs arrive")
}

/// In-flight bounds of the tests: small, so that backpressure (pausing and resuming
/// partitions) happens, on records and on bytes.
const MAX_IN_FLIGHT: usize = 50;
const MAX_IN_FLIGHT_BYTES: usize = 16_384;

fn config(brokers: &str, producer: &str) -> Config {
    config_for(brokers, "acs-test", &format!("\"{INPUT}\""), producer)
}

/// `inputs`: the TOML array items of `kafka.input_topics`.
fn config_for(brokers: &str, group: &str, inputs: &str, producer: &str) -> Config {
    config_with(brokers, group, inputs, producer, "")
}

/// [`config_for`], with more TOML (sections other than those it writes).
fn config_with(brokers: &str, group: &str, inputs: &str, producer: &str, more: &str) -> Config {
    // A short session: the mock cluster keeps a stopped member in the group until its
    // session times out (45 s by default), which the restart below would wait out. Short
    // fetch waits: after a backpressure pause, the mock cluster answers the next fetch only
    // after fetch.wait.max.ms. A short metadata refresh: new topics matching a regex
    // subscription are seen at the next refresh.
    // Rules off unless the test turns them on: the tenant topic's partitions would join the
    // group's assignment, which these tests count.
    let rules = if more.contains("[rules]") { "" } else { "[rules]\nenabled = false\n" };
    let file = format!(
        "{rules}[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\ninput_topics = [{inputs}]\ncommit_interval = \"200ms\"\n\
         max_in_flight = {MAX_IN_FLIGHT}\nmax_in_flight_bytes = {MAX_IN_FLIGHT_BYTES}\n\
         [kafka.consumer]\n\"session.timeout.ms\" = 6000\n\"fetch.wait.max.ms\" = 10\n\"topic.metadata.refresh.interval.ms\" = 500\n[kafka.producer]\n{producer}\n[topics]\ncreate = false\n[shutdown]\ngrace = \"20s\"\n{more}"
    );
    Config::layered(Some(("test", &file)), []).unwrap()
}

/// Runs the service until `expected` outputs exist in total, then shuts it down.
async fn run_until(brokers: &str, expected: usize, config: Config) -> (RunSummary, Vec<OutputRecord>) {
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

fn committed(brokers: &str) -> std::collections::BTreeMap<i32, (Option<i64>, i64)> {
    committed_for(brokers, "acs-test", INPUT, INPUT_PARTITIONS)
}

/// Records in the output topics now (the sum of their end offsets).
fn output_count(brokers: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    OUTPUTS
        .iter()
        .flat_map(|topic| (0..2).map(move |partition| (topic, partition)))
        .map(|(topic, partition)| consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap().1)
        .sum()
}

/// A one-broker cluster with the input and output topics (the mock cluster does not
/// support CreateTopics, so they are made through its own API).
fn cluster() -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String) {
    cluster_for(INPUT, INPUT_PARTITIONS, "acs-test")
}

/// The same, with the input `input` of `partitions` partitions and the session changelog of
/// consumer group `group`.
fn cluster_for(
    input: &str,
    partitions: i32,
    group: &str,
) -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic(input, partitions, 1).unwrap();
    cluster.create_topic(&format!("{group}.sessions.changelog"), partitions, 1).unwrap();
    for topic in OUTPUTS {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    common::create_rule_topics(&cluster, group, partitions);
    (cluster, brokers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_lands_offsets_are_committed_and_a_restart_resumes() {
    // Kept alive for the whole test: dropping it stops the cluster.
    let (_cluster, brokers) = cluster();

    let first = records(1, 400);
    produce(&brokers, &first);
    let (summary, outputs) = run_until(&brokers, first.len(), config(&brokers, "")).await;
    assert!(summary.drained, "{summary:?}");
    assert_eq!(summary.consumed, first.len() as u64);
    assert_eq!(outputs.len(), first.len());
    check_outputs(&first, &outputs, "acs", INPUT);
    // The bounds held: once crossed, the consumer paused before taking another record.
    assert!(summary.peak_in_flight <= MAX_IN_FLIGHT, "{summary:?}");
    let largest = first.iter().map(|r| r.key.len() + 2 * r.value.len()).max().unwrap();
    assert!(summary.peak_in_flight_bytes < MAX_IN_FLIGHT_BYTES + 2 * largest, "{summary:?}");
    for (partition, (offset, high)) in committed(&brokers) {
        assert_eq!(offset, Some(high), "partition {partition}: committed up to the end of the input");
    }

    // A restart with the same group resumes after what was committed: only new input.
    let second = records(2, 200);
    produce(&brokers, &second);
    let (summary, outputs) = run_until(&brokers, first.len() + second.len(), config(&brokers, "")).await;
    assert!(summary.drained, "{summary:?}");
    assert_eq!(summary.consumed, second.len() as u64, "nothing consumed twice after a clean stop");
    let all: Vec<SynthRecord> = first.iter().chain(&second).cloned().collect();
    check_outputs(&all, &outputs, "acs", INPUT);
    for (partition, (offset, high)) in committed(&brokers) {
        assert_eq!(offset, Some(high), "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_continue_after_a_restart_from_their_changelog() {
    let (_cluster, brokers) = cluster();
    let inputs = records(11, 400);
    let (first, second) = inputs.split_at(200);
    produce(&brokers, first);
    let (before, _) = run_until(&brokers, first.len(), config(&brokers, "")).await;
    assert!(before.drained && before.changelog_records > 0, "{before:?}");
    assert_eq!(before.restored_records, 0, "nothing to restore at the first start: {before:?}");
    // Changes are coalesced: a flush writes each changed session once, however many of its
    // events it covers.
    let sessions: std::collections::HashSet<&[u8]> = first.iter().map(|r| r.key.as_slice()).collect();
    assert!(before.flushes >= 1, "{before:?}");
    assert!(
        before.changelog_records <= sessions.len() as u64 * before.flushes,
        "{} sessions: {before:?}",
        sessions.len()
    );
    assert!(before.changelog_records < before.events, "{before:?}");

    // A new processor (nothing in memory) restores the sessions before processing the rest.
    produce(&brokers, second);
    let (after, outputs) = run_until(&brokers, inputs.len(), config(&brokers, "")).await;
    assert!(after.drained, "{after:?}");
    assert!(after.restored_records > 0 && after.restored_entries > 0 && after.restore_errors == 0, "{after:?}");

    // Every event's session view is the one a processor that never stopped gives it:
    // statuses continue, sequence and counters neither restart nor count twice.
    let expected = reference_sessions(&inputs, now_ms());
    let actual = sessions_of(&outputs, "acs");
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    let mut spanning = 0;
    for (id, views) in &actual {
        let views: Vec<_> = views.iter().map(|(_, session)| *session).collect();
        assert_eq!(&views, &expected[id], "session {id}");
        let first_offsets = first.iter().filter(|r| r.key == id.as_bytes() && !r.malformed).count();
        spanning += usize::from(first_offsets > 0 && first_offsets < views.len());
    }
    assert!(spanning >= 5, "sessions with events on both sides of the restart: {spanning}");
}

/// `GET path` on the admin server at `address`: status code and JSON body.
async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get_text(address, path).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// `GET path` on the admin server at `address`: status code and body.
async fn http_get_text(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split(' ').nth(1).unwrap().parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1;
        (status, body.to_owned())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_readiness_and_live_sessions() {
    use acs_stream::admin::{self, Admin};
    use acs_stream::kafka::runtime::{Observers, Readiness};

    let (_cluster, brokers) = cluster();
    let inputs = records(13, 200);
    produce(&brokers, &inputs);
    let config = config(&brokers, "");
    let (readiness, watched) = tokio::sync::watch::channel(Readiness::default());
    let (queries, asked) = tokio::sync::mpsc::channel(4);
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut ready = watched.clone();
    let (address, serving) = admin::bind(
        "127.0.0.1:0".parse().unwrap(),
        Admin { readiness: watched, queries, metrics: None, liveness: None },
        async {
            let _ = admin_stopped.await;
        },
    )
    .await
    .unwrap();
    let serving = tokio::spawn(serving);
    assert_eq!(http_get(address, "/readyz").await.0, 503, "not in the group yet");
    let (stop, service) = spawn_service(config, Observers { readiness, queries: Some(asked), ..Observers::default() });
    let outputs = read_outputs_blocking(&brokers, inputs.len()).await;
    // Ready once restored; the outputs above came after the restore.
    tokio::time::timeout(PATIENCE, ready.wait_for(|r| r.joined && r.restoring == 0)).await.unwrap().unwrap();
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!((status, &body["assignedPartitions"]), (200, &serde_json::json!(INPUT_PARTITIONS)), "{body}");

    // Every session's live state is its last event's.
    let expected = reference_sessions(&inputs, now_ms());
    let views = sessions_of(&outputs, "acs");
    assert!(!views.is_empty());
    for (id, views) in &views {
        let ((partition, _), last) = views.last().unwrap();
        let path = format!("/sessions/{}", id.replace('#', "%23"));
        let (status, body) = http_get(address, &path).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["input"], serde_json::json!({"topic": INPUT, "partition": partition}));
        let session = &body["session"];
        assert_eq!(session["sequence"], serde_json::json!(last.sequence), "{id}: {body}");
        assert_eq!(session["pauseCount"], serde_json::json!(last.pause_count));
        assert_eq!(session["securityFlagCount"], serde_json::json!(last.security_flag_count));
        assert_eq!(expected[id].last().unwrap().sequence, last.sequence);
    }
    assert_eq!(http_get(address, "/sessions/nobody%23d%23h%23acme").await.0, 404);

    let _ = stop.send(());
    let summary = service.await.unwrap();
    assert!(summary.drained, "{summary:?}");
    let _ = stop_admin.send(());
    serving.await.unwrap().unwrap();
}

/// Runs the service in the background with `observers`; it stops when the sender is used
/// (or dropped) and gives its summary.
fn spawn_service(
    config: Config,
    observers: acs_stream::kafka::runtime::Observers,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<RunSummary>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(async move {
        let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap();
        let shutdown = async {
            let _ = stopped.await;
        };
        runtime::run_with(&config, &pipeline, shutdown, observers).await.unwrap()
    });
    (stop, service)
}

/// The Prometheus recorder of this test binary (one per process), installed on first use.
fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| acs_stream::telemetry::install_prometheus().unwrap()).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_lag_and_readiness_follow_the_processing_and_the_brokers() {
    use acs_stream::admin::{self, Admin};
    use acs_stream::kafka::runtime::{Observers, Readiness};
    use acs_stream::telemetry;

    let input = "acs.raw.observed";
    let (cluster, brokers) = cluster_for(input, INPUT_PARTITIONS, "acs-observed");
    let inputs = records(14, 300);
    produce_to(&brokers, input, &inputs);
    let mut config = config_for(&brokers, "acs-observed", &format!("\"{input}\""), "");
    // Statistics (lag, broker states) often, so that the test does not wait for them.
    config.kafka.consumer.insert("statistics.interval.ms".into(), "100".into());
    let (readiness, watched) = tokio::sync::watch::channel(Readiness::default());
    let (queries, asked) = tokio::sync::mpsc::channel(4);
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut ready = watched.clone();
    let admin = Admin { readiness: watched, queries, metrics: Some(prometheus()), liveness: None };
    let (address, serving) = admin::bind("127.0.0.1:0".parse().unwrap(), admin, async {
        let _ = admin_stopped.await;
    })
    .await
    .unwrap();
    let serving = tokio::spawn(serving);
    let (stop, service) = spawn_service(config, Observers { readiness, queries: Some(asked), ..Observers::default() });
    read_outputs_blocking(&brokers, inputs.len()).await;

    // The lag of each partition, from the statistics after each change of readiness (every
    // statistics round publishes it): never negative, and 0 once everything is processed.
    let lag_prefix = format!("{}{{", telemetry::CONSUMER_LAG);
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        let (status, text) = http_get_text(address, "/metrics").await;
        assert_eq!(status, 200);
        let lags: Vec<f64> = text
            .lines()
            .filter(|line| line.starts_with(&lag_prefix) && line.contains(&format!("topic=\"{input}\"")))
            .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(lags.iter().all(|lag| *lag >= 0.0), "{text}");
        if lags.len() == INPUT_PARTITIONS as usize && lags.iter().all(|lag| *lag == 0.0) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "lags {lags:?}:\n{text}");
        tokio::time::timeout(PATIENCE, ready.changed()).await.unwrap().unwrap();
    };
    // Every metric the code exports is served (alerts come with rules; the configuration in
    // force is set by `run` as it starts, outside the runtime).
    for &(name, ..) in telemetry::METRICS {
        if ![telemetry::ALERTS, telemetry::ALERTS_FOLDED, telemetry::CONFIG_INFO].contains(&name) {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing:\n{text}");
        }
    }
    assert_eq!(http_get(address, "/readyz").await.0, 200);

    // The broker goes away: not ready, saying why; back: ready again.
    cluster.broker_down(1).unwrap();
    tokio::time::timeout(PATIENCE, ready.wait_for(|r| r.brokers_down)).await.unwrap().unwrap();
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["reasons"].as_array().unwrap().contains(&serde_json::json!("no Kafka broker reachable")), "{body}");
    cluster.broker_up(1).unwrap();
    tokio::time::timeout(PATIENCE, ready.wait_for(|r| !r.brokers_down)).await.unwrap().unwrap();
    assert_eq!(http_get(address, "/readyz").await.0, 200);

    let _ = stop.send(());
    let summary = service.await.unwrap();
    assert!(summary.drained, "{summary:?}");
    let _ = stop_admin.send(());
    serving.await.unwrap().unwrap();

    // A restart with input waiting: right after the assignment the position is unknown; the
    // lag is never negative meanwhile, and comes down to 0 again (vector#21649).
    let more = records(15, 200);
    produce_to(&brokers, input, &more);
    let mut config = config_for(&brokers, "acs-observed", &format!("\"{input}\""), "");
    config.kafka.consumer.insert("statistics.interval.ms".into(), "100".into());
    let (readiness, mut ready) = tokio::sync::watch::channel(Readiness::default());
    let (stop, service) = spawn_service(config, Observers { readiness, ..Observers::default() });
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = 0;
    loop {
        tokio::time::timeout(PATIENCE, ready.changed()).await.unwrap().unwrap();
        let text = prometheus().render();
        let lags: Vec<f64> = text
            .lines()
            .filter(|line| line.starts_with(&lag_prefix) && line.contains(&format!("topic=\"{input}\"")))
            .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(lags.iter().all(|lag| *lag >= 0.0), "{text}");
        seen += 1;
        let consumed = committed_for(&brokers, "acs-observed", input, INPUT_PARTITIONS)
            .values()
            .all(|(offset, high)| *offset == Some(*high));
        if consumed && lags.iter().all(|lag| *lag == 0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lags {lags:?} after {seen} rounds");
    }
    let _ = stop.send(());
    assert!(service.await.unwrap().drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stopped_by_a_lost_state_change_is_reported_stuck() {
    use acs_stream::kafka::runtime::{Observers, Readiness};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    logs();
    let input = "acs.raw.stuck";
    let (cluster, brokers) = cluster_for(input, INPUT_PARTITIONS, "acs-stuck");
    produce_to(&brokers, input, &records(16, 150));
    // The first produce requests are refused for good: events are dead-lettered, the dead
    // letters sent again without their value, and what is refused after that (changelog
    // records, dead letters) is lost, which stops its partition (never committed past):
    // records left, no progress.
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 8]);
    let mut config =
        config_for(&brokers, "acs-stuck", &format!("\"{input}\""), "\"max.in.flight.requests.per.connection\" = 1");
    config.kafka.consumer.insert("statistics.interval.ms".into(), "100".into());
    config.admin.stuck_after = Duration::from_secs(1);
    let (readiness, mut ready) = tokio::sync::watch::channel(Readiness::default());
    let (stop, service) = spawn_service(config, Observers { readiness, ..Observers::default() });
    let stuck = tokio::time::timeout(PATIENCE, ready.wait_for(|r| !r.stuck.is_empty())).await.unwrap().unwrap().clone();
    assert!(stuck.stuck.iter().all(|tp| &*tp.topic == input), "{stuck:?}");
    assert!(
        stuck.reasons().iter().any(|reason| reason.contains("stuck: records left and no progress")),
        "{:?}",
        stuck.reasons()
    );
    let _ = stop.send(());
    let summary = service.await.unwrap();
    assert!(!summary.drained, "a stopped partition is not drained: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_refuses_is_dead_lettered_as_produce_failed() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let (cluster, brokers) = cluster();
    let inputs = records(3, 120);
    produce(&brokers, &inputs);
    // The next produce request (the service's first batch) is refused for good, whatever it
    // holds: events (dead-lettered as produce_failed with the original record) and dead
    // letters (sent again without the original value).
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    // One produce request in flight at a time: the refused batch is then the only one, and
    // the idempotent producer continues without a sequence gap (with later batches in
    // flight, librdkafka must bump the producer epoch, which the mock cluster may refuse
    // with a fatal error: the service then stops, and the input is processed again).
    let producer = "\"max.in.flight.requests.per.connection\" = 1";
    // Without the session changelog: the refused batch must hold outputs (a changelog
    // record refused for good stops its partition instead).
    let mut config = config(&brokers, producer);
    config.sessions.changelog_topic = String::new();
    let (summary, outputs) = run_until(&brokers, inputs.len(), config).await;
    assert!(summary.drained, "{summary:?}");
    assert_eq!(outputs.len(), inputs.len(), "every record ends in exactly one output");
    let code = |o: &OutputRecord| o.headers.get("acs.error.code").cloned();
    let failed: Vec<&OutputRecord> = outputs.iter().filter(|o| code(o).as_deref() == Some("produce_failed")).collect();
    assert_eq!(failed.len() as u64, summary.produce_failed);
    for dead in &failed {
        let input = inputs.iter().find(|r| r.value == dead.value).expect("the original value, unchanged");
        assert!(!input.malformed);
        assert_eq!(dead.key.as_deref(), Some(input.key.as_slice()), "the original key");
        assert_eq!(dead.headers.get("acs.error.output").map(String::as_str), Some("event"), "names the refused output");
    }
    // Malformed records whose dead letter was in the refused batch: sent again without the
    // value, saying why; the others keep their original bytes.
    let rejected: Vec<&OutputRecord> =
        outputs.iter().filter(|o| code(o).is_some_and(|c| c != "produce_failed")).collect();
    assert_eq!(rejected.len(), inputs.iter().filter(|r| r.malformed).count());
    let omitted = rejected.iter().filter(|o| o.headers.contains_key("acs.value.omitted")).count();
    for dead in &rejected {
        if dead.headers.contains_key("acs.value.omitted") {
            assert!(dead.value.is_empty());
        } else {
            assert!(inputs.iter().any(|r| r.malformed && r.value == dead.value), "original bytes");
        }
    }
    eprintln!(
        "refused batch: {} events dead-lettered, {omitted} dead letters sent without value",
        summary.produce_failed
    );
    assert!(summary.produce_failed + omitted as u64 >= 1, "the refused batch held events or dead letters: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_processor_takes_over_partitions_without_loss_or_duplicates() {
    const PARTITIONS: i32 = 4;
    let input = "acs.raw.rebalance";
    let (_cluster, brokers) = cluster_for(input, PARTITIONS, "acs-rebalance");
    let config = || config_for(&brokers, "acs-rebalance", &format!("\"{input}\""), "");

    let mut first = Service::start(config(), PATIENCE);
    first.owns(|owned| owned.len() == PARTITIONS as usize).await;
    let before = records(4, 300);
    produce_to(&brokers, input, &before);
    read_outputs_blocking(&brokers, before.len()).await;
    // Committed before the second joins: the mock cluster refuses commits while its group
    // rebalances, so a commit due at the join could be refused and its tail processed again
    // (at least once, but not what this test is about).
    let wait = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || common::wait_committed(&brokers, "acs-rebalance", input, PARTITIONS, PATIENCE)
    });
    wait.await.expect("committed");

    // A second member joins: the first revokes (draining what it holds), the partitions are
    // shared, each resumes from the committed offsets.
    let mut second = Service::start(config(), PATIENCE);
    let taken = second.owns(|owned| !owned.is_empty()).await;
    let kept = first.owns(|owned| !owned.is_empty() && owned.len() < PARTITIONS as usize).await;
    assert!(taken.is_disjoint(&kept), "a partition has one owner: {taken:?} / {kept:?}");

    let after = records(5, 300);
    produce_to(&brokers, input, &after);
    let outputs = read_outputs_blocking(&brokers, before.len() + after.len()).await;
    // One member leaves, then the other, once it owns every partition: a member stopped
    // while its group rebalances may have its last commit refused (the mock cluster refuses
    // commits during a rebalance), and its successor then processes the tail again.
    let first = first.stop().await;
    second.owns(|owned| owned.len() == PARTITIONS as usize).await;
    let second = second.stop().await;
    assert!(first.drained && second.drained, "{first:?} {second:?}");
    assert!(second.consumed > 0, "the second member processed its share: {second:?}");
    assert_eq!(first.consumed + second.consumed, 600, "no record processed twice: {first:?} {second:?}");
    let written = output_count(&brokers);
    if written != 600 {
        let all = read_outputs_blocking(&brokers, written as usize).await;
        let mut seen = std::collections::BTreeMap::new();
        for output in &all {
            let source = match output.headers.get("acs.source.offset") {
                Some(offset) => (output.headers["acs.source.partition"].clone(), offset.clone()),
                None => {
                    use prost::Message as _;
                    let event = acs_stream::encode::proto::pb::EnrichedEvent::decode(output.value.as_slice()).unwrap();
                    let source = event.source.unwrap();
                    (source.partition.to_string(), source.offset.to_string())
                }
            };
            *seen.entry(source).or_insert(0) += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        panic!(
            "{written} outputs for 600 records; written more than once: {} {twice:?}\n{first:?}\n{second:?}",
            twice.len()
        );
    }
    let all: Vec<SynthRecord> = before.iter().chain(&after).cloned().collect();
    check_outputs(&all, &outputs, "acs", INPUT);
    for (partition, (offset, high)) in committed_for(&brokers, "acs-rebalance", input, PARTITIONS) {
        assert_eq!(offset, Some(high), "partition {partition}: committed up to the end of the input");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_of_a_rebalance_restores_the_moved_sessions_and_continues_them() {
    const PARTITIONS: i32 = 4;
    let input = "acs.raw.moved";
    let (_cluster, brokers) = cluster_for(input, PARTITIONS, "acs-moved");
    let config = || config_for(&brokers, "acs-moved", &format!("\"{input}\""), "");
    let mut survivor = Service::start(config(), PATIENCE);
    survivor.owns(|owned| owned.len() == PARTITIONS as usize).await;
    let mut leaving = Service::start(config(), PATIENCE);
    let moved = leaving.owns(|owned| !owned.is_empty()).await;
    survivor.owns(|owned| owned.len() < PARTITIONS as usize).await;

    let inputs = records(12, 400);
    let (before, after) = inputs.split_at(200);
    produce_to(&brokers, input, before);
    read_outputs_blocking(&brokers, before.len()).await;
    // One member leaves: its partitions move to the survivor, which restores their sessions.
    let left = leaving.stop().await;
    assert!(left.drained && left.consumed > 0 && left.changelog_records > 0, "{left:?}");
    survivor.owns(|owned| owned.len() == PARTITIONS as usize).await;
    produce_to(&brokers, input, after);
    let outputs = read_outputs_blocking(&brokers, inputs.len()).await;
    let survived = survivor.stop().await;
    assert!(survived.drained && survived.restored_entries > 0, "the moved sessions were restored: {survived:?}");

    let expected = reference_sessions(&inputs, now_ms());
    let actual = sessions_of(&outputs, "acs");
    assert_eq!(actual.len(), expected.len(), "sessions");
    let mut continued = 0;
    for (id, views) in &actual {
        let partitions: std::collections::BTreeSet<i32> = views.iter().map(|((partition, _), _)| *partition).collect();
        let views: Vec<_> = views.iter().map(|(_, session)| *session).collect();
        assert_eq!(&views, &expected[id], "session {id}");
        let on_moved = partitions.iter().any(|p| moved.iter().any(|tp| tp.partition == *p));
        let spans = before.iter().any(|r| r.key == id.as_bytes()) && after.iter().any(|r| r.key == id.as_bytes());
        continued += usize::from(on_moved && spans);
    }
    assert!(continued >= 3, "sessions of moved partitions with events on both sides: {continued}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regex_subscription_picks_up_matching_topics_even_new_ones() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    for topic in OUTPUTS {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    cluster.create_topic("acs.raw.a", 2, 1).unwrap();
    cluster.create_topic("acs-regex.sessions.changelog", 2, 1).unwrap();
    common::create_rule_topics(&cluster, "acs-regex", 2);
    // Not matched: must not be consumed.
    cluster.create_topic("other.raw", 2, 1).unwrap();
    produce_to(&brokers, "other.raw", &records(9, 50));
    let a = records(6, 150);
    produce_to(&brokers, "acs.raw.a", &a);

    let mut service = Service::start(config_for(&brokers, "acs-regex", r"'^acs\.raw\..*'", ""), PATIENCE);
    service.owns(|owned| owned.len() == 2).await;
    read_outputs_blocking(&brokers, a.len()).await;

    // A matching topic created while the service runs is picked up at the next metadata
    // refresh; its records are processed like the others.
    cluster.create_topic("acs.raw.b", 2, 1).unwrap();
    let b = records(7, 150);
    produce_to(&brokers, "acs.raw.b", &b);
    let owned = service.owns(|owned| owned.len() == 4).await;
    assert!(owned.iter().all(|tp| tp.topic.starts_with("acs.raw.")), "{owned:?}");
    let outputs = read_outputs_blocking(&brokers, a.len() + b.len()).await;
    let summary = service.stop().await;
    assert_eq!(summary.consumed, 300, "only the matching topics: {summary:?}");
    assert_eq!(output_count(&brokers), 300);
    let all: Vec<SynthRecord> = a.iter().chain(&b).cloned().collect();
    check_outputs(&all, &outputs, "acs", INPUT);
    for topic in ["acs.raw.a", "acs.raw.b"] {
        for (partition, (offset, high)) in committed_for(&brokers, "acs-regex", topic, 2) {
            assert_eq!(offset, Some(high), "{topic}[{partition}]");
        }
    }
}

/// A record as read back: partition, key and headers.
type ReadBack = (i32, Vec<u8>, Vec<(String, Vec<u8>)>);

/// Every record of `topic` (`partitions` partitions, `count` records in all).
fn read_topic(brokers: &str, topic: &str, partitions: i32, count: usize) -> Vec<ReadBack> {
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "acs-test-topic-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(std::time::Instant::now() < deadline, "{} of {count} records of {topic}", records.len());
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message.unwrap();
        let headers = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        records.push((message.partition(), message.key().unwrap_or_default().to_vec(), headers));
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_keyed_otherwise_is_rekeyed_by_session_and_keeps_its_lineage() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    const PARTITIONS: i32 = 4;
    let (input, group) = ("acs.raw.unkeyed", "acs-rekey");
    let repartition = format!("{group}.repartition");
    let (_cluster, brokers) = cluster_for(input, PARTITIONS, group);
    _cluster.create_topic(&repartition, PARTITIONS, 1).unwrap();
    let config = || config_with(&brokers, group, &format!("\"{input}\""), "", "[input]\nkeyed_by = \"other\"\n");

    // Upstream keys by something else (here: a "device" shared by many sessions) and places
    // each session's records in one partition of its own choosing, not the one of its id.
    let inputs = records(13, 400);
    let mut sessions: Vec<Vec<u8>> = Vec::new();
    let upstream_key = |record: &SynthRecord| format!("device-{}", record.key.len() % 3).into_bytes();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let mut produce = |records: &[SynthRecord]| {
        for record in records {
            let rank = sessions.iter().position(|id| *id == record.key).unwrap_or_else(|| {
                sessions.push(record.key.clone());
                sessions.len() - 1
            });
            let key = upstream_key(record);
            let partition = rank as i32 % PARTITIONS;
            producer.send(BaseRecord::to(input).key(&key).payload(&record.value).partition(partition)).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    };

    // Processed in two runs: the second restores the sessions of the repartition partitions.
    let (first, second) = inputs.split_at(200);
    produce(first);
    let (before, _) = run_until(&brokers, first.len(), config()).await;
    produce(second);
    let (after, outputs) = run_until(&brokers, inputs.len(), config()).await;
    let valid = inputs.iter().filter(|r| !r.malformed).count() as u64;
    for summary in [&before, &after] {
        assert!(summary.drained && summary.repartitioned > 0, "{summary:?}");
    }
    assert_eq!(before.repartitioned + after.repartitioned, valid, "every valid record re-keyed once");
    assert_eq!(before.consumed + after.consumed, inputs.len() as u64 + valid, "read from the input, then re-keyed");
    assert!(after.restored_entries > 0, "the second run restored sessions: {after:?}");
    assert!(second.iter().any(|r| !r.malformed), "input left for the second run");
    check_outputs(&inputs, &outputs, "acs", input);

    // Sessions continue as one processor that saw everything in order would have them.
    let expected = reference_sessions(&inputs, now_ms());
    let actual = sessions_of(&outputs, "acs");
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (id, views) in &actual {
        let views: Vec<_> = views.iter().map(|(_, session)| *session).collect();
        assert_eq!(&views, &expected[id], "session {id}");
    }
    // Events name the upstream record (topic, partition, offset), not the repartition one.
    for output in outputs.iter().filter(|o| o.topic != "acs.dlq") {
        use prost::Message as _;
        let event = acs_stream::encode::proto::pb::EnrichedEvent::decode(output.value.as_slice()).unwrap();
        let source = event.source.expect("lineage");
        let rank = sessions.iter().position(|id| *id == event.delivery_execution_id.as_bytes()).unwrap();
        assert_eq!((source.topic.as_str(), source.partition), (input, rank as i32 % PARTITIONS));
    }
    // Dead letters keep the upstream key and name the upstream record.
    for output in outputs.iter().filter(|o| o.topic == "acs.dlq") {
        let record = inputs.iter().find(|r| r.value == output.value).expect("a malformed input");
        assert_eq!(output.key.as_deref(), Some(upstream_key(record).as_slice()), "upstream key");
        assert_eq!(output.headers["acs.source.topic"], input);
    }

    // In the repartition topic: keyed by session, each session in one partition, with the
    // upstream key and position in headers.
    let rekeyed = read_topic(&brokers, &repartition, PARTITIONS, valid as usize);
    let mut partitions: std::collections::BTreeMap<&[u8], std::collections::BTreeSet<i32>> = Default::default();
    for (partition, key, headers) in &rekeyed {
        partitions.entry(key).or_default().insert(*partition);
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
        assert_eq!(header("acs.source.topic"), Some(input.as_bytes()));
        assert!(header("acs.source.key").is_some_and(|k| k.starts_with(b"device-")), "{headers:?}");
    }
    assert!(partitions.values().all(|p| p.len() == 1), "one partition per session");
    let used: std::collections::BTreeSet<i32> = partitions.values().flatten().copied().collect();
    assert!(used.len() > 1, "sessions spread over the repartition partitions: {used:?}");
    for topic in [input, repartition.as_str()] {
        for (partition, (offset, high)) in committed_for(&brokers, group, topic, PARTITIONS) {
            assert_eq!(offset, Some(high), "{topic}[{partition}] committed to its end");
        }
    }
}

/// [`read_outputs`] off the async worker threads.
async fn read_outputs_blocking(brokers: &str, expected: usize) -> Vec<OutputRecord> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || read_outputs(&brokers, expected)).await.unwrap()
}
