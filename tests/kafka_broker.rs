//! The Kafka service against Apache Kafka: the single node `tests/run.sh` starts (address in
//! `ACS_TEST_BROKERS`), or one started for this test process when that is not set
//! (`common::broker`). End-to-end checks with topics created through the admin API; a
//! processor killed with SIGKILL mid-stream and restarted: nothing lost, every duplicate a
//! replay of an input; SIGTERM drains; alerts across a SIGKILL as without it (static
//! membership); the default rules, the tenant topic and the changelog through a rebalance;
//! and a three-node cluster that loses a node to SIGKILL and gets it back.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use acs_stream::commands::demo::{self, OutputRecord};
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use common::broker::{Broker, Cluster, NodeAction};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Upper bound on waiting for outputs and commits: a guard against a hang, not a speed
/// assertion.
const PATIENCE: Duration = Duration::from_secs(240);

/// The broker of these tests (see `common::broker::shared`): `None` only with the explicit
/// opt-out, which names the skipped test.
fn broker() -> Option<&'static Broker> {
    common::broker::shared()
}

fn unique(prefix: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{prefix}-{}-{}", std::process::id(), now.as_nanos() % 1_000_000_000)
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

async fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    create_replicated_topics(brokers, topics, 1).await;
}

async fn create_replicated_topics(brokers: &str, topics: &[(&str, i32)], replicas: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(replicas))).collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await.unwrap() {
        result.unwrap_or_else(|(topic, code)| panic!("cannot create {topic}: {code}"));
    }
}

fn produce(brokers: &str, topic: &str, records: &[SynthRecord]) {
    demo::produce(brokers, topic, records.iter().cloned()).expect("input produced");
}

/// Writes a service configuration for this test's topics and group.
/// `consumer`: the `[kafka.consumer]` lines (a short session by default).
/// Rules are off: these tests are about the runtime, and alerts (with the tenant topic and the
/// rule state in the changelog) about double what the broker must carry; the alerts test
/// turns them on ([`config_file_with_rules`]).
fn config_file(dir: &std::path::Path, brokers: &str, input: &str, prefix: &str, consumer: &str) -> std::path::PathBuf {
    config_file_with_rules(dir, brokers, input, prefix, consumer, false)
}

fn config_file_with_rules(
    dir: &std::path::Path,
    brokers: &str,
    input: &str,
    prefix: &str,
    consumer: &str,
    rules: bool,
) -> std::path::PathBuf {
    let consumer = if consumer.is_empty() { "\"session.timeout.ms\" = 6000" } else { consumer };
    let path = dir.join("acs-stream.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        "[output]\nevents_topic = \"{prefix}.{{tenant}}.events\"\nalerts_topic = \"{prefix}.{{tenant}}.alerts\"\n\
         dead_letter_topic = \"{prefix}.dlq\"\n\
         [kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{prefix}\"\ninput_topics = [\"{input}\"]\ncommit_interval = \"200ms\"\n\
         [kafka.consumer]\n{consumer}\n[topics]\ncreate = true\npartitions = 2\nreplication_factor = 1\n[shutdown]\ngrace = \"20s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[rules]\nenabled = {rules}\n"
    )
    .unwrap();
    path
}

