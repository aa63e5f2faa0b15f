//! Exactly-once on Apache Kafka (`kafka.guarantee = "exactly_once"`), checked the way Apache
//! Kafka checks its own transactions: what a `read_committed` consumer reads after the
//! faults holds every input's outputs once (events, dead letters, alerts, tenant-topic
//! records), no transaction is left open (every partition's last stable offset is its high
//! watermark), every session's views are those of an uninterrupted run, and the
//! session-scoped alerts are the reference's, ids and contents. Faults: the processor killed
//! with SIGKILL at random points while input flows; a second instance joining and leaving;
//! outputs the brokers refuse for good (each transaction holding one aborts, its records are
//! processed again with the refused output dead-lettered once).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use acs_stream::commands::demo::OutputRecord;
use acs_stream::config::Config;
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use common::BROKER_PATIENCE as PATIENCE;
use common::alerts::{assert_same_alerts, published_alerts, reference_session_alerts};
use common::broker::{Broker, say};
use common::processor::{RunConfig, expected_id, start, terminate, wait_committed};
use common::service::Service;
use common::topics::{create_topics, input_ends, now_ms, open_transactions, produce, read_committed, unique};

const INPUT_PARTITIONS: i32 = 3;
/// Output topics are created by the service with 2 partitions (`RunConfig`).
const OUTPUT_PARTITIONS: i32 = 2;

fn broker() -> Option<&'static Broker> {
    common::broker::shared()
}

fn inputs(seed: u64, count: usize) -> Vec<SynthRecord> {
    let options =
        SynthOptions { seed, tenants: 2, malformed_ratio: 0.02, start_ms: now_ms() - 3_600_000, ..Default::default() };
    Generator::new(options).take_records(count)
}

/// What the checks found, for the test's summary line.
#[derive(Debug, Default)]
struct Checked {
    events: usize,
    dead_letters: usize,
    produce_failed: usize,
    session_alerts: usize,
    tenant_alerts: usize,
    tenant_records: usize,
}

