//! The Kafka service against Apache Kafka: the single node `tests/run.sh` starts (address in
//! `ACS_TEST_BROKERS`), or one started for this test process when that is not set
//! (`common::broker`). End-to-end checks with topics created through the admin API; a
//! processor killed with SIGKILL mid-stream and restarted: nothing lost, every duplicate a
//! replay of an input; SIGTERM drains; alerts across a SIGKILL as without it (static
//! membership); the default rules, the tenant topic and the changelog through a rebalance;
//! and a three-node cluster that loses a node to SIGKILL and gets it back.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use acs_stream::commands::demo;
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use common::BROKER_PATIENCE as PATIENCE;
use common::alerts::{assert_same_alerts, published_alerts, reference_session_alerts};
use common::broker::{Broker, Cluster, NodeAction};
use common::processor::{RunConfig, expected_id, outputs, start, terminate, wait_committed};
use common::topics::{
    create_replicated_topics, create_topics, input_ends, leaders_and_isr, now_ms, partitions_of, produce,
    produce_acknowledged, total_records, unique, wait_for_metadata,
};
use rdkafka::config::ClientConfig;

/// The broker of these tests (see `common::broker::shared`): `None` only with the explicit
/// opt-out, which names the skipped test.
fn broker() -> Option<&'static Broker> {
    common::broker::shared()
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
        ..SynthOptions::stress()
    };
    let first = Generator::new(options(11)).take_records(1_000);
    produce(&brokers, &input, &first);
    let dir = tempfile::tempdir().unwrap();
    let config = RunConfig::new(&brokers, &input, &prefix).write(dir.path());
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
        ..SynthOptions::stress()
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
    let config = RunConfig::new(&brokers, &input, &prefix).write(dir.path());
    let first = start(&config);
    let _ = outputs(&brokers, &prefix, 2, 500);
    first.kill();
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
        ..SynthOptions::stress()
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
    let config = RunConfig::new(&brokers, &input, &prefix).write(dir.path());
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
        ..SynthOptions::stress()
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
    let config = RunConfig { consumer: &static_member, rules: true, ..RunConfig::new(&brokers, &input, &prefix) }
        .write(dir.path());
    let first = start(&config);
    let _ = outputs(&brokers, &prefix, 2, 400);
    first.kill();
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
        ..SynthOptions::stress()
    };
    let inputs = Generator::new(options).take_records(3_000);
    let (before, rest) = inputs.split_at(1_000);
    let (during, after) = rest.split_at(1_000);
    let reference = reference_session_alerts(&inputs, &input);
    assert!(reference.len() > 50, "the synthetic sessions fire rules: {}", reference.len());

    // Everything on: the default rules (their tenant topic, consumed by the same group), the
    // session changelog, output topics created by the service.
    let dir = tempfile::tempdir().unwrap();
    let path = RunConfig { rules: true, ..RunConfig::new(&brokers, &input, &prefix) }.write(dir.path());
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
    let records = Generator::new(SynthOptions { seed: 3, ..SynthOptions::stress() }).take_records(900);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_alerts_are_dead_lettered_once_per_input_and_their_event_stays_published() {
    use acs_stream::config::Config;
    use acs_stream::model::{ReasonCatalog, Source};
    use acs_stream::pipeline::{Outcome, Pipeline, Record};
    use common::service::Service;
    use prost::Message as _;

    let Some(Broker { brokers, .. }) = broker().cloned() else { return };
    let prefix = unique("refused");
    let input = format!("{prefix}.raw");
    create_topics(&brokers, &[(&input, 3)]).await;
    // tenant-02's alerts topic takes no record as large as an alert.
    let refused = format!("{prefix}.tenant-02.alerts");
    common::topics::create_topics_with(&brokers, &[(&refused, 2)], &[("max.message.bytes", "64")]).await;
    // Two session rules matching every flag: a flag of tenant-02 has two alerts refused.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    let rule = |id: &str| {
        format!(
            "[[rule]]\nid = \"{id}\"\nseverity = \"low\"\ntitle = \"t\"\nsummary = \"s\"\n[[rule.match]]\nactions = [\"flag\"]\n"
        )
    };
    std::fs::write(&rules, format!("{}{}", rule("flag-a"), rule("flag-b"))).unwrap();
    let more = format!("file = \"{}\"\n", rules.display());
    let path = RunConfig { rules: true, more: &more, ..RunConfig::new(&brokers, &input, &prefix) }.write(dir.path());
    let config = Config::load(Some(&path)).unwrap();
    let inputs =
        Generator::new(SynthOptions { seed: 83, tenants: 2, start_ms: now_ms() - 3_600_000, ..SynthOptions::stress() })
            .take_records(600);

    // The reference: which inputs fire alerts, each tenant-02 one to be dead-lettered once.
    let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap().with_rules(config.rules().unwrap());
    let mut sessions = pipeline.sessions();
    let mut alerted = BTreeMap::new();
    for (offset, record) in inputs.iter().enumerate() {
        let source = Source { topic: std::sync::Arc::from(input.as_str()), partition: 0, offset: offset as i64 };
        if let Outcome::Event { alerts, .. } =
            pipeline.process(&Record::new(Some(&record.key), &record.value, source), &mut sessions, now_ms())
        {
            if !alerts.is_empty() {
                alerted.insert(expected_id(record), String::from_utf8_lossy(&record.key).ends_with("#tenant-02"));
            }
        }
    }
    let expected_failed: HashSet<&String> = alerted.iter().filter(|(_, refused)| **refused).map(|(id, _)| id).collect();
    assert!(expected_failed.len() > 5, "tenant-02's flags fire alerts: {}", expected_failed.len());

    produce(&brokers, &input, &inputs);
    let mut service = Service::start(config, PATIENCE);
    service.owns(|o| !o.is_empty()).await;
    let waited = tokio::task::spawn_blocking({
        let (brokers, prefix, input) = (brokers.clone(), prefix.clone(), input.clone());
        move || wait_committed(&brokers, &prefix, &input, 3)
    });
    waited.await.unwrap();
    let summary = service.stop().await;
    assert!(summary.drained, "{summary:?}");

    let topics =
        vec![format!("{prefix}.tenant-01.events"), format!("{prefix}.tenant-02.events"), format!("{prefix}.dlq")];
    let all = common::topics::read_committed(&brokers, &topics, 2);
    // Upstream re-sends some records (same bytes, same message id): each input record, by its
    // position, is one event, and at most one dead letter.
    let mut failed: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut events: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for output in &all {
        let position = common::source_position(output, &prefix);
        match output.headers.get("acs.error.code").map(String::as_str) {
            Some("produce_failed") => {
                assert_eq!(
                    output.headers.get("acs.error.output").map(String::as_str),
                    Some("alert"),
                    "{:?}",
                    output.headers
                );
                let record =
                    SynthRecord { key: output.key.clone().unwrap(), value: output.value.clone(), malformed: false };
                let previous = failed.insert(position, expected_id(&record));
                assert!(
                    previous.is_none(),
                    "one dead letter per input record, however many of its alerts were refused"
                );
            }
            Some(_) => {}
            None => {
                let event = acs_stream::encode::proto::pb::EnrichedEvent::decode(output.value.as_slice()).unwrap();
                assert!(events.insert(position, event.message_id).is_none(), "one event per input record");
            }
        }
    }
    let failed_ids: HashSet<&String> = failed.values().collect();
    let missing: Vec<_> = expected_failed.difference(&failed_ids).collect();
    let extra: Vec<_> = failed_ids.difference(&expected_failed).collect();
    assert!(missing.is_empty() && extra.is_empty(), "dead letters: missing {missing:?}, unexpected {extra:?}");
    for (position, id) in &failed {
        assert_eq!(events.get(position), Some(id), "the event of an input whose alerts were refused stays published");
    }
    assert_eq!(events.len(), inputs.iter().filter(|r| !r.malformed).count(), "every valid input's event");
    common::broker::say(&format!(
        "refused alerts: {} refusals, {} inputs dead-lettered once each, their events published",
        summary.produce_failed,
        failed.len()
    ));
}
