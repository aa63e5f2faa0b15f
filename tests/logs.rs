//! No personal data in any log line: the service runs on the mock cluster over every golden
//! input (all four upstream shapes, hostile and malformed records, session scenarios), with
//! an output refused by the broker on the way, logging everything at TRACE; no login, name,
//! IP, user agent, reason message or delivery execution id (it holds the user id) of the
//! input appears in what it logged, nor the privacy key.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acs_stream::config::Config;
use acs_stream::kafka::runtime;
use acs_stream::model::{ReasonCatalog, Source};
use acs_stream::pipeline::{Outcome, Pipeline, Record};
use acs_stream::synth::SynthRecord;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Where the logs go: one buffer for the whole binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

/// Personal fields, by their names in the upstream shapes.
const PERSONAL: [&str; 9] =
    ["login", "name", "testTaker", "ip", "userAgent", "reasonMessage", "message", "deliveryExecutionId", "_id"];

/// Every string value of a personal field, anywhere in `value` (nested shapes included).
fn personal_values(value: &serde_json::Value, found: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if let (true, Some(text)) = (PERSONAL.contains(&key.as_str()), value.as_str()) {
                    found.insert(text.to_owned());
                }
                personal_values(value, found);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| personal_values(item, found)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_is_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt().with_env_filter("trace").with_writer(move || writer.clone()).with_ansi(false).init();

    let mut inputs: Vec<SynthRecord> = Vec::new();
    let mut personal = BTreeSet::new();
    let mut golden: Vec<_> = std::fs::read_dir("tests/golden").unwrap().map(|e| e.unwrap().path()).collect();
    golden.sort();
    for case in golden {
        let Ok(text) = std::fs::read(case.join("input.jsonl")) else { continue };
        // Records a producer can send (the 2 MiB golden case is above librdkafka's 1 MB).
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty() && l.len() < 900_000) {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) {
                personal_values(&value, &mut personal);
            }
            inputs.push(SynthRecord { key: b"upstream-key".to_vec(), value: line.to_vec(), malformed: false });
        }
    }
    // Short values ("a", "x") would match anything; every realistic one is longer.
    personal.retain(|value| value.len() >= 5);
    assert!(personal.len() > 20 && inputs.len() > 100, "{} values, {} inputs", personal.len(), inputs.len());

    let file = String::from(
        "[kafka]\nbrokers = \"BROKERS\"\ngroup_id = \"acs-logs\"\ncommit_interval = \"200ms\"\n\
         [kafka.consumer]\n\"session.timeout.ms\" = 6000\n\"fetch.wait.max.ms\" = 10\n\"statistics.interval.ms\" = 100\n\
         [kafka.producer]\n\"max.in.flight.requests.per.connection\" = 1\n\
         [topics]\ncreate = false\n[sessions]\nchangelog_topic = \"\"\n[shutdown]\ngrace = \"20s\"\n\
         [privacy]\nkey = \"PRIVACY-KEY-never-logged-0123456789abcdef\"\n[privacy.tenants]\nglobex = \"pseudonymize\"\n",
    );
    // The output topics, as the core routes the inputs (the mock cluster cannot create them
    // on request).
    let offline =
        Pipeline::new(&Config::layered(Some(("test", &file)), []).unwrap(), ReasonCatalog::builtin()).unwrap();
    let mut topics: BTreeSet<String> = BTreeSet::from(["acs.dlq".to_owned()]);
    let mut alert_topics: BTreeSet<String> = BTreeSet::new();
    for (offset, input) in inputs.iter().enumerate() {
        let source = Source { topic: Arc::from("acs.raw"), partition: 0, offset: offset as i64 };
        if let Outcome::Event { output, alerts, .. } =
            offline.process(&Record::new(None, &input.value, source), &mut offline.sessions(), now_ms())
        {
            topics.insert(output.topic.into_owned());
            alert_topics.extend(alerts.iter().map(|alerted| alerted.topic().to_owned()));
        }
    }
    // Alerts of tenants without an alert offline may still fire in another order: all of them.
    alert_topics.extend(topics.iter().filter_map(|t| Some(format!("{}.alerts", t.strip_suffix(".events")?))));

    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("acs.raw", 2, 1).unwrap();
    for topic in topics.iter().chain(&alert_topics) {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    cluster.create_topic("acs-logs.tenant-signals", 2, 1).unwrap();
    acs_stream::commands::demo::produce(&brokers, "acs.raw", inputs.iter().cloned()).unwrap();
    // The first produce request is refused: outputs are dead-lettered as produce_failed
    // (logged), dead letters sent again without their value (logged).
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    let config = Config::layered(Some(("test", &file.replace("BROKERS", &brokers))), []).unwrap();
    let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap();
    let expected = inputs.len();
    let reader = {
        let brokers = brokers.clone();
        let topics: Vec<String> = topics.into_iter().collect();
        tokio::task::spawn_blocking(move || {
            acs_stream::commands::demo::read_outputs(&brokers, &topics, 1, expected, Duration::from_secs(120), |_| {})
                .expect("every output arrives")
        })
    };
    let summary = runtime::run(&config, &pipeline, async {
        reader.await.unwrap();
    })
    .await
    .unwrap();
    assert!(summary.drained && summary.dead_letters > 0, "{summary:?}");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("Partitions assigned"), "the service logged:\n{logs}");
    assert!(summary.produce_failed == 0 || logs.contains("Output refused"), "the refusal is logged");
    for value in &personal {
        assert!(!logs.contains(value.as_str()), "personal data {value:?} in the logs:\n{logs}");
    }
    assert!(!logs.contains("PRIVACY-KEY"), "the privacy key in the logs:\n{logs}");
}