/// Reads what the run of `prefix` published, as a `read_committed` consumer, and checks it
/// against `inputs`: each input's event (or dead letter) exactly once, sessions and
/// session-scoped alerts as the reference's, no alert and no tenant-topic record twice, no
/// transaction left open. `refused_tenant`: that tenant's events topic refuses every record:
/// each of its valid inputs is one `produce_failed` dead letter naming the event instead.
fn check_exactly_once(
    brokers: &str,
    prefix: &str,
    input: &str,
    inputs: &[SynthRecord],
    refused_tenant: Option<&str>,
) -> Checked {
    let event_topics: Vec<String> = ["tenant-01", "tenant-02"].iter().map(|t| format!("{prefix}.{t}.events")).collect();
    let mut output_topics = event_topics.clone();
    output_topics.push(format!("{prefix}.dlq"));
    output_topics.extend(["tenant-01", "tenant-02"].iter().map(|t| format!("{prefix}.{t}.alerts")));
    let internal = vec![format!("{prefix}.tenant-signals"), format!("{prefix}.sessions.changelog")];
    // The group's lag is 0 on the tenant topic too, which is written in transactions (each
    // ending with a marker the consumer never hands over: the commits step over them).
    let tenant = format!("{prefix}.tenant-signals");
    for (partition, (committed, end)) in common::committed_for(brokers, prefix, &tenant, INPUT_PARTITIONS) {
        assert_eq!(committed.unwrap_or(0), end, "{tenant}[{partition}]: committed to its end");
    }
    let mut open = open_transactions(brokers, &output_topics, OUTPUT_PARTITIONS);
    open.extend(open_transactions(brokers, &internal, INPUT_PARTITIONS));
    assert!(open.is_empty(), "transactions left open (topic, partition, last stable offset, high watermark): {open:?}");

    let mut readable = event_topics.clone();
    readable.push(format!("{prefix}.dlq"));
    let outputs = read_committed(brokers, &readable, OUTPUT_PARTITIONS);
    let mut checked = Checked::default();
    let mut events: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut rejected: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut failed_ids: BTreeSet<String> = BTreeSet::new();
    let mut events_only: Vec<OutputRecord> = Vec::new();
    for output in &outputs {
        let position = common::source_position(output, prefix);
        if output.topic.ends_with(".dlq") {
            checked.dead_letters += 1;
            if output.headers.get("acs.error.code").map(String::as_str) == Some("produce_failed") {
                checked.produce_failed += 1;
                assert_eq!(
                    output.headers.get("acs.error.output").map(String::as_str),
                    Some("event"),
                    "{:?}",
                    output.headers
                );
                let id = expected_id(&SynthRecord {
                    key: output.key.clone().unwrap_or_default(),
                    value: output.value.clone(),
                    malformed: false,
                });
                assert!(failed_ids.insert(id), "one produce_failed dead letter per input");
            }
            *rejected.entry(position).or_default() += 1;
        } else {
            checked.events += 1;
            *events.entry(position).or_default() += 1;
            events_only.push(output.clone());
        }
    }
    let twice: Vec<_> = events.iter().chain(&rejected).filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "outputs read twice by a read_committed consumer (position, count): {twice:?}");
    // Every input position has exactly one event or dead letter.
    let ends = input_ends(brokers, input, INPUT_PARTITIONS);
    let positions: BTreeSet<(i32, i64)> = events.keys().chain(rejected.keys()).copied().collect();
    let expected_positions: BTreeSet<(i32, i64)> =
        ends.iter().flat_map(|(partition, end)| (0..*end).map(move |offset| (*partition, offset))).collect();
    assert_eq!(positions.len(), inputs.len(), "one output per input");
    assert_eq!(positions, expected_positions, "every input position, and only those");
    // The refused tenant's valid inputs, and only those, are dead-lettered as refused.
    let expected_failed: BTreeSet<String> = match refused_tenant {
        Some(tenant) => inputs
            .iter()
            .filter(|r| !r.malformed && String::from_utf8_lossy(&r.key).ends_with(&format!("#{tenant}")))
            .map(expected_id)
            .collect(),
        None => BTreeSet::new(),
    };
    assert_eq!(failed_ids, expected_failed, "produce_failed dead letters: exactly the refused tenant's inputs");

    // Sessions: every event's view is the one an uninterrupted run gives it (no replay is
    // visible to a read_committed consumer). With a refused tenant, its events are missing
    // from the topics, so only the other tenant's sessions are compared whole.
    let expected = common::reference_sessions(inputs, now_ms());
    let actual = common::sessions_of(&events_only, prefix);
    for (id, views) in &actual {
        let views: Vec<_> = views.iter().map(|(_, session)| *session).collect();
        assert_eq!(&views, &expected[id], "session {id}");
    }
    if refused_tenant.is_none() {
        assert_eq!(actual.len(), expected.len(), "sessions");
    }

    // Alerts: the session-scoped ones are the reference's; none twice.
    let published = published_alerts(brokers, prefix);
    assert_eq!(published.records, published.distinct, "an alert read twice by a read_committed consumer");
    assert_same_alerts(&published.session, &reference_session_alerts(inputs, input));
    checked.session_alerts = published.session.len();
    checked.tenant_alerts = published.tenant;

    // The tenant topic: each forwarded event once.
    let tenant_records = read_committed(brokers, &internal[..1], INPUT_PARTITIONS);
    let mut forwarded: BTreeMap<(String, String), usize> = BTreeMap::new();
    for record in &tenant_records {
        let at = |name: &str| record.headers.get(name).cloned().unwrap_or_default();
        *forwarded.entry((at("acs.source.partition"), at("acs.source.offset"))).or_default() += 1;
    }
    assert!(forwarded.values().all(|n| *n == 1), "a tenant-topic record read twice");
    assert!(!tenant_records.is_empty(), "the tenant-scoped rule's events were forwarded");
    checked.tenant_records = tenant_records.len();
    checked
}

