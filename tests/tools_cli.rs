//! `acs-stream generate --brokers` and `acs-stream tail`, run as a user runs them, against
//! librdkafka's in-process mock cluster (made here; it does not support CreateTopics, so
//! topics are made through its own API).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use acs_stream::commands::demo;
use acs_stream::config::Config;
use acs_stream::encode::ALERT_SCHEMA;
use acs_stream::encode::Format;
use acs_stream::encode::proto::pb;
use acs_stream::model::{ReasonCatalog, Source};
use acs_stream::pipeline::{Outcome, Pipeline, Record};
use acs_stream::rules::{Alert, RuleSet};
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use base64::Engine;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

/// Upper bound on waiting for records: a guard against a hang, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(120);
const EXIT_USAGE: i32 = 64;
/// 2026-01-01T09:55:00Z: the synthetic traffic's start.
const START_MS: i64 = 1_767_261_300_000;
/// The processing clock of the core's outputs: a day later, when every record is past.
const NOW_MS: i64 = START_MS + 86_400_000;

type Cluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

fn acs_stream() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_acs-stream"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ACS_STREAM__")) {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "warn");
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A one-broker cluster with these topics and partition counts.
fn cluster(topics: &[(&str, i32)]) -> (Cluster, String) {
    let cluster = MockCluster::new(1).unwrap();
    for (topic, partitions) in topics {
        cluster.create_topic(topic, *partitions, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

/// Records in the topic: the sum of its partitions' high watermarks.
fn records_in(brokers: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    (0..partitions).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).sum()
}

fn interrupt(child: &Child) {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// The stderr summary's counts: (sent, acknowledged, failed).
fn summary_counts(stderr: &str) -> (u64, u64, u64) {
    let line = stderr.lines().find(|line| line.contains(" records sent to ")).unwrap_or_else(|| panic!("{stderr}"));
    let number_before = |word: &str| -> u64 {
        let at = line.find(word).unwrap_or_else(|| panic!("{word} in {line}"));
        line[..at].split([' ', ',']).rfind(|s| !s.is_empty()).unwrap().parse().unwrap()
    };
    (number_before(" records sent"), number_before(" acknowledged"), number_before(" failed"))
}

const GENERATE_OPTIONS: [&str; 10] =
    ["--events", "500", "--seed", "9", "--tenants", "3", "--malformed-ratio", "0.05", "--start", "1767261300000"];

#[test]
fn generate_to_a_topic_produces_exactly_the_records_of_the_file_generator() {
    let (_cluster, brokers) = cluster(&[("acs.raw", 3)]);
    let output = acs_stream()
        .args(["generate", "--brokers", &brokers, "--topic", "acs.raw", "--rate", "20000"])
        .args(GENERATE_OPTIONS)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary_counts(&stderr(&output)), (500, 500, 0));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acs.jsonl");
    let written = acs_stream().args(["generate", "--out"]).arg(&file).args(GENERATE_OPTIONS).output().unwrap();
    assert!(written.status.success(), "{}", stderr(&written));
    let lines: Vec<Vec<u8>> = std::fs::read(&file).unwrap().split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let lines = &lines[..lines.len() - 1];
    // The keys: the library's generator gives the file's values, and their keys.
    let options = SynthOptions { seed: 9, tenants: 3, malformed_ratio: 0.05, start_ms: START_MS, ..Default::default() };
    let expected: Vec<SynthRecord> = Generator::new(options).take_records(500);
    assert!(expected.iter().map(|r| &r.value).eq(lines.iter()), "the library's records are the file's lines");

    let read = demo::read_outputs(&brokers, &["acs.raw".to_owned()], 3, 500, PATIENCE, |_| {}).unwrap();
    assert_eq!(records_in(&brokers, "acs.raw", 3), 500, "exactly --events records");
    // Per key (one partition each, read in offset order): the same values in the same order.
    let mut produced: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for record in read {
        produced.entry(record.key.expect("keyed")).or_default().push(record.value);
    }
    let mut generated: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for record in expected {
        generated.entry(record.key).or_default().push(record.value);
    }
    assert_eq!(produced.len(), generated.len());
    assert!(produced == generated, "the file's records, keyed by delivery execution id, in order per key");
}

#[test]
fn unbounded_generate_stops_on_sigint_once_every_record_is_acknowledged() {
    let (_cluster, brokers) = cluster(&[("acs.raw", 2)]);
    let child = acs_stream()
        .args(["generate", "--brokers", &brokers, "--topic", "acs.raw", "--events", "0", "--rate", "2000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Running: records arrive. Then the stop.
    demo::read_outputs(&brokers, &["acs.raw".to_owned()], 2, 50, PATIENCE, |_| {}).unwrap();
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    let stderr = stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("(stopped)"), "{stderr}");
    let (sent, acknowledged, failed) = summary_counts(&stderr);
    assert!(sent >= 50, "{stderr}");
    assert_eq!((acknowledged, failed), (sent, 0), "{stderr}");
    assert_eq!(records_in(&brokers, "acs.raw", 2), sent as i64, "what it says it sent is in the topic");
}

#[test]
fn failed_deliveries_are_counted_and_fail_the_command() {
    // A port nothing listens on: every record times out.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = acs_stream()
        .args(["generate", "--brokers", &format!("127.0.0.1:{port}"), "--topic", "acs.raw", "--events", "20"])
        .args(["--producer-config", "message.timeout.ms=300"])
        .output()
        .unwrap();
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(summary_counts(&stderr), (20, 0, 20));
    assert!(stderr.contains("first failure:") && stderr.contains("timed out"), "{stderr}");
}

#[test]
fn a_wrong_command_line_exits_64_with_the_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&["generate"], "required"),
        (&["generate", "--out", "-", "--brokers", "b:1", "--topic", "t"], "cannot be used with"),
        (&["generate", "--brokers", "b:1"], "--topic"),
        (&["generate", "--out", "-", "--topic", "t"], "cannot be used with"),
        (&["generate", "--out", "-", "--rate", "10"], "cannot be used with"),
        (&["generate", "--brokers", "b:1", "--topic", "t", "--rate", "0"], "--rate"),
        (&["generate", "--brokers", "b:1", "--topic", "t", "--rate=-3"], "--rate"),
        (&["generate", "--brokers", "b:1", "--topic", "t", "--producer-config", "linger.ms"], "KEY=VALUE"),
        (&["generate", "--brokers", "b:1", "--topic", "t", "--producer-config", "enable.idempotence=false"], "fixed"),
        (&["generate", "--brokers", "b:1", "--topic", "t", "--producer-config", "no.such.setting=1"], "no.such"),
        (&["generate", "--brokers", "b:1", "--topic", "t", "--malformed-ratio", "2"], "--malformed-ratio"),
        (&["tail", "--brokers", "b:1"], "--topic"),
        (&["tail", "--brokers", "b:1", "--topic", "t", "--from", "middle"], "middle"),
        (&["tail", "--brokers", "b:1", "--topic", "t", "--format", "xml"], "xml"),
        (&["tail", "--brokers", "b:1", "--topic", "t", "--consumer-config", "group.id=x"], "--group"),
    ];
    for (args, reason) in cases {
        let output = acs_stream().args(*args).stdout(Stdio::null()).output().unwrap();
        assert_eq!(output.status.code(), Some(EXIT_USAGE), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(reason), "{args:?}: {}", stderr(&output));
    }
}

