//! `acs-stream generate --brokers`, run as a user runs it, against
//! librdkafka's in-process mock cluster (made here; it does not support CreateTopics, so
//! topics are made through its own API).

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use acs_stream::commands::demo;
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;

/// Upper bound on waiting for records: a guard against a hang, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(120);
const EXIT_USAGE: i32 = 64;
/// 2026-01-01T09:55:00Z: the synthetic traffic's start.
const START_MS: i64 = 1_767_261_300_000;

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
    ];
    for (args, reason) in cases {
        let output = acs_stream().args(*args).stdout(Stdio::null()).output().unwrap();
        assert_eq!(output.status.code(), Some(EXIT_USAGE), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(reason), "{args:?}: {}", stderr(&output));
    }
}
