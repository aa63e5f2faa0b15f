//! Broker-side helpers of the broker tests: topics, produced input, what the topics hold,
//! and the cluster's metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use acs_stream::commands::demo;
use acs_stream::synth::SynthRecord;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use super::BROKER_PATIENCE as PATIENCE;

pub fn unique(prefix: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{prefix}-{}-{}", std::process::id(), now.as_nanos() % 1_000_000_000)
}

pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

pub async fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    create_replicated_topics(brokers, topics, 1).await;
}

/// Creates `topics` (name, partitions) with the topic configs `configs`, one replica each.
pub async fn create_topics_with(brokers: &str, topics: &[(&str, i32)], configs: &[(&str, &str)]) {
    create_topics_with_replicas(brokers, topics, configs, 1).await;
}

/// Creates `topics` (name, partitions) with `replicas` replicas each.
pub async fn create_replicated_topics(brokers: &str, topics: &[(&str, i32)], replicas: i32) {
    create_topics_with_replicas(brokers, topics, &[], replicas).await;
}

/// Creates `topics` (name, partitions) with the topic configs `configs` and `replicas`
/// replicas each.
pub async fn create_topics_with_replicas(
    brokers: &str,
    topics: &[(&str, i32)],
    configs: &[(&str, &str)],
    replicas: i32,
) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, p)| {
            configs.iter().fold(NewTopic::new(name, *p, TopicReplication::Fixed(replicas)), |t, (k, v)| t.set(k, v))
        })
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await.unwrap() {
        result.unwrap_or_else(|(topic, code)| panic!("cannot create {topic}: {code}"));
    }
}

pub fn produce(brokers: &str, topic: &str, records: &[SynthRecord]) {
    demo::produce(brokers, topic, records.iter().cloned()).expect("input produced");
}

/// Records in `topics` (all of them: the topics are this test's own).
pub fn total_records(brokers: &str, topics: &[String]) -> i64 {
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
pub fn input_ends(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    (0..partitions)
        .map(|partition| (partition, consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap().1))
        .collect()
}

/// The number of partitions of `topic`.
pub fn partitions_of(brokers: &str, topic: &str) -> i32 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    metadata.topics().first().map_or(0, |t| t.partitions().len() as i32)
}

/// Per partition of `topic`: its leader and its in-sync replicas, as the cluster says now.
pub fn leaders_and_isr(brokers: &str, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let topic = metadata.topics().first().expect("the topic's metadata");
    topic.partitions().iter().map(|p| (p.id(), (p.leader(), p.isr().to_vec()))).collect()
}

/// Produces `records` with an idempotent producer (acks=all); every one must be acknowledged.
pub fn produce_acknowledged(brokers: &str, topic: &str, records: &[SynthRecord]) {
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
pub fn wait_for_metadata(
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

/// Every record of `topics` (`partitions` partitions each) a `read_committed` consumer sees,
/// each partition read to its end (the last stable offset: records of an open transaction
/// are not read, nor those of aborted ones).
pub fn read_committed(brokers: &str, topics: &[String], partitions: i32) -> Vec<demo::OutputRecord> {
    topics.iter().flat_map(|topic| read_topic_committed(brokers, topic, partitions)).collect()
}

/// [`read_committed`] of one topic (librdkafka names only the partition of an end reached).
fn read_topic_committed(brokers: &str, topic: &str, partitions: i32) -> Vec<demo::OutputRecord> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "acs-test-reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut open: std::collections::BTreeSet<i32> = (0..partitions).collect();
    let started = std::time::Instant::now();
    let mut records = Vec::new();
    while !open.is_empty() {
        assert!(started.elapsed() < PATIENCE, "{topic} not read to its end within {PATIENCE:?}: {open:?} left");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| {
                                (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(demo::OutputRecord {
                    topic: message.topic().to_owned(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
    records
}

/// The partitions of `topics` with a transaction left open: their last stable offset (the
/// end a `read_committed` consumer reads to) below their high watermark (a
/// `read_uncommitted` consumer's end).
pub fn open_transactions(brokers: &str, topics: &[String], partitions: i32) -> Vec<(String, i32, i64, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client = |isolation: &str| -> BaseConsumer {
        ClientConfig::new().set("bootstrap.servers", brokers).set("isolation.level", isolation).create().unwrap()
    };
    let (committed, uncommitted) = (client("read_committed"), client("read_uncommitted"));
    let mut open = Vec::new();
    for topic in topics {
        for partition in 0..partitions {
            let timeout = Duration::from_secs(10);
            let (_, stable) = committed.fetch_watermarks(topic, partition, timeout).unwrap();
            let (_, high) = uncommitted.fetch_watermarks(topic, partition, timeout).unwrap();
            if stable != high {
                open.push((topic.clone(), partition, stable, high));
            }
        }
    }
    open
}