/// What the core made of the inputs, per input offset: the protobuf outputs (to produce)
/// and what `process` writes for them (the JSON contract, or the dead letter's code, key
/// and original value).
struct CoreOutputs {
    records: Vec<Out>,
    events: BTreeMap<i64, Vec<u8>>,
    dead: BTreeMap<i64, Dead>,
}

/// A record to produce.
#[derive(Debug, Clone)]
struct Out {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

/// A dead letter as `process` reports it.
#[derive(Debug, Clone)]
struct Dead {
    code: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

const EVENT_TOPICS: [&str; 2] = ["acs.tenant-01.events", "acs.tenant-02.events"];

fn core_outputs() -> CoreOutputs {
    let options = SynthOptions { seed: 5, tenants: 2, malformed_ratio: 0.1, start_ms: START_MS, ..Default::default() };
    let mut inputs: Vec<(Option<Vec<u8>>, Vec<u8>)> =
        Generator::new(options).take_records(300).into_iter().map(|r| (Some(r.key), r.value)).collect();
    inputs.push((Some(b"k\xfe".to_vec()), b"{\"deliveryExecutionId\":\"u#d#h#tenant-01\",\"x\":\"\xff\"}".to_vec()));
    inputs.push((None, b"[]".to_vec()));
    let protobuf = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let json = protobuf.clone().with_format(Format::Json);
    let (mut proto_sessions, mut json_sessions) = (protobuf.sessions(), json.sessions());
    let mut outputs = CoreOutputs { records: Vec::new(), events: BTreeMap::new(), dead: BTreeMap::new() };
    for (offset, (key, value)) in inputs.iter().enumerate() {
        let offset = offset as i64;
        let record = Record::new(key.as_deref(), value, Source { topic: Arc::from("acs.raw"), partition: 0, offset });
        match (
            protobuf.process(&record, &mut proto_sessions, NOW_MS),
            json.process(&record, &mut json_sessions, NOW_MS),
        ) {
            (Outcome::Event { output, .. }, Outcome::Event { output: contract, .. }) => {
                let headers = output.headers.iter().map(|(name, value)| (*name, value.to_string())).collect();
                let key = output.key.map(|k| k.to_vec());
                outputs.records.push(Out {
                    topic: output.topic.into_owned(),
                    key,
                    value: output.value.to_vec(),
                    headers,
                });
                outputs.events.insert(offset, contract.value.to_vec());
            }
            (Outcome::DeadLetter(dead), Outcome::DeadLetter(_)) => {
                let output = dead.to_record(protobuf.dead_letter_topic(), key.as_deref(), value);
                let headers = output.headers.iter().map(|(name, value)| (*name, value.to_string())).collect();
                outputs.records.push(Out {
                    topic: output.topic.into_owned(),
                    key: key.clone(),
                    value: value.clone(),
                    headers,
                });
                let code = dead.rejection.code.as_str().to_owned();
                outputs.dead.insert(offset, Dead { code, key: key.clone(), value: value.clone() });
            }
            other => panic!("protobuf and JSON disagree: {other:?}"),
        }
    }
    assert!(outputs.events.len() > 200 && outputs.dead.len() > 10);
    outputs
}

fn produce(brokers: &str, records: &[Out]) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    for Out { topic, key, value, headers } in records {
        let mut owned = OwnedHeaders::new();
        for (name, text) in headers {
            owned = owned.insert(Header { key: name, value: Some(text.as_bytes()) });
        }
        let mut record = BaseRecord::to(topic).payload(value).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record).map_err(|(error, _)| error).unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

fn tail(brokers: &str, topic: &str, extra: &[&str]) -> Vec<String> {
    let output = acs_stream().args(["tail", "--brokers", brokers, "--topic", topic]).args(extra).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// Checks an event line: `_kafka` first, then exactly the bytes `process` writes; returns
/// the event's input offset.
fn check_event_line(line: &str, topic: &str, events: &BTreeMap<i64, Vec<u8>>) -> i64 {
    let mut parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(line.starts_with("{\"_kafka\":{"), "{line}");
    let kafka = parsed.as_object_mut().unwrap().remove("_kafka").unwrap();
    let offset = parsed["source"]["offset"].as_i64().unwrap();
    let contract = std::str::from_utf8(&events[&offset]).unwrap();
    assert!(line.ends_with(&format!(",{}", &contract[1..])), "{line}\nis not followed by\n{contract}");
    assert_eq!(parsed, serde_json::from_str::<Value>(contract).unwrap(), "nothing but _kafka before it");
    assert_eq!(kafka["topic"], topic);
    assert_eq!(kafka["key"], parsed["deliveryExecutionId"]);
    assert!(kafka["offset"].as_i64().unwrap() >= 0 && kafka["timestamp"].as_i64().unwrap() > 0, "{kafka}");
    offset
}

#[test]
fn tail_prints_events_in_the_json_contract_of_process_and_dead_letters_with_their_bytes() {
    let (_cluster, brokers) =
        cluster(&[(EVENT_TOPICS[0], 2), (EVENT_TOPICS[1], 2), ("acs.dlq", 1), ("acs.json.events", 2)]);
    let core = core_outputs();
    let mut records = core.records.clone();
    // Tenant 1's events in JSON (`output.format = "json"`) on another topic.
    let json_events: Vec<_> = core
        .records
        .iter()
        .filter(|out| out.topic == EVENT_TOPICS[0])
        .map(|out| {
            let event: pb::EnrichedEvent = prost::Message::decode(out.value.as_slice()).unwrap();
            let value = core.events[&event.source.unwrap().offset].clone();
            Out { topic: "acs.json.events".to_owned(), value, ..out.clone() }
        })
        .collect();
    records.extend(json_events.iter().cloned());
    // A value that is no event: an error line, and the next records follow.
    let garbage = b"\xff\x01not an event".to_vec();
    records.push(Out { topic: EVENT_TOPICS[0].to_owned(), key: None, value: garbage, headers: vec![] });
    produce(&brokers, &records);

    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for topic in EVENT_TOPICS {
        for line in tail(&brokers, topic, &["--exit-at-end"]) {
            if line.contains("\"error\":") {
                errors.push(line);
                continue;
            }
            assert!(seen.insert(check_event_line(&line, topic, &core.events)), "once: {line}");
        }
    }
    assert_eq!(seen, core.events.keys().copied().collect(), "every event, once");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error: Value = serde_json::from_str(&errors[0]).unwrap();
    assert!(error["error"].as_str().unwrap().starts_with("cannot"), "{error}");
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(error["value"].as_str().unwrap()).unwrap(),
        b"\xff\x01not an event"
    );

    let json_lines = tail(&brokers, "acs.json.events", &["--exit-at-end"]);
    assert_eq!(json_lines.len(), json_events.len());
    for line in &json_lines {
        check_event_line(line, "acs.json.events", &core.events);
    }
    let forced = tail(&brokers, "acs.json.events", &["--exit-at-end", "--format", "protobuf"]);
    assert_eq!(forced.len(), json_events.len(), "no crash on what protobuf cannot read");

    let dead_lines = tail(&brokers, "acs.dlq", &["--exit-at-end"]);
    assert_eq!(dead_lines.len(), core.dead.len());
    let decode = |text: &Value| base64::engine::general_purpose::STANDARD.decode(text.as_str().unwrap()).unwrap();
    for line in &dead_lines {
        let line: Value = serde_json::from_str(line).unwrap();
        let dead = &line["deadLetter"];
        let Dead { code, key, value } = &core.dead[&dead["sourceOffset"].as_i64().unwrap()];
        assert_eq!(
            (&dead["code"], &dead["sourceTopic"], &dead["sourcePartition"]),
            (&Value::from(code.as_str()), &Value::from("acs.raw"), &Value::from(0))
        );
        assert!(dead["detail"].is_string() && dead["processorVersion"].is_string(), "{line}");
        let bytes = |field: &str| match line[format!("{field}Encoding")].as_str() {
            Some("base64") => Some(decode(&line[field])),
            _ => line[field].as_str().map(|text| text.as_bytes().to_vec()),
        };
        assert_eq!(bytes("value").as_ref(), Some(value), "the original value: {line}");
        assert_eq!(bytes("key"), *key, "the original key: {line}");
    }
    assert!(dead_lines.iter().any(|line| line.contains("\"valueEncoding\":\"base64\"")), "the non-UTF-8 one");
}

/// A topic with `count` events of the core.
fn events_topic(count: usize) -> (Cluster, String, BTreeMap<i64, Vec<u8>>) {
    let (cluster, brokers) = cluster(&[(EVENT_TOPICS[0], 2), (EVENT_TOPICS[1], 2), ("acs.dlq", 1)]);
    let core = core_outputs();
    let records: Vec<_> = core.records.into_iter().filter(|out| out.topic == EVENT_TOPICS[0]).take(count).collect();
    assert_eq!(records.len(), count);
    produce(&brokers, &records);
    (cluster, brokers, core.events)
}

#[test]
fn tail_stops_after_max_records_and_prints_nothing_from_the_end() {
    let (_cluster, brokers, events) = events_topic(40);
    let lines = tail(&brokers, EVENT_TOPICS[0], &["--max", "7"]);
    assert_eq!(lines.len(), 7);
    for line in &lines {
        check_event_line(line, EVENT_TOPICS[0], &events);
    }
    assert_eq!(tail(&brokers, EVENT_TOPICS[0], &["--from", "end", "--exit-at-end"]), Vec::<String>::new());
    assert_eq!(tail(&brokers, "acs.dlq", &["--exit-at-end"]), Vec::<String>::new(), "an empty topic");
}

#[test]
fn tail_follows_until_sigint() {
    let (_cluster, brokers, events) = events_topic(10);
    let mut child = acs_stream()
        .args(["tail", "--brokers", &brokers, "--topic", EVENT_TOPICS[0]])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while lines.len() < 10 {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "tail ended early");
        lines.push(line);
    }
    // Everything is printed and tail is still following: stop it.
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("10 records (0 undecodable); stopped"), "{}", stderr(&output));
    for line in &lines {
        check_event_line(line.trim_end(), EVENT_TOPICS[0], &events);
    }
}

