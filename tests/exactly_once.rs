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

use std::time::Duration;

use acs_stream::config::Config;
use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use common::BROKER_PATIENCE as PATIENCE;
use common::broker::{Broker, say};
use common::checks::{Checked, OUTPUT_PARTITIONS, Run, check_exactly_once};
use common::processor::{RunConfig, start, terminate, wait_committed};
use common::service::Service;
use common::topics::{create_topics, now_ms, produce, unique};

const INPUT_PARTITIONS: i32 = 3;

fn broker() -> Option<&'static Broker> {
    common::broker::shared()
}

fn inputs(seed: u64, count: usize) -> Vec<SynthRecord> {
    let options = SynthOptions {
        seed,
        tenants: 2,
        malformed_ratio: 0.02,
        start_ms: now_ms() - 3_600_000,
        ..SynthOptions::stress()
    };
    Generator::new(options).take_records(count)
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

    let checked = check_exactly_once(
        &Run { brokers: &brokers, prefix: &prefix, input: &input, input_partitions: INPUT_PARTITIONS, inputs: &inputs },
        None,
    );
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
    committed_to_the_end(&brokers, &prefix, &input).await;
    let second = second.stop().await;
    assert!(first.drained && second.drained, "{first:?}\n{second:?}");
    assert!(first.consumed > 0 && second.consumed > 0, "both members processed records");
    assert!(second.restored_entries > 0, "the moved sessions were restored: {second:?}");

    let checked = checked_off_the_workers(brokers, prefix, input, inputs, None).await;
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
    committed_to_the_end(&brokers, &prefix, &input).await;
    let summary = service.stop().await;
    assert!(summary.drained, "{summary:?}");
    assert!(summary.produce_failed > 0, "the brokers refused events: {summary:?}");

    let checked = checked_off_the_workers(brokers, prefix, input, inputs, Some("tenant-02")).await;
    assert!(checked.produce_failed > 0);
    say(&format!(
        "exactly-once, refused outputs: {} refusals over the aborted transactions; {} events published, {} inputs \
         dead-lettered once as produce_failed, none twice",
        summary.produce_failed, checked.events, checked.produce_failed
    ));
}

/// Waits until the group committed the input to its end, off the async worker threads.
async fn committed_to_the_end(brokers: &str, prefix: &str, input: &str) {
    let (brokers, prefix, input) = (brokers.to_owned(), prefix.to_owned(), input.to_owned());
    tokio::task::spawn_blocking(move || wait_committed(&brokers, &prefix, &input, INPUT_PARTITIONS)).await.unwrap();
}

/// [`check_exactly_once`] of the run, off the async worker threads (its reads block).
async fn checked_off_the_workers(
    brokers: String,
    prefix: String,
    input: String,
    inputs: Vec<SynthRecord>,
    refused_tenant: Option<&'static str>,
) -> Checked {
    tokio::task::spawn_blocking(move || {
        let run = Run {
            brokers: &brokers,
            prefix: &prefix,
            input: &input,
            input_partitions: INPUT_PARTITIONS,
            inputs: &inputs,
        };
        check_exactly_once(&run, refused_tenant)
    })
    .await
    .unwrap()
}
