//! Reading changelog partitions back, each from its beginning to the end it had when the
//! read started: the records a processor rebuilds its input partitions' state from.
//!
//! Blocking (librdkafka's own calls): the runtime runs it on a blocking thread while the
//! input partitions being restored stay paused. The consumer polls on a thread of its own,
//! which hands the records over in batches (a few MiB at most read ahead); they are applied
//! on the calling thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{error, warn};

use super::offsets::TopicPartition;
use crate::pipeline::PartitionState;

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

/// Records applied between two questions to `give_up`.
const GIVE_UP_EVERY: u64 = 10_000;

/// Pause between two attempts of a read that failed for a passing reason (broker away).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long one metadata or offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No record for this long while an end is not reached: the read starts over. Long: a slow
/// broker (seen on tansu under load: fetches answered after 10-20 s) is only slowed down
/// further by reading everything again; librdkafka retries a fetch on its own.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

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

/// One input partition's state, rebuilt from the records of its changelog partition.
#[derive(Debug)]
pub struct Rebuilt<S> {
    pub tp: TopicPartition,
    pub state: S,
    /// Records of its changelog partition read (by the last attempt), and those that could
    /// not be applied.
    pub records: u64,
    pub errors: u64,
}

/// The states of the input partitions being restored, built from the steps of a [`read`]:
/// each record goes to the state of every input partition of its number (several input
/// topics may share a partition number, hence a changelog partition: each state keeps only
/// its own records); on a restart, every state starts afresh.
#[derive(Debug)]
pub struct Rebuild<S> {
    /// The state of an input partition seen for the first time.
    fresh: S,
    /// Sorted by partition number: a record finds its states in O(log n).
    partitions: Vec<Rebuilt<S>>,
}

impl<S: PartitionState + Clone> Rebuild<S> {
    /// Rebuilds the input partitions `inputs`, each from `fresh` (the processor's state of a
    /// partition seen for the first time).
    pub fn new(fresh: S, inputs: impl IntoIterator<Item = TopicPartition>) -> Rebuild<S> {
        let mut partitions: Vec<Rebuilt<S>> =
            inputs.into_iter().map(|tp| Rebuilt { tp, state: fresh.clone(), records: 0, errors: 0 }).collect();
        partitions.sort_by_key(|rebuilt| rebuilt.tp.partition);
        Rebuild { fresh, partitions }
    }

    /// Applies one step of the read.
    pub fn apply(&mut self, read: Read<'_>) {
        match read {
            Read::Restart => {
                for rebuilt in &mut self.partitions {
                    rebuilt.state = self.fresh.clone();
                    rebuilt.records = 0;
                    rebuilt.errors = 0;
                }
            }
            Read::Record { partition, key, value } => {
                let first = self.partitions.partition_point(|rebuilt| rebuilt.tp.partition < partition);
                for rebuilt in self.partitions[first..].iter_mut().take_while(|r| r.tp.partition == partition) {
                    rebuilt.records += 1;
                    if let Err(error) = rebuilt.state.restore(&rebuilt.tp.topic, partition, key, value) {
                        // The first only: the count is in the partition's "restored" line.
                        if rebuilt.errors == 0 {
                            warn!(topic = %rebuilt.tp.topic, partition, %error,
                                  "Skipped a changelog record that cannot be restored.");
                        }
                        rebuilt.errors += 1;
                    }
                }
            }
        }
    }

    /// The states rebuilt, by partition number.
    pub fn into_partitions(self) -> Vec<Rebuilt<S>> {
        self.partitions
    }
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

/// Records copied out of the consumer, handed from the reading thread to the applying one:
/// their bytes one after the other, and each record's partition and lengths.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    /// Partition, key length, value length (`None`: a tombstone).
    records: Vec<(i32, usize, Option<usize>)>,
}

/// A batch is handed over at this many records or bytes, whichever comes first, or as soon
/// as the consumer has nothing more right now.
const BATCH_RECORDS: usize = 1_024;
const BATCH_BYTES: usize = 1 << 20;
/// Batches read ahead of the applying thread at most (memory bound: about as many MiB).
const BATCHES_AHEAD: usize = 4;
/// How long the applying thread waits for a batch before it asks `give_up` again.
const GIVE_UP_WAIT: Duration = Duration::from_millis(100);

