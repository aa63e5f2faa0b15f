//! The service's metrics, recorded by a debugging recorder (this test binary's global one)
//! while it processes valid and malformed records on the mock cluster: each counter moves by
//! exactly what the input says.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use acs_stream::config::Config;
use acs_stream::decode::ErrorCode;
use acs_stream::kafka::runtime;
use acs_stream::model::{Anomaly, ReasonCatalog, Source};
use acs_stream::pipeline::{Outcome, Pipeline, Record};
use acs_stream::rules::Scope;
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use acs_stream::telemetry;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rdkafka::mocking::MockCluster;

const INPUT: &str = "acs.raw";
const GROUP: &str = "acs-metrics";
const OUTPUTS: [&str; 3] = ["acs.dlq", "acs.tenant-01.events", "acs.tenant-02.events"];

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

/// One series: metric name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// Counts by label value.
type Counts<K> = BTreeMap<K, u64>;

/// What the input should do to the counters, as the core says on its own.
#[derive(Default)]
struct Expected {
    codes: Counts<&'static str>,
    anomalies: Counts<&'static str>,
    tenants: Counts<String>,
    /// Alerts of session-scoped rules, by rule and severity (tenant-scoped ones depend on how
    /// the partitions interleave).
    alerts: Counts<(String, &'static str)>,
}

fn expected(inputs: &[SynthRecord]) -> Expected {
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap().with_inline_tenants();
    let rules = pipeline.rules();
    let mut sessions = pipeline.sessions();
    let mut expected = Expected::default();
    let Expected { codes, anomalies, tenants, alerts } = &mut expected;
    for (offset, input) in inputs.iter().enumerate() {
        let source = Source { topic: std::sync::Arc::from(INPUT), partition: 0, offset: offset as i64 };
        match pipeline.process(&Record::new(Some(&input.key), &input.value, source), &mut sessions, now_ms()) {
            Outcome::Event { facts, alerts: fired, .. } => {
                for alerted in fired {
                    if rules.get(alerted.rule()).is_some_and(|rule| rule.scope == Scope::Session) {
                        *alerts.entry((alerted.rule().to_string(), alerted.severity.as_str())).or_default() += 1;
                    }
                }
                *tenants.entry(facts.tenant.to_string()).or_default() += 1;
                for anomaly in facts.anomalies {
                    *anomalies.entry(anomaly.as_str()).or_default() += 1;
                }
            }
            Outcome::DeadLetter(dead) => *codes.entry(dead.rejection.code.as_str()).or_default() += 1,
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_moves_exactly_the_expected_counters() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");
    telemetry::describe();
    // As `run` does: every rule's alert series starts at 0.
    telemetry::describe_rules(&acs_stream::rules::RuleSet::defaults());

    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic(INPUT, 3, 1).unwrap();
    cluster.create_topic(&format!("{GROUP}.sessions.changelog"), 3, 1).unwrap();
    for topic in OUTPUTS {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    common::create_rule_topics(&cluster, GROUP, 3);
    let options = SynthOptions {
        seed: 21,
        tenants: 2,
        malformed_ratio: 0.1,
        start_ms: now_ms() - 3_600_000,
        ..SynthOptions::stress()
    };
    let inputs = Generator::new(options).take_records(300);
    acs_stream::commands::demo::produce(&brokers, INPUT, inputs.iter().cloned()).unwrap();

    let file = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{GROUP}\"\ncommit_interval = \"200ms\"\n\
         [kafka.consumer]\n\"session.timeout.ms\" = 6000\n\"fetch.wait.max.ms\" = 10\n\
         [topics]\ncreate = false\n[shutdown]\ngrace = \"20s\"\n"
    );
    let config = Config::layered(Some(("test", &file)), []).unwrap();
    let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap();
    let reader = {
        let brokers = brokers.clone();
        let expected = inputs.len();
        tokio::task::spawn_blocking(move || {
            let topics: Vec<String> = OUTPUTS.iter().map(|t| t.to_string()).collect();
            acs_stream::commands::demo::read_outputs(&brokers, &topics, 2, expected, Duration::from_secs(120), |_| {})
                .expect("all outputs arrive")
        })
    };
    let summary = runtime::run(&config, &pipeline, async {
        reader.await.unwrap();
    })
    .await
    .unwrap();
    assert!(summary.drained, "{summary:?}");

    let mut counters: BTreeMap<Series, u64> = BTreeMap::new();
    let mut gauges: BTreeMap<Series, f64> = BTreeMap::new();
    let mut histograms: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut labels: Vec<(String, String)> =
            key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        labels.sort();
        let series = (key.name().to_owned(), labels);
        match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(count)) => {
                counters.insert(series, count);
            }
            (MetricKind::Gauge, DebugValue::Gauge(value)) => {
                gauges.insert(series, value.into_inner());
            }
            (MetricKind::Histogram, DebugValue::Histogram(values)) => {
                histograms.entry(series.0).or_default().extend(values.into_iter().map(|v| v.into_inner()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let counter = |name: &str, labels: &[(&str, &str)]| {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        counters.get(&(name.to_owned(), labels)).copied().unwrap_or_else(|| panic!("no {name} {counters:#?}"))
    };

    let Expected { codes, anomalies, tenants, alerts } = expected(&inputs);
    let dead = codes.values().sum::<u64>();
    let events = inputs.len() as u64 - dead;
    assert!(dead > 0 && events > 0, "both kinds of input");
    assert_eq!(counter(telemetry::RECORDS_CONSUMED, &[("topic", INPUT)]), inputs.len() as u64);
    assert_eq!(counter(telemetry::RECORDS_PUBLISHED, &[("kind", "event")]), events);
    assert_eq!(counter(telemetry::RECORDS_PUBLISHED, &[("kind", "dead_letter")]), dead);
    assert_eq!(counter(telemetry::RECORDS_PUBLISHED, &[("kind", "changelog")]), summary.changelog_records);
    assert!(summary.changelog_records > 0);
    // Alerts: those of session-scoped rules exactly as the core fires them; all of them
    // raised, counted by rule and severity, and published.
    assert!(alerts.values().sum::<u64>() > 0, "the synthetic sessions fire rules");
    let rules = acs_stream::rules::RuleSet::defaults();
    let mut raised = 0;
    for rule in rules.rules() {
        let labels = [("mode", rule.mode.as_str()), ("rule", &rule.id), ("severity", rule.severity.as_str())];
        let count = counter(telemetry::ALERTS, &labels);
        raised += count;
        if rule.scope == Scope::Session {
            let want = alerts.get(&(rule.id.to_string(), rule.severity.as_str())).copied().unwrap_or(0);
            assert_eq!(count, want, "{}", rule.id);
        }
    }
    assert_eq!(raised, summary.alerts);
    assert_eq!(counter(telemetry::RECORDS_PUBLISHED, &[("kind", "alert")]), summary.alerts);
    // Events of tenant-scoped rules, re-keyed by tenant (at least those counted already).
    assert!(counter(telemetry::RECORDS_PUBLISHED, &[("kind", "repartition")]) >= summary.tenant_records);
    for code in ErrorCode::ALL {
        let expected = codes.get(code.as_str()).copied().unwrap_or(0);
        assert_eq!(counter(telemetry::DEAD_LETTERS, &[("code", code.as_str())]), expected, "{code:?}");
    }
    assert!(anomalies.values().sum::<u64>() > 0, "some anomalies to count");
    for kind in Anomaly::ALL {
        let expected = anomalies.get(kind.as_str()).copied().unwrap_or(0);
        assert_eq!(counter(telemetry::ANOMALIES, &[("kind", kind.as_str())]), expected, "{kind:?}");
    }
    for (tenant, count) in &tenants {
        assert_eq!(counter(telemetry::TENANT_EVENTS, &[("tenant", tenant)]), *count, "{tenant}");
    }
    assert_eq!(counter(telemetry::PRODUCE_ERRORS, &[("retriable", "false")]), 0);
    assert!(counter(telemetry::COMMITS, &[("result", "sent")]) > 0, "periodic commits");
    assert!(counter(telemetry::COMMITS, &[("result", "committed")]) > 0, "the final commit");
    assert_eq!(counter(telemetry::COMMITS, &[("result", "failed")]), 0);
    // Histograms: one processing latency per input record, one event-time lag per event,
    // none negative.
    assert_eq!(histograms[telemetry::PROCESSING_SECONDS].len(), inputs.len());
    assert_eq!(histograms[telemetry::EVENT_TIME_LAG_SECONDS].len() as u64, events);
    assert!(histograms.values().flatten().all(|v| *v >= 0.0));
    let gauge = |name: &str| gauges.get(&(name.to_owned(), Vec::new())).copied();
    // The input's 3 partitions and the tenant topic's 3.
    assert_eq!(gauge(telemetry::ASSIGNED_PARTITIONS), Some(6.0));
    assert!(gauge(telemetry::ACTIVE_SESSIONS).is_some_and(|sessions| sessions > 0.0), "{gauges:?}");
}
