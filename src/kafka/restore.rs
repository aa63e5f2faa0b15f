//! Reading changelog partitions back, each from its beginning to the end it had when the
//! read started: the records a processor rebuilds its input partitions' state from.
//!
//! Blocking (librdkafka's own calls): the runtime runs it on a blocking thread while the
//! input partitions being restored stay paused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{error, warn};

/// Why changelog partitions cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailure {
    /// A partition does not exist: the changelog has fewer partitions than the input (or
    /// there is no such topic). Retrying cannot help.
    #[error(
        "changelog {topic}[{partition}] does not exist: the changelog topic needs at least as many partitions as \
         the input topics (create it with more, or let the service create it: topics.create)"
    )]
    Missing { topic: String, partition: i32 },
    #[error("cannot read changelog {topic}: {source}")]
    Kafka { topic: String, source: KafkaError },
}

/// Records read between two questions to `give_up`.
const GIVE_UP_EVERY: u64 = 10_000;

/// Pause between two attempts of a read that failed for a passing reason (broker away).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long one metadata or offsets request may take, and how long a read may go without
/// any progress before it starts over.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`read`] hands to its `apply`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read<'a> {
    /// One record of the changelog partition `partition` (no value: a tombstone), in offset
    /// order per partition.
    Record { partition: i32, key: &'a [u8], value: Option<&'a [u8]> },
    /// The read failed for a passing reason and starts over from the beginning of every
    /// partition: whatever was built from the records handed over so far must start afresh.
    /// (Applied again over it, the records would be counted twice, and a session whose
    /// record and tombstone were both compacted away in between would stay.)
    Restart,
}

/// Reads the partitions `partitions` of `topic`, each from its beginning to its end offset at
/// the start, handing each record to `apply` as it arrives, in offset order per partition;
/// returns the records read per partition (by the attempt that succeeded). Passing failures
/// (a broker away) are retried from the beginning, after a [`Read::Restart`], until
/// `give_up` says stop (it is asked between attempts and now and then while reading, e.g.
/// whether the input partitions were revoked meanwhile); a missing partition is final.
pub fn read(
    client: &ClientConfig,
    topic: &str,
    partitions: &BTreeSet<i32>,
    mut give_up: impl FnMut() -> bool,
    mut apply: impl FnMut(Read<'_>),
) -> Result<BTreeMap<i32, u64>, RestoreFailure> {
    loop {
        match read_once(client, topic, partitions, &mut give_up, &mut apply) {
            Ok(records) => return Ok(records),
            Err(Failure::Missing(partition)) => {
                return Err(RestoreFailure::Missing { topic: topic.to_owned(), partition });
            }
            Err(Failure::Kafka(source)) if give_up() => {
                return Err(RestoreFailure::Kafka { topic: topic.to_owned(), source });
            }
            Err(Failure::Kafka(error)) => {
                warn!(topic, %error, "Cannot read the changelog yet; retrying from the beginning.");
                std::thread::sleep(RETRY_PAUSE);
                apply(Read::Restart);
            }
        }
    }
}

enum Failure {
    Missing(i32),
    Kafka(KafkaError),
}

impl From<KafkaError> for Failure {
    fn from(error: KafkaError) -> Self {
        Failure::Kafka(error)
    }
}

/// The restore consumer's context: the end of a partition is how a read ends, not an error
/// to log (librdkafka also reports it as a client error).
struct RestoreContext;

impl ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !end {
            error!(%error, reason, "Changelog restore consumer error.");
        }
    }
}

impl ConsumerContext for RestoreContext {}

