//! Personal data per tenant on Apache Kafka (`common::broker::shared`): `acs-stream run`
//! with two tenants protected and one kept; then every record of every topic the service
//! wrote (events, alerts, dead letters, the session changelog: keys, values and headers) is
//! searched for every personal value of the protected tenants' input. The input topic and
//! the tenant topic (`rules.tenant_topic`, upstream records re-keyed as they came) are the
//! input's own: the README says who may read them. (The offline side: `tests/privacy.rs`.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use acs_stream::commands::demo;
use acs_stream::synth::{Generator, SynthOptions};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// A guard against a hang, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(240);
const KEY: &str = "broker-test-key-0123456789abcdef0123456789";

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

/// Every record of `topic` (from the beginning to its current end): key, value and header
/// values, as one byte string each.
fn everything_in(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "privacy-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
        if high > low {
            ends.insert(partition, high);
        }
        list.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let started = std::time::Instant::now();
    let mut records = Vec::new();
    while !ends.is_empty() {
        assert!(started.elapsed() < PATIENCE, "{topic}: records missing below {ends:?}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        let mut bytes = message.key().unwrap_or_default().to_vec();
        bytes.extend_from_slice(message.payload().unwrap_or_default());
        for header in message.headers().iter().flat_map(|headers| headers.iter()) {
            bytes.extend_from_slice(header.value.unwrap_or_default());
        }
        records.push(bytes);
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_topic_the_service_writes_holds_a_protected_tenants_personal_data() {
    let Some(common::broker::Broker { brokers, .. }) = common::broker::shared().cloned() else { return };
    let prefix = format!("privacy-{}-{}", std::process::id(), now_ms() % 1_000_000);
    let input = format!("{prefix}.raw");
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let new = NewTopic::new(&input, 2, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }
    let options = SynthOptions {
        seed: 21,
        tenants: 3,
        malformed_ratio: 0.05,
        start_ms: now_ms() - 3_600_000,
        ..SynthOptions::stress()
    };
    let records = Generator::new(options).take_records(1_500);
    demo::produce(&brokers, &input, records.iter().cloned()).expect("input produced");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("acs-stream.toml");
    std::fs::write(
        &config,
        format!(
            "[output]\nevents_topic = \"{prefix}.{{tenant}}.events\"\nalerts_topic = \"{prefix}.{{tenant}}.alerts\"\n\
             shadow_alerts_topic = \"{prefix}.{{tenant}}.alerts.shadow\"\n\
             incidents_topic = \"{prefix}.{{tenant}}.incidents\"\ndead_letter_topic = \"{prefix}.dlq\"\n\
             [kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{prefix}\"\ninput_topics = [\"{input}\"]\n\
             commit_interval = \"200ms\"\n[kafka.consumer]\n\"session.timeout.ms\" = 6000\n\
             [topics]\ncreate = true\npartitions = 2\nreplication_factor = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [privacy]\ndefault = \"pseudonymize\"\ndead_letter_value = \"omit\"\nip = \"network\"\n\
             [privacy.tenants]\n\"tenant-01\" = \"drop\"\n\"tenant-02\" = \"keep\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_acs-stream"))
        .args(["run", "--config"])
        .arg(&config)
        .env("ACS_STREAM__PRIVACY__KEY", KEY)
        .env("RUST_LOG", std::env::var("ACS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("acs-stream starts");
    common::wait_committed(&brokers, &prefix, &input, 2, PATIENCE);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());

    // The personal values only protected tenants sent (tenant-02's legitimately appear in
    // its own outputs and in the shared dead-letter topic and changelog).
    let mut by_tenant: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in &records {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&record.value) else { continue };
        let id =
            [&value["deliveryExecutionId"], &value["deliveryExecution"]["id"]].into_iter().find_map(|v| v.as_str());
        let Some(id) = id else { continue };
        let segments: Vec<&str> = id.split('#').collect();
        let values = by_tenant.entry(segments[segments.len() - 1].to_owned()).or_default();
        if segments.len() >= 4 {
            values.insert(segments[segments.len() - 4].to_owned());
        }
        for field in [
            &value["login"],
            &value["name"],
            &value["ip"],
            &value["userAgent"],
            &value["actorIdentity"]["id"],
            &value["actorIdentity"]["name"],
            &value["actorIdentity"]["ip"],
            &value["actorIdentity"]["userAgent"],
            &value["acsControl"]["user"]["sub"],
        ] {
            values.extend(field.as_str().filter(|v| v.len() >= 3).map(str::to_owned));
        }
    }
    let kept = by_tenant.remove("tenant-02").unwrap_or_default();
    let hidden: BTreeSet<String> = by_tenant.into_values().flatten().filter(|v| !kept.contains(v)).collect();
    assert!(hidden.len() > 30, "personal values to look for: {}", hidden.len());

    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let written: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| name.starts_with(&prefix) && *name != input && !name.ends_with(".tenant-signals"))
        .filter(|name| !name.contains("tenant-02."))
        .collect();
    for topic in [".tenant-01.events", ".tenant-03.alerts", ".dlq", ".sessions.changelog"] {
        assert!(written.iter().any(|name| name.ends_with(topic)), "{topic} in {written:?}");
    }
    for topic in &written {
        let records = everything_in(&brokers, topic);
        for record in &records {
            let text = String::from_utf8_lossy(record);
            if let Some(value) = hidden.iter().find(|value| text.contains(value.as_str())) {
                panic!("{value:?} in a record of {topic}: {text}");
            }
        }
        common::broker::say(&format!("{topic}: {} records searched", records.len()));
    }
}