/// Synthetic traffic through the default rules: its alerts.
fn core_alerts() -> Vec<Alert> {
    // The flag-heavy mix: 400 records fire alerts of several rules.
    let options =
        SynthOptions { seed: 5, tenants: 1, malformed_ratio: 0.0, start_ms: START_MS, ..SynthOptions::stress() };
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let rules = RuleSet::defaults();
    let mut sessions = pipeline.sessions();
    let mut alerts = Vec::new();
    for (offset, record) in (0..).zip(Generator::new(options).take_records(400)) {
        let source = Source { topic: Arc::from("acs.raw"), partition: 0, offset };
        let Ok(mut event) = pipeline.enrich(&record.value, &source, NOW_MS) else { continue };
        let fired = sessions.apply_evaluating(&mut event, offset, NOW_MS, Some((&rules, None))).alerts;
        alerts.extend(fired.iter().map(|alerted| alerted.alert().expect("an alert of the contract")));
    }
    assert!(alerts.len() >= 5, "{} alerts", alerts.len());
    alerts
}

#[test]
fn tail_prints_alerts_in_the_alert_contract_from_protobuf_and_json() {
    let (_cluster, brokers) = cluster(&[("acs.tenant-01.alerts", 2)]);
    let alerts = core_alerts();
    let record = |alert: &Alert, format: Format| {
        let value = match format {
            Format::Protobuf => alert.to_proto_vec(),
            Format::Json => alert.to_json().into_bytes(),
        };
        let headers = vec![("content-type", format.content_type().to_owned()), ("acs-schema", ALERT_SCHEMA.to_owned())];
        let key = alert.delivery_execution_id.clone().unwrap_or_else(|| alert.tenant_id.to_string());
        Out { topic: "acs.tenant-01.alerts".to_owned(), key: Some(key.into_bytes()), value, headers }
    };
    let records: Vec<Out> = [Format::Protobuf, Format::Json]
        .into_iter()
        .flat_map(|format| alerts.iter().map(move |alert| record(alert, format)))
        .collect();
    produce(&brokers, &records);

    let lines = tail(&brokers, "acs.tenant-01.alerts", &["--exit-at-end"]);
    assert_eq!(lines.len(), 2 * alerts.len());
    let mut printed = BTreeMap::<String, usize>::new();
    for line in &lines {
        assert!(line.starts_with("{\"_kafka\":{\"topic\":\"acs.tenant-01.alerts\""), "{line}");
        let members = &line[line.find("},").unwrap() + 1..];
        *printed.entry(format!("{{{}", &members[1..])).or_default() += 1;
    }
    let expected = alerts.iter().fold(BTreeMap::<String, usize>::new(), |mut counts, alert| {
        *counts.entry(alert.to_json()).or_default() += 2;
        counts
    });
    assert_eq!(printed, expected, "every alert twice (protobuf and JSON), in the alert contract");
}