fn read_once(
    client: &ClientConfig,
    topic: &str,
    partitions: &BTreeSet<i32>,
    give_up: &mut impl FnMut() -> bool,
    apply: &mut impl FnMut(Read<'_>),
) -> Result<BTreeMap<i32, u64>, Failure> {
    let consumer: BaseConsumer<RestoreContext> = client.create_with_context(RestoreContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(described) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopic).into());
    };
    // The topic not there yet (just created, or not created: then the retries say so in the
    // log every second), its leader moving, no authorization: all retried.
    if let Some(error) = described.error() {
        return Err(KafkaError::MetadataFetch(error.into()).into());
    }
    let existing: BTreeSet<i32> = described.partitions().iter().map(|p| p.id()).collect();
    // The topic is there but has too few partitions: retrying cannot help.
    if let Some(missing) = partitions.iter().find(|p| !existing.contains(p)) {
        return Err(Failure::Missing(*missing));
    }
    let mut records: BTreeMap<i32, u64> = partitions.iter().map(|p| (*p, 0)).collect();
    // The end of each partition now: what was written before the read started (by this
    // partition's previous owner, which drained its outputs before letting it go).
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for &partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        if high > low {
            ends.insert(partition, high);
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    if ends.is_empty() {
        return Ok(records);
    }
    consumer.assign(&list)?;
    let mut last_progress = Instant::now();
    let mut read = 0_u64;
    while !ends.is_empty() {
        // Nobody waits for the result any more: stop early (asked now and then, not for
        // every record).
        if read % GIVE_UP_EVERY == 0 && give_up() {
            return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut).into());
        }
        read += 1;
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let partition = message.partition();
                let Some(&end) = ends.get(&partition) else { continue };
                if let Some(count) = records.get_mut(&partition) {
                    *count += 1;
                    apply(Read::Record { partition, key: message.key().unwrap_or_default(), value: message.payload() });
                }
                if message.offset() >= end - 1 {
                    ends.remove(&partition);
                }
            }
            // The end of a partition (the client is built with enable.partition.eof): reached
            // even when its last offsets hold no record a consumer sees (compacted away).
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                ends.remove(&partition);
            }
            Some(Err(error)) => return Err(error.into()),
            // Nothing for a long while although an end is not reached: start over.
            None if last_progress.elapsed() > REQUEST_TIMEOUT => {
                return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut).into());
            }
            None => {}
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;
    use crate::config::Config;
    use crate::kafka::client;

    /// One step of a read, owned.
    #[derive(Debug, PartialEq)]
    enum Step {
        Record(i32, Vec<u8>, Option<Vec<u8>>),
        Restart,
    }

    #[test]
    fn a_read_that_fails_midway_restarts_and_then_hands_every_record_once_in_order() {
        let cluster = MockCluster::new(1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let topic = "restore.test.changelog";
        cluster.create_topic(topic, 1, 1).unwrap();
        // Three batches (the mock cluster answers a fetch with one batch per partition), the
        // last record a tombstone.
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        let mut written = Vec::new();
        for batch in 0..3 {
            for n in 0..4 {
                let key = format!("raw/s{batch}{n}").into_bytes();
                let value = (batch, n) != (2, 3);
                let record = BaseRecord::<[u8], [u8]>::to(topic).partition(0).key(&key[..]);
                let record = if value { record.payload(&b"state"[..]) } else { record };
                producer.send(record).map_err(|(error, _)| error).unwrap();
                written.push(Step::Record(0, key, value.then(|| b"state".to_vec())));
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        }
        // The first fetch passes, the second fails with an error librdkafka hands to the
        // application; the later ones pass.
        cluster.request_errors(
            RDKafkaApiKey::Fetch,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR, RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN],
        );
        let file = format!("[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"restore-test\"\n");
        let config = Config::layered(Some(("restore test", &file)), []).unwrap();

        let mut steps = Vec::new();
        let records = read(
            &client::restore_consumer(&config),
            topic,
            &BTreeSet::from([0]),
            || false,
            |step| {
                steps.push(match step {
                    Read::Record { partition, key, value } => {
                        Step::Record(partition, key.to_vec(), value.map(<[u8]>::to_vec))
                    }
                    Read::Restart => Step::Restart,
                });
            },
        )
        .unwrap();

        assert_eq!(records, BTreeMap::from([(0, 12)]), "the records of the attempt that succeeded");
        let restarts: Vec<usize> =
            steps.iter().enumerate().filter(|(_, s)| **s == Step::Restart).map(|(at, _)| at).collect();
        assert_eq!(restarts.len(), 1, "{steps:?}");
        let (before, after) = steps.split_at(restarts[0]);
        assert!(!before.is_empty(), "records were handed over before the failure: {steps:?}");
        assert_eq!(before, &written[..before.len()], "the first attempt, in order");
        assert_eq!(&after[1..], &written[..], "after the restart: every record once, in order");
    }
}