impl Batch {
    fn push(&mut self, partition: i32, key: &[u8], value: Option<&[u8]>) {
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value.unwrap_or_default());
        self.records.push((partition, key.len(), value.map(<[u8]>::len)));
    }

    fn is_full(&self) -> bool {
        self.records.len() >= BATCH_RECORDS || self.bytes.len() >= BATCH_BYTES
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }

    /// Hands every record to `apply`, in order.
    fn hand_over(&self, apply: &mut impl FnMut(Read<'_>)) {
        let mut at = 0;
        for &(partition, key_len, value_len) in &self.records {
            let key = &self.bytes[at..at + key_len];
            at += key_len;
            let value = value_len.map(|len| &self.bytes[at..at + len]);
            at += value_len.unwrap_or(0);
            apply(Read::Record { partition, key, value });
        }
    }
}

/// The reading thread's end of the hand-over: full batches go, emptied ones come back (their
/// buffers are reused: fresh memory would cost page faults).
struct Handover {
    full: SyncSender<Batch>,
    spares: Receiver<Batch>,
}

impl Handover {
    /// Sends `batch` if it holds records, leaving an empty one in its place; fails when
    /// nobody receives batches any more.
    fn send(&self, batch: &mut Batch) -> Result<(), Failure> {
        if batch.records.is_empty() {
            return Ok(());
        }
        let spare = self.spares.try_recv().unwrap_or_default();
        let full = std::mem::replace(batch, spare);
        self.full.send(full).map_err(|_| given_up())
    }
}

/// The failure of a read given up (`give_up`).
fn given_up() -> Failure {
    Failure::Kafka(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut))
}

/// One attempt: the consumer reads on a thread of its own and hands the records over in
/// batches; `apply` runs on the calling thread meanwhile (two cores work on a restore: the
/// consumer's polling and copying, and the decoding and the building of the state).
fn read_once(
    client: &ClientConfig,
    topic: &str,
    partitions: &BTreeSet<i32>,
    give_up: &mut impl FnMut() -> bool,
    apply: &mut impl FnMut(Read<'_>),
) -> Result<BTreeMap<i32, u64>, Failure> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (full, batches) = mpsc::sync_channel(BATCHES_AHEAD);
        let (emptied, spares) = mpsc::channel();
        let handover = Handover { full, spares };
        let reader = std::thread::Builder::new()
            .name("changelog-read".to_owned())
            .spawn_scoped(scope, || read_partitions(client, topic, partitions, &stop, handover))
            // As `std::thread::spawn`: out of threads, the process is in no state to go on.
            .expect("cannot start the changelog reading thread");
        let (mut handed, mut ask_at) = (0, 0);
        let gave_up = loop {
            // Nobody waits for the result any more: stop early (asked now and then, not for
            // every record).
            if handed >= ask_at {
                if give_up() {
                    break true;
                }
                ask_at = handed + GIVE_UP_EVERY;
            }
            match batches.recv_timeout(GIVE_UP_WAIT) {
                Ok(mut batch) => {
                    batch.hand_over(apply);
                    handed += batch.records.len() as u64;
                    batch.clear();
                    // The reader may be gone already.
                    let _ = emptied.send(batch);
                }
                Err(RecvTimeoutError::Timeout) => ask_at = handed,
                // The reader is done (all read, or failed).
                Err(RecvTimeoutError::Disconnected) => break false,
            }
        };
        // A reader waiting to hand over a batch gives up when nobody receives it.
        stop.store(gave_up, Ordering::Relaxed);
        drop(batches);
        let read = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if gave_up {
            return Err(given_up());
        }
        read
    })
}