#[test]
fn tail_with_a_group_goes_on_where_it_stopped() {
    let (_cluster, brokers, events) = events_topic(30);
    let first = tail(&brokers, EVENT_TOPICS[0], &["--group", "reader", "--max", "12"]);
    let rest = tail(&brokers, EVENT_TOPICS[0], &["--group", "reader", "--exit-at-end"]);
    assert_eq!((first.len(), rest.len()), (12, 18));
    let offsets: BTreeSet<i64> =
        first.iter().chain(&rest).map(|line| check_event_line(line, EVENT_TOPICS[0], &events)).collect();
    assert_eq!(offsets.len(), 30, "nothing printed twice");
    let none = tail(&brokers, EVENT_TOPICS[0], &["--group", "reader", "--exit-at-end"]);
    assert_eq!(none, Vec::<String>::new(), "all committed: at the end at once");
    let again = tail(&brokers, EVENT_TOPICS[0], &["--exit-at-end"]);
    assert_eq!(again.len(), 30, "without a group, from the beginning");
}

/// Dead letters as the service writes them (through the core), and one without its value.
fn dead_letters(brokers: &str) -> Vec<(String, Vec<u8>)> {
    let config = Config::layered(Some(("t", "[tenants]\nallow = [\"acme\"]\n")), []).unwrap();
    let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap();
    let bad = [
        r#"{"deliveryExecutionId":"u1#d#h#acme","incidentTime":"soon"}"#,
        r#"{"deliveryExecutionId":"u2#d#h#globex","incidentTime":1767261300}"#,
        r#"{"deliveryExecutionId":"u3#d#h#acme","incident"#,
    ];
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let mut sent = Vec::new();
    for (offset, value) in (0..).zip(bad) {
        let source = Source { topic: Arc::from("acs.raw"), partition: 0, offset };
        let key = format!("key-{offset}");
        let Outcome::DeadLetter(dead) = pipeline.process(
            &Record::new(Some(key.as_bytes()), value.as_bytes(), source),
            &mut pipeline.sessions(),
            NOW_MS,
        ) else {
            panic!("{value} is refused")
        };
        let record = dead.to_record("acs.dlq", Some(key.as_bytes()), value.as_bytes());
        let mut headers = OwnedHeaders::new();
        for (name, text) in &record.headers {
            headers = headers.insert(Header { key: name, value: Some(text.as_ref()) });
        }
        let base = BaseRecord::to("acs.dlq").key(key.as_bytes()).payload(value.as_bytes()).headers(headers);
        producer.send(base).map_err(|(error, _)| error).unwrap();
        sent.push((dead.rejection.code.as_str().to_owned(), value.as_bytes().to_vec()));
    }
    let omitted = OwnedHeaders::new()
        .insert(Header { key: "acs.error.code", value: Some("invalid_time") })
        .insert(Header { key: "acs.source.topic", value: Some("acs.raw") })
        .insert(Header { key: "acs.value.omitted", value: Some("privacy: ...") });
    producer.send(BaseRecord::<(), [u8]>::to("acs.dlq").payload(&[][..]).headers(omitted)).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    sent
}