/// A running `acs-stream run`; killed if the test fails before stopping it.
struct Processor(Child);

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path) -> Processor {
    Processor(
        Command::new(env!("CARGO_BIN_EXE_acs-stream"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", std::env::var("ACS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("acs-stream starts"),
    )
}

fn outputs(brokers: &str, prefix: &str, tenants: usize, at_least: usize) -> Vec<OutputRecord> {
    let mut topics: Vec<String> = (1..=tenants).map(|n| format!("{prefix}.tenant-{n:02}.events")).collect();
    topics.push(format!("{prefix}.dlq"));
    demo::read_outputs(brokers, &topics, 2, at_least, PATIENCE, |_| {}).expect("outputs arrive")
}

/// The message id each valid input's event must carry: its own, or the one generated from
/// its bytes.
fn expected_id(record: &SynthRecord) -> String {
    let value: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    match value.get("messageId").and_then(|id| id.as_str()) {
        Some(id) => id.to_owned(),
        None => acs_stream::decode::message_id::generate(&record.value),
    }
}

/// Records in `topics` (all of them: the topics are this test's own).
fn total_records(brokers: &str, topics: &[String]) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    topics
        .iter()
        .flat_map(|topic| (0..2).map(move |partition| (topic, partition)))
        .map(|(topic, partition)| {
            let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
            high - low
        })
        .sum()
}

/// The end offset of each of the `partitions` partitions of `topic`.
fn input_ends(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    (0..partitions)
        .map(|partition| (partition, consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap().1))
        .collect()
}

/// Waits until the group has committed every input partition up to its end.
fn wait_committed(brokers: &str, group: &str, input: &str, partitions: i32) {
    common::wait_committed(brokers, group, input, partitions, PATIENCE);
}

/// Stops a processor with SIGTERM; it must drain, commit and exit 0.
fn terminate(mut processor: Processor) {
    let status = Command::new("kill").args(["-TERM", &processor.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = processor.0.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_lands_in_topics_the_service_creates_and_a_restart_resumes() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("e2e");
    let input = format!("{prefix}.raw");
    // Only the input exists: the service creates its output topics (2 partitions each).
    create_topics(&brokers, &[(&input, 3)]).await;
    let options = |seed| SynthOptions {
        seed,
        tenants: 2,
        malformed_ratio: 0.1,
        start_ms: now_ms() - 3_600_000,
        ..Default::default()
    };
    let first = Generator::new(options(11)).take_records(1_000);
    produce(&brokers, &input, &first);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &brokers, &input, &prefix, "");
    let processor = start(&config);
    wait_committed(&brokers, &prefix, &input, 3);
    terminate(processor);

    let topics: Vec<String> =
        vec![format!("{prefix}.tenant-01.events"), format!("{prefix}.tenant-02.events"), format!("{prefix}.dlq")];
    let metadata_client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for topic in &topics {
        let metadata = metadata_client.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
        assert_eq!(partitions, 2, "{topic}: created by the service with topics.partitions");
    }
    assert_eq!(total_records(&brokers, &topics), 1_000, "one output per input, no duplicate after a clean stop");
    common::check_outputs(&first, &outputs(&brokers, &prefix, 2, 1_000), &prefix, &input);

    // A restart resumes after the committed offsets: only the new input is processed.
    let second = Generator::new(options(12)).take_records(500);
    produce(&brokers, &input, &second);
    let processor = start(&config);
    wait_committed(&brokers, &prefix, &input, 3);
    terminate(processor);
    assert_eq!(total_records(&brokers, &topics), 1_500, "nothing processed twice");
    let all: Vec<SynthRecord> = first.iter().chain(&second).cloned().collect();
    common::check_outputs(&all, &outputs(&brokers, &prefix, 2, 1_500), &prefix, &input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    use prost::Message as _;

    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("kill");
    let input = format!("{prefix}.raw");
    let outputs_topics: Vec<String> =
        vec![format!("{prefix}.tenant-01.events"), format!("{prefix}.tenant-02.events"), format!("{prefix}.dlq")];
    create_topics(&brokers, &[(&input, 3)]).await;
    // The output topics exist before the first read (the service would create them too).
    let created: Vec<(&str, i32)> = outputs_topics.iter().map(|t| (t.as_str(), 2)).collect();
    create_topics(&brokers, &created).await;
    let options = SynthOptions {
        seed: 9,
        tenants: 2,
        malformed_ratio: 0.05,
        start_ms: now_ms() - 3_600_000,
        ..Default::default()
    };
    let inputs = Generator::new(options).take_records(4_000);

    // The input keeps arriving while the processor runs and is killed.
    let producer = {
        let (brokers, input, inputs) = (brokers.clone(), input.clone(), inputs.clone());
        std::thread::spawn(move || {
            for chunk in inputs.chunks(200) {
                produce(&brokers, &input, chunk);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    // Dynamic membership: the restarted processor joins as a new member; the group
    // rebalances once the killed member's session (6 s) has expired, and the new member gets
    // every partition from the committed offsets.
    let config = config_file(dir.path(), &brokers, &input, &prefix, "");
    let mut first = start(&config);
    let _ = outputs(&brokers, &prefix, 2, 500);
    first.0.kill().expect("SIGKILL");
    first.0.wait().unwrap();
    let second = start(&config);
    producer.join().unwrap();

    // Read until every input is accounted for: after a SIGKILL some outputs are duplicates,
    // so counting outputs is not enough.
    let want_ids: HashSet<String> = inputs.iter().filter(|r| !r.malformed).map(expected_id).collect();
    let want_dead: HashSet<&[u8]> = inputs.iter().filter(|r| r.malformed).map(|r| r.value.as_slice()).collect();
    let mut read = inputs.len();
    loop {
        let all = outputs(&brokers, &prefix, 2, read);
        let mut ids: HashSet<String> = HashSet::new();
        let mut dead: HashSet<Vec<u8>> = HashSet::new();
        for output in &all {
            if output.topic.ends_with(".dlq") {
                dead.insert(output.value.clone());
            } else {
                let event = acs_stream::encode::proto::pb::EnrichedEvent::decode(output.value.as_slice()).unwrap();
                ids.insert(event.message_id);
            }
        }
        let missing_ids = want_ids.iter().filter(|id| !ids.contains(*id)).count();
        let missing_dead = want_dead.iter().filter(|v| !dead.contains(**v)).count();
        if missing_ids == 0 && missing_dead == 0 {
            break;
        }
        // Not all there yet: read more (the reader fails the test after PATIENCE).
        read = all.len() + missing_ids + missing_dead;
    }

    // A graceful stop of the second processor: SIGTERM, everything drained, exit 0.
    terminate(second);
    let written = total_records(&brokers, &outputs_topics);
    let all = outputs(&brokers, &prefix, 2, written as usize);

    // Every output names the input record it came from; every input position has at least
    // one output, and each output beyond the first of its position is a replay of that
    // input (at-least-once after a SIGKILL), never an output of nothing.
    let mut per_position: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for output in &all {
        *per_position.entry(common::source_position(output, &prefix)).or_default() += 1;
    }
    let ends = input_ends(&brokers, &input, 3);
    assert_eq!(ends.values().sum::<i64>(), inputs.len() as i64, "the input topic holds the inputs");
    for (partition, offset) in per_position.keys() {
        assert!((0..ends[partition]).contains(offset), "an output of no input: {partition}/{offset}");
    }
    assert_eq!(per_position.len(), inputs.len(), "every input position has an output");
    let duplicates = written as usize - per_position.len();
    let replayed_positions = per_position.values().filter(|n| **n > 1).count();

    // Sessions continue across the kill, restored from the changelog: no counter restarts,
    // none counts an event twice, although records before the kill were processed again.
    // Every view is one a processor that never stopped gives at some point, and the events
    // of each session's last record carry its final state.
    let expected = common::reference_sessions(&inputs, now_ms());
    let actual = common::sessions_of(&all, &prefix);
    assert_eq!(actual.len(), expected.len(), "sessions");
    let mut replayed = 0;
    for (id, views) in &actual {
        let reference: HashSet<_> = expected[id].iter().map(common::counters).collect();
        for (_, view) in views {
            assert!(reference.contains(&common::counters(view)), "session {id}: {view:?} never happens without a kill");
        }
        let last = views.last().unwrap().0;
        let final_state = common::counters(expected[id].last().unwrap());
        for (_, view) in views.iter().filter(|(at, _)| *at == last) {
            assert_eq!(common::counters(view), final_state, "session {id}: its last event");
        }
        replayed += views.windows(2).filter(|pair| pair[0].0 == pair[1].0).count();
    }
    common::broker::say(&format!(
        "SIGKILL mid-stream: {} inputs, {written} outputs, {duplicates} duplicates of {replayed_positions} inputs \
         (at-least-once replay), {replayed} events processed again over restored sessions, {} sessions all continued",
        inputs.len(),
        actual.len()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_drains_loses_nothing_and_exits_0() {
    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("term");
    let input = format!("{prefix}.raw");
    let topics: Vec<String> =
        vec![format!("{prefix}.tenant-01.events"), format!("{prefix}.tenant-02.events"), format!("{prefix}.dlq")];
    create_topics(&brokers, &[(&input, 3)]).await;
    let created: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), 2)).collect();
    create_topics(&brokers, &created).await;
    let options = SynthOptions {
        seed: 31,
        tenants: 2,
        malformed_ratio: 0.05,
        start_ms: now_ms() - 3_600_000,
        ..Default::default()
    };
    // The input keeps arriving until after the SIGTERM: at least one chunk is produced
    // once the stop is asked, so the processor is stopped mid-stream by construction.
    let stop_input = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (brokers, input, stop_input) = (brokers.clone(), input.clone(), stop_input.clone());
        std::thread::spawn(move || {
            let mut generator = Generator::new(options);
            let mut produced = Vec::new();
            loop {
                let stopping = stop_input.load(std::sync::atomic::Ordering::SeqCst);
                // At most 20 chunks before the stop is asked (a slow broker must not be
                // buried), and always one after it.
                if !stopping && produced.len() >= 20 * 300 {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let chunk = generator.take_records(300);
                produce(&brokers, &input, &chunk);
                produced.extend(chunk);
                if stopping {
                    return produced;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    // Dynamic membership: the stopped member leaves the group, the restarted one joins anew.
    let config = config_file(dir.path(), &brokers, &input, &prefix, "");
    let first = start(&config);
    // Mid-stream: some outputs are out, input is still arriving.
    let _ = outputs(&brokers, &prefix, 2, 300);
    // SIGTERM: stop fetching, drain what is in flight, commit; exit 0 only when drained within
    // shutdown.grace (main.rs), so a success is also "within the grace period".
    terminate(first);
    stop_input.store(true, std::sync::atomic::Ordering::SeqCst);
    let inputs = producer.join().unwrap();
    assert!(total_records(&brokers, &topics) >= 300);

    // A restart processes the rest from the committed offsets: every input exactly once (a
    // graceful stop commits what it published: no duplicate, no gap).
    let second = start(&config);
    wait_committed(&brokers, &prefix, &input, 3);
    terminate(second);
    assert_eq!(total_records(&brokers, &topics), inputs.len() as i64, "one output per input");
    common::check_outputs(&inputs, &outputs(&brokers, &prefix, 2, inputs.len()), &prefix, &input);
}

/// What an alert says, without where its evidence was read (input offsets depend on how the
/// producer spread the records over partitions): id, rule, count, window, evidence ids.
type AlertFacts = (String, String, u32, i64, i64, i64, Vec<String>);

fn alert_facts(alert: &acs_stream::rules::Alert) -> AlertFacts {
    (
        alert.alert_id.clone(),
        alert.rule_id.to_string(),
        alert.count,
        alert.window_start,
        alert.window_end,
        alert.fired_at,
        alert.evidence.iter().map(|e| e.message_id.to_string()).collect(),
    )
}

/// The session-scoped alerts the core fires over `inputs` in order, without a restart: what
/// any run must publish. Session-scoped rules see each session in input order, as a
/// partition keyed by session gives them.
fn reference_session_alerts(inputs: &[SynthRecord], input: &str) -> BTreeMap<String, AlertFacts> {
    use acs_stream::config::Config;
    use acs_stream::model::{ReasonCatalog, Source};
    use acs_stream::pipeline::{Outcome, Pipeline, Record};
    use acs_stream::rules::{Alert, Scope};
    use prost::Message as _;

    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap().with_inline_tenants();
    let rules = pipeline.rules();
    let mut sessions = pipeline.sessions();
    let mut reference = BTreeMap::new();
    for (offset, record) in inputs.iter().enumerate() {
        let source = Source { topic: std::sync::Arc::from(input), partition: 0, offset: offset as i64 };
        let Outcome::Event { alerts, .. } =
            pipeline.process(&Record::new(Some(&record.key), &record.value, source), &mut sessions, now_ms())
        else {
            continue;
        };
        for alerted in alerts.iter().filter(|a| rules.get(a.rule()).is_some_and(|r| r.scope == Scope::Session)) {
            let pb = acs_stream::encode::proto::pb::Alert::decode(&*alerted.output().value).unwrap();
            let alert = Alert::from_proto(pb).unwrap();
            reference.insert(alert.alert_id.clone(), alert_facts(&alert));
        }
    }
    reference
}

/// The alerts published to the alert topics of `prefix` (two tenants), read back whole.
struct PublishedAlerts {
    /// Alert records read (duplicates included).
    records: usize,
    /// Distinct alert ids.
    distinct: usize,
    /// The session-scoped alerts, by id.
    session: BTreeMap<String, AlertFacts>,
    /// Tenant-scoped alerts (distinct).
    tenant: usize,
}

/// Reads every alert of `prefix`'s alert topics and checks each: a duplicate (at-least-once
/// replay) is a byte-identical copy; an alert is keyed by its session (or tenant, for a
/// tenant-scoped rule); a tenant alert's evidence matches its count within its window.
fn published_alerts(brokers: &str, prefix: &str) -> PublishedAlerts {
    use acs_stream::config::Config;
    use acs_stream::model::ReasonCatalog;
    use acs_stream::pipeline::Pipeline;
    use acs_stream::rules::{Alert, Scope};
    use prost::Message as _;

    let rules = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap().rules();
    let alert_topics = vec![format!("{prefix}.tenant-01.alerts"), format!("{prefix}.tenant-02.alerts")];
    let written = total_records(brokers, &alert_topics) as usize;
    let records = demo::read_outputs(brokers, &alert_topics, 2, written, PATIENCE, |_| {}).expect("alerts read");
    let mut bytes_by_id: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut session = BTreeMap::new();
    let mut tenant = HashSet::new();
    for record in &records {
        let alert =
            Alert::from_proto(acs_stream::encode::proto::pb::Alert::decode(record.value.as_slice()).unwrap()).unwrap();
        let first_copy = bytes_by_id.entry(alert.alert_id.clone()).or_insert_with(|| record.value.clone());
        assert_eq!(*first_copy, record.value, "a replayed alert is the same alert: {}", alert.alert_id);
        let rule = rules.get(&alert.rule_id).expect("a default rule");
        match rule.scope {
            Scope::Session => {
                assert_eq!(record.key.as_deref(), alert.delivery_execution_id.as_deref().map(str::as_bytes));
                session.insert(alert.alert_id.clone(), alert_facts(&alert));
            }
            // Tenant-wide counts depend on how the partitions interleave: only checked whole.
            Scope::Tenant => {
                assert_eq!(record.key.as_deref(), Some(alert.tenant_id.as_bytes()));
                assert_eq!(alert.count as usize, alert.evidence.len());
                assert!(alert.window_end - alert.window_start < 60_000, "{alert:?}");
                tenant.insert(alert.alert_id.clone());
            }
        }
    }
    PublishedAlerts { records: records.len(), distinct: bytes_by_id.len(), session, tenant: tenant.len() }
}

/// `actual` holds exactly the alerts of `reference`, with the same facts.
fn assert_same_alerts(actual: &BTreeMap<String, AlertFacts>, reference: &BTreeMap<String, AlertFacts>) {
    let missing: Vec<_> = reference.keys().filter(|id| !actual.contains_key(*id)).collect();
    let extra: Vec<_> = actual.keys().filter(|id| !reference.contains_key(*id)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, not in the reference {extra:?}");
    assert_eq!(actual, reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_exactly_as_without_a_sigkill_mid_window() {
    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("alerts");
    let input = format!("{prefix}.raw");
    create_topics(&brokers, &[(&input, 3)]).await;
    let options = SynthOptions {
        seed: 23,
        tenants: 2,
        malformed_ratio: 0.0,
        start_ms: now_ms() - 3_600_000,
        ..Default::default()
    };
    let inputs = Generator::new(options).take_records(1_000);
    let reference = reference_session_alerts(&inputs, &input);
    assert!(reference.len() > 50, "the synthetic sessions fire rules: {}", reference.len());

    // The input keeps arriving while the processor runs, is killed in the middle of open
    // windows, and is restarted. Static membership, as the README recommends for a
    // StatefulSet (`group.instance.id` per pod): the restarted processor takes the killed
    // one's place and its partitions back without waiting for a rebalance (the session, 20 s,
    // outlasts the restart).
    let producer = {
        let (brokers, input, inputs) = (brokers.clone(), input.clone(), inputs.clone());
        std::thread::spawn(move || {
            for chunk in inputs.chunks(100) {
                produce(&brokers, &input, chunk);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let static_member = format!("\"group.instance.id\" = \"{prefix}-0\"\n\"session.timeout.ms\" = 20000");
    let config = config_file_with_rules(dir.path(), &brokers, &input, &prefix, &static_member, true);
    let mut first = start(&config);
    let _ = outputs(&brokers, &prefix, 2, 400);
    first.0.kill().expect("SIGKILL");
    first.0.wait().unwrap();
    let second = start(&config);
    producer.join().unwrap();
    wait_committed(&brokers, &prefix, &input, 3);
    terminate(second);

    // Every alert read back: duplicates are byte-identical copies, and the session-scoped
    // ones are exactly the reference's.
    let published = published_alerts(&brokers, &prefix);
    assert_same_alerts(&published.session, &reference);
    common::broker::say(&format!(
        "SIGKILL mid-window: {} session alerts as without the kill; {} alert records, {} distinct",
        reference.len(),
        published.records,
        published.distinct
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_sessions_and_the_tenant_topic_come_through_a_rebalance_exactly() {
    use acs_stream::config::Config;
    use common::service::Service;

    const PARTITIONS: i32 = 4;
    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("rebalance");
    let input = format!("{prefix}.raw");
    create_topics(&brokers, &[(&input, PARTITIONS)]).await;
    let options = SynthOptions {
        seed: 47,
        tenants: 2,
        malformed_ratio: 0.02,
        start_ms: now_ms() - 3_600_000,
        ..Default::default()
    };
    let inputs = Generator::new(options).take_records(3_000);
    let (before, rest) = inputs.split_at(1_000);
    let (during, after) = rest.split_at(1_000);
    let reference = reference_session_alerts(&inputs, &input);
    assert!(reference.len() > 50, "the synthetic sessions fire rules: {}", reference.len());

    // Everything on: the default rules (their tenant topic, consumed by the same group), the
    // session changelog, output topics created by the service.
    let dir = tempfile::tempdir().unwrap();
    let path = config_file_with_rules(dir.path(), &brokers, &input, &prefix, "", true);
    let config = || Config::load(Some(&path)).expect("the test's configuration");
    let owned_input =
        |owned: &acs_stream::kafka::runtime::Assignment| owned.iter().filter(|tp| *tp.topic == *input).count();

    let mut first = Service::start(config(), PATIENCE);
    first.owns(|owned| owned_input(owned) == PARTITIONS as usize).await;
    produce(&brokers, &input, before);
    let _ = outputs(&brokers, &prefix, 2, before.len());

    // A second member joins while input flows: the first drains and commits what it
    // revokes; the second restores the moved partitions' sessions and tenant counts from the
    // changelog and continues them.
    let mut second = Service::start(config(), PATIENCE);
    let producing = {
        let (brokers, input, during) = (brokers.clone(), input.clone(), during.to_vec());
        std::thread::spawn(move || {
            for chunk in during.chunks(100) {
                produce(&brokers, &input, chunk);
            }
        })
    };
    second.owns(|owned| owned_input(owned) > 0).await;
    first.owns(|owned| (1..PARTITIONS as usize).contains(&owned_input(owned))).await;
    producing.join().unwrap();
    produce(&brokers, &input, after);

    // The first leaves: the second takes every partition back and finishes.
    let first = first.stop().await;
    second.owns(|owned| owned_input(owned) == PARTITIONS as usize).await;
    let tenant_topic = format!("{prefix}.tenant-signals");
    wait_committed(&brokers, &prefix, &input, PARTITIONS);
    let second = second.stop().await;
    assert!(first.drained && second.drained, "{first:?}\n{second:?}");
    assert!(first.consumed > 0 && second.consumed > 0, "both members processed records: {first:?}\n{second:?}");
    assert!(second.restored_entries > 0, "the moved sessions were restored: {second:?}");

    // Graceful handovers replay nothing: one output per input, every session exactly as one
    // processor without a rebalance sees it, every session alert exactly the reference's.
    assert_eq!(first.consumed + second.consumed, inputs.len() as u64, "no record processed twice");
    let topics: Vec<String> =
        vec![format!("{prefix}.tenant-01.events"), format!("{prefix}.tenant-02.events"), format!("{prefix}.dlq")];
    assert_eq!(total_records(&brokers, &topics), inputs.len() as i64, "one output per input");
    let all = outputs(&brokers, &prefix, 2, inputs.len());
    common::check_outputs(&inputs, &all, &prefix, &input);
    let expected = common::reference_sessions(&inputs, now_ms());
    let actual = common::sessions_of(&all, &prefix);
    assert_eq!(actual.len(), expected.len(), "sessions");
    for (id, views) in &actual {
        let views: Vec<_> = views.iter().map(|(_, session)| *session).collect();
        assert_eq!(&views, &expected[id], "session {id}");
    }
    let published = published_alerts(&brokers, &prefix);
    assert_same_alerts(&published.session, &reference);
    assert_eq!(published.records, published.distinct, "no alert published twice");

    // Every event forwarded to the tenant topic was counted there, once.
    let forwarded = first.tenant_forwarded + second.tenant_forwarded;
    assert!(forwarded > 0, "the tenant-scoped rule's events were forwarded");
    assert_eq!(first.tenant_records + second.tenant_records, forwarded, "{first:?}\n{second:?}");
    let tenant_partitions = partitions_of(&brokers, &tenant_topic);
    common::wait_committed(&brokers, &prefix, &tenant_topic, tenant_partitions, PATIENCE);
    common::broker::say(&format!(
        "rebalance with rules: {} inputs, {} session alerts as the reference, {} tenant alerts, \
         {forwarded} events counted in the tenant topic, {} sessions restored by the second member",
        inputs.len(),
        reference.len(),
        published.tenant,
        second.restored_entries
    ));
}

/// The number of partitions of `topic`.
fn partitions_of(brokers: &str, topic: &str) -> i32 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    metadata.topics().first().map_or(0, |t| t.partitions().len() as i32)
}

/// Per partition of `topic`: its leader and its in-sync replicas, as the cluster says now.
fn leaders_and_isr(brokers: &str, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let topic = metadata.topics().first().expect("the topic's metadata");
    topic.partitions().iter().map(|p| (p.id(), (p.leader(), p.isr().to_vec()))).collect()
}

/// Produces `records` with an idempotent producer (acks=all); every one must be acknowledged.
fn produce_acknowledged(brokers: &str, topic: &str, records: &[SynthRecord]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Every record is queued first (send_result), then every delivery awaited.
    let deliveries: Vec<_> = records
        .iter()
        .map(|record| {
            producer
                .send_result(FutureRecord::to(topic).key(&record.key).payload(&record.value))
                .unwrap_or_else(|(error, _)| panic!("a record not queued: {error}"))
        })
        .collect();
    runtime.block_on(async {
        for delivery in deliveries {
            delivery
                .await
                .expect("delivery reported")
                .unwrap_or_else(|(error, _)| panic!("a record not acknowledged: {error}"));
        }
    });
}

/// Polls `condition` on the cluster's metadata until it holds (a guard against a hang after
/// `PATIENCE`): the cluster moves leaders and replicas on its own time.
fn wait_for_metadata(
    brokers: &str,
    topic: &str,
    what: &str,
    condition: impl Fn(&BTreeMap<i32, (i32, Vec<i32>)>) -> bool,
) {
    let started = std::time::Instant::now();
    loop {
        let now = leaders_and_isr(brokers, topic);
        if condition(&now) {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_three_node_cluster_loses_a_node_to_sigkill_and_gets_it_back() {
    if std::env::var("ACS_TEST_SKIP_BROKER").is_ok_and(|v| v == "1") {
        common::broker::say(&format!(
            "SKIPPED {}: ACS_TEST_SKIP_BROKER=1 (this test starts a three-node cluster)",
            common::broker::test_name()
        ));
        return;
    }
    let cluster = Cluster::start(3);
    let brokers = cluster.broker.brokers.clone();
    common::broker::say(&format!("{}: on {} at {brokers}", common::broker::test_name(), cluster.broker.name));
    let topic = "faults.raw";
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(create_replicated_topics(&brokers, &[(topic, 3)], 3));
    wait_for_metadata(&brokers, topic, "every replica in sync", |p| {
        p.len() == 3 && p.values().all(|(_, isr)| isr.len() == 3)
    });
    let records = Generator::new(SynthOptions { seed: 3, ..Default::default() }).take_records(900);
    produce_acknowledged(&brokers, topic, &records[..300]);

    // The leader of partition 0 is killed: its partitions move to the other two nodes, which
    // still make the minimum in-sync replicas (2), so acks=all records are acknowledged.
    let victim = leaders_and_isr(&brokers, topic)[&0].0;
    cluster.node(victim as u32, NodeAction::Kill);
    wait_for_metadata(&brokers, topic, "leaders moved off the killed node", |p| {
        p.values().all(|(leader, _)| *leader != victim && *leader >= 0)
    });
    produce_acknowledged(&brokers, topic, &records[300..600]);

    // Back on its data directory: it catches up and rejoins every partition's ISR.
    cluster.node(victim as u32, NodeAction::Start);
    wait_for_metadata(&brokers, topic, "the restarted node back in sync", |p| {
        p.values().all(|(_, isr)| isr.len() == 3)
    });
    produce_acknowledged(&brokers, topic, &records[600..]);
    cluster.ready();

    // Nothing acknowledged was lost.
    let topics = vec![topic.to_owned()];
    let read =
        demo::read_outputs(&brokers, &topics, 3, records.len(), PATIENCE, |_| {}).expect("every record read back");
    let mut got: Vec<&[u8]> = read.iter().map(|r| r.value.as_slice()).collect();
    let mut want: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "records read back");
    assert!(got == want, "the records read back are the records produced");
    common::broker::say(&format!(
        "three nodes: node {victim} killed and restarted; {} records acknowledged, all read back",
        records.len()
    ));
}