/// Waits until the group's committed offsets on `input` sum past `before`; returns the sum.
fn wait_progress(brokers: &str, group: &str, input: &str, before: i64) -> i64 {
    let started = std::time::Instant::now();
    loop {
        if let Ok(committed) = common::try_committed_for(brokers, group, input, INPUT_PARTITIONS) {
            let sum: i64 = committed.values().map(|(offset, _)| offset.unwrap_or(0)).sum();
            if sum > before {
                return sum;
            }
        }
        assert!(started.elapsed() < PATIENCE, "no progress past {before} committed within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    const KILLS: usize = 5;
    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("eos-kill");
    let input = format!("{prefix}.raw");
    create_topics(&brokers, &[(&input, INPUT_PARTITIONS)]).await;
    let inputs = inputs(61, 3_000);

    // The input keeps arriving, for longer than the kills take.
    let producer = {
        let (brokers, input, inputs) = (brokers.clone(), input.clone(), inputs.clone());
        std::thread::spawn(move || {
            for chunk in inputs.chunks(50) {
                produce(&brokers, &input, chunk);
                std::thread::sleep(Duration::from_millis(400));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let config = RunConfig { rules: true, guarantee: "exactly_once", ..RunConfig::new(&brokers, &input, &prefix) }
        .write(dir.path());
    let mut random = fastrand::Rng::with_seed(17);
    let mut committed = 0;
    for _ in 0..KILLS {
        let processor = start(&config);
        // Some transactions committed since the last start, then a moment at random.
        committed = wait_progress(&brokers, &prefix, &input, committed);
        std::thread::sleep(Duration::from_millis(random.u64(0..800)));
        processor.kill();
    }
    let last = start(&config);
    producer.join().unwrap();
    wait_committed(&brokers, &prefix, &input, INPUT_PARTITIONS);
    terminate(last);

    let checked = check_exactly_once(&brokers, &prefix, &input, &inputs, None);
    say(&format!(
        "exactly-once, {KILLS} SIGKILLs: {} inputs; {} events and {} dead letters, none twice; {} session alerts as the \
         reference, {} tenant alerts, {} tenant-topic records, none twice; no transaction left open",
        inputs.len(),
        checked.events,
        checked.dead_letters,
        checked.session_alerts,
        checked.tenant_alerts,
        checked.tenant_records
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_and_leaving_mid_stream_changes_nothing_visible() {
    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("eos-rebalance");
    let input = format!("{prefix}.raw");
    create_topics(&brokers, &[(&input, INPUT_PARTITIONS)]).await;
    let inputs = inputs(67, 3_000);
    let (before, rest) = inputs.split_at(1_000);
    let (during, after) = rest.split_at(1_000);
    let dir = tempfile::tempdir().unwrap();
    let config = |instance: &str| {
        let run =
            RunConfig { rules: true, guarantee: "exactly_once", instance, ..RunConfig::new(&brokers, &input, &prefix) };
        Config::load(Some(&run.write_as(dir.path(), instance))).unwrap()
    };
    let owned = |owned: &acs_stream::kafka::runtime::Assignment| owned.iter().filter(|tp| *tp.topic == *input).count();

    let mut first = Service::start(config("a"), PATIENCE);
    first.owns(|o| owned(o) == INPUT_PARTITIONS as usize).await;
    produce(&brokers, &input, before);
    let producing = {
        let (brokers, input, during) = (brokers.clone(), input.clone(), during.to_vec());
        std::thread::spawn(move || {
            for chunk in during.chunks(100) {
                produce(&brokers, &input, chunk);
            }
        })
    };
    // A second member joins while input flows (the first commits its transaction on the
    // revoke), then the first leaves.
    let mut second = Service::start(config("b"), PATIENCE);
    second.owns(|o| owned(o) > 0).await;
    first.owns(|o| (1..INPUT_PARTITIONS as usize).contains(&owned(o))).await;
    producing.join().unwrap();
    produce(&brokers, &input, after);
    let first = first.stop().await;
    second.owns(|o| owned(o) == INPUT_PARTITIONS as usize).await;
    let waited = tokio::task::spawn_blocking({
        let (brokers, prefix, input) = (brokers.clone(), prefix.clone(), input.clone());
        move || wait_committed(&brokers, &prefix, &input, INPUT_PARTITIONS)
    });
    waited.await.unwrap();
    let second = second.stop().await;
    assert!(first.drained && second.drained, "{first:?}\n{second:?}");
    assert!(first.consumed > 0 && second.consumed > 0, "both members processed records");
    assert!(second.restored_entries > 0, "the moved sessions were restored: {second:?}");

    let checked = tokio::task::spawn_blocking(move || check_exactly_once(&brokers, &prefix, &input, &inputs, None));
    let checked = checked.await.unwrap();
    say(&format!(
        "exactly-once through a rebalance: {} events and {} dead letters, none twice; {} session alerts as the reference",
        checked.events, checked.dead_letters, checked.session_alerts
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_output_aborts_its_transaction_and_is_dead_lettered_once() {
    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("eos-refused");
    let input = format!("{prefix}.raw");
    create_topics(&brokers, &[(&input, INPUT_PARTITIONS)]).await;
    // tenant-02's events topic takes no record as large as an event: every transaction with
    // one of its events aborts, and the records are processed again with the event refused.
    let refused = format!("{prefix}.tenant-02.events");
    common::topics::create_topics_with(&brokers, &[(&refused, OUTPUT_PARTITIONS)], &[("max.message.bytes", "200")])
        .await;
    let inputs = inputs(71, 600);
    produce(&brokers, &input, &inputs);
    let dir = tempfile::tempdir().unwrap();
    let run = RunConfig { rules: true, guarantee: "exactly_once", ..RunConfig::new(&brokers, &input, &prefix) };
    let config = Config::load(Some(&run.write(dir.path()))).unwrap();
    let mut service = Service::start(config, PATIENCE);
    service.owns(|o| !o.is_empty()).await;
    let waited = tokio::task::spawn_blocking({
        let (brokers, prefix, input) = (brokers.clone(), prefix.clone(), input.clone());
        move || wait_committed(&brokers, &prefix, &input, INPUT_PARTITIONS)
    });
    waited.await.unwrap();
    let summary = service.stop().await;
    assert!(summary.drained, "{summary:?}");
    assert!(summary.produce_failed > 0, "the brokers refused events: {summary:?}");

    let checked =
        tokio::task::spawn_blocking(move || check_exactly_once(&brokers, &prefix, &input, &inputs, Some("tenant-02")));
    let checked = checked.await.unwrap();
    assert!(checked.produce_failed > 0);
    say(&format!(
        "exactly-once, refused outputs: {} refusals over the aborted transactions; {} events published, {} inputs \
         dead-lettered once as produce_failed, none twice",
        summary.produce_failed, checked.events, checked.produce_failed
    ));
}