#[test]
fn replay_sends_dead_letters_back_refusing_what_it_cannot_fix() {
    let (_cluster, brokers) = cluster(&[("acs.dlq", 1), ("acs.raw", 1), ("acs.fixed", 1)]);
    let sent = dead_letters(&brokers);
    let codes: Vec<&str> = sent.iter().map(|(code, _)| code.as_str()).collect();
    assert_eq!(codes, ["invalid_time", "unknown_tenant", "malformed_json"]);
    let replay = |extra: &[&str]| {
        acs_stream().args(["replay", "--brokers", &brokers, "--topic", "acs.dlq"]).args(extra).output().unwrap()
    };

    let dry = replay(&["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = stderr(&dry);
    assert!(
        text.contains("4 dead letters read from acs.dlq; would replay 2; refused 1 (use --force), 1 without value"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["malformed_json", "0", "1", "0", "0"]),
        "{text}"
    );
    assert_eq!(records_in(&brokers, "acs.raw", 1), 0, "a dry run produces nothing");

    let only = replay(&["--code", "invalid_time", "--rate", "100"]);
    assert!(only.status.success(), "{}", stderr(&only));
    let raw = demo::read_outputs(&brokers, &["acs.raw".to_owned()], 1, 1, PATIENCE, |_| {}).unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!((raw[0].key.as_deref(), raw[0].value.as_slice()), (Some(&b"key-0"[..]), sent[0].1.as_slice()));
    assert_eq!(raw[0].headers["acs.replayed.from"], "acs.dlq/0/0", "names the dead letter");

    let forced = replay(&["--force", "--to", "acs.fixed"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let fixed = demo::read_outputs(&brokers, &["acs.fixed".to_owned()], 1, 3, PATIENCE, |_| {}).unwrap();
    let values: Vec<&[u8]> = fixed.iter().map(|r| r.value.as_slice()).collect();
    let expected: Vec<&[u8]> = sent.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(values, expected, "forced: the malformed record too, in order");
    assert!(stderr(&forced).contains("1 without value"), "never replayable");

    let missing = acs_stream().args(["replay", "--brokers", &brokers, "--topic", "acs.nothing"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
}