/// The reading thread of [`read_once`]: reads every partition to its end, handing records to
/// `batches` in order; stops when `stop` is set or nobody receives the batches.
fn read_partitions(
    client: &ClientConfig,
    topic: &str,
    partitions: &BTreeSet<i32>,
    stop: &AtomicBool,
    handover: Handover,
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
    let mut batch = Batch::default();
    // Since when nothing arrived, if nothing did at the last poll.
    let mut idle_since: Option<Instant> = None;
    while !ends.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return Err(given_up());
        }
        let polled = match consumer.poll(Duration::ZERO) {
            Some(polled) => Some(polled),
            None => {
                // Nothing more right now: what was read is applied meanwhile.
                handover.send(&mut batch)?;
                consumer.poll(Duration::from_millis(100))
            }
        };
        match polled {
            Some(Ok(message)) => {
                idle_since = None;
                let partition = message.partition();
                let Some(&end) = ends.get(&partition) else { continue };
                if let Some(count) = records.get_mut(&partition) {
                    *count += 1;
                    batch.push(partition, message.key().unwrap_or_default(), message.payload());
                    if batch.is_full() {
                        handover.send(&mut batch)?;
                    }
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
            Some(Err(error)) => {
                // What was read before is handed over all the same (as if applied as it came).
                let _ = handover.send(&mut batch);
                return Err(error.into());
            }
            None => {
                // Nothing for a long while although an end is not reached: start over.
                if idle_since.get_or_insert_with(Instant::now).elapsed() > IDLE_LIMIT {
                    return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut).into());
                }
            }
        }
    }
    handover.send(&mut batch)?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;
    use crate::config::Config;
    use crate::encode::proto::pb;
    use crate::kafka::client;
    use crate::session::{SessionLimits, Sessions};

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

    /// A changelog value of a session of `raw`/`partition` at `sequence`.
    fn value(partition: i32, sequence: u64) -> Vec<u8> {
        let state = pb::SessionState {
            input_topic: "raw".to_owned(),
            input_partition: partition,
            tenant_id: "acme".to_owned(),
            status: "interacting".to_owned(),
            sequence,
            ..pb::SessionState::default()
        };
        state.encode_to_vec()
    }

    fn record<'a>(partition: i32, key: &'a str, value: &'a [u8]) -> Read<'a> {
        Read::Record { partition, key: key.as_bytes(), value: Some(value) }
    }

    #[test]
    fn each_record_goes_to_the_input_partitions_of_its_number() {
        let inputs = [("raw.b", 1), ("raw", 1), ("raw", 0), ("raw.b", 0), ("raw", 2)];
        let mut rebuild =
            Rebuild::new(Sessions::new(SessionLimits::default()), inputs.map(|(t, p)| TopicPartition::new(t, p)));
        let (one, zero) = (value(1, 3), value(0, 1));
        rebuild.apply(record(1, "raw/a#d#h#acme", &one));
        rebuild.apply(record(0, "raw/b#d#h#acme", &zero));
        let rebuilt = rebuild.into_partitions();
        let seen: Vec<(&str, i32, u64, usize)> =
            rebuilt.iter().map(|r| (&*r.tp.topic, r.tp.partition, r.records, r.state.len())).collect();
        // By partition (in the given order within one): each record read by every input
        // partition of its number, kept by its own topic's.
        let expected = [("raw", 0, 1, 1), ("raw.b", 0, 1, 0), ("raw.b", 1, 1, 0), ("raw", 1, 1, 1), ("raw", 2, 0, 0)];
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_restarted_read_rebuilds_every_partition_from_a_fresh_state() {
        let inputs = [TopicPartition::new("raw", 0), TopicPartition::new("raw", 1)];
        let mut rebuild = Rebuild::new(Sessions::new(SessionLimits::default()), inputs);
        let (a, b, c) = (value(0, 3), value(0, 5), value(1, 1));

        // The first attempt reads a, b and c (and a key that cannot be restored), then fails
        // before a's tombstone.
        rebuild.apply(record(0, "raw/a#d#h#acme", &a));
        rebuild.apply(record(0, "raw/b#d#h#acme", &b));
        rebuild.apply(record(1, "raw/c#d#h#acme", &c));
        rebuild.apply(record(0, "no topic", &b));
        let counts = |rebuild: &Rebuild<Sessions>| -> Vec<(usize, u64, u64)> {
            rebuild.partitions.iter().map(|r| (r.state.len(), r.records, r.errors)).collect()
        };
        assert_eq!(counts(&rebuild), [(2, 3, 1), (1, 1, 0)]);

        // Compaction removed a's record and its tombstone meanwhile: the second attempt reads
        // b and c only. Nothing of the first attempt is left, nothing counts twice.
        rebuild.apply(Read::Restart);
        assert_eq!(counts(&rebuild), [(0, 0, 0), (0, 0, 0)]);
        rebuild.apply(record(0, "raw/b#d#h#acme", &b));
        rebuild.apply(record(1, "raw/c#d#h#acme", &c));
        assert_eq!(counts(&rebuild), [(1, 1, 0), (1, 1, 0)]);
        let rebuilt = rebuild.into_partitions();
        assert!(rebuilt[0].state.get("a#d#h#acme").is_none(), "a removed session does not come back");
        assert_eq!(rebuilt[0].state.get("b#d#h#acme").map(|s| s.sequence), Some(5));
        assert_eq!(rebuilt[1].state.get("c#d#h#acme").map(|s| s.sequence), Some(1));
    }
}
