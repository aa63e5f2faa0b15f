//! The delivery guarantee: one seam between the service loop and Kafka (as Kafka Streams'
//! `StreamsProducer`). The loop sends and commits through a [`Delivery`] and never asks which
//! guarantee is on; the two implementations differ in what a commit is, where a committed
//! position may be, and what a refused output does.
//!
//! - [`AtLeastOnce`]: an input position is committed only past records whose every output
//!   (and state change) is acknowledged ([`OffsetTracker::position`]), with the consumer's
//!   own commit; a refused output is rerouted to the dead-letter topic at once.
//! - [`ExactlyOnce`]: one transactional producer per instance, its id stable across restarts
//!   (`<group>-<instance>`): `init_transactions` fences a zombie of the same instance and
//!   aborts what it left open. A transaction begins with the first record sent after a
//!   commit; a commit sends the input positions of every record processed since
//!   ([`OffsetTracker::processed`]) into it with the consumer's group metadata (KIP-447:
//!   a member of an older generation is fenced) and commits it. A refused output cannot be
//!   rerouted inside a transaction that will not commit: the transaction aborts, and the
//!   loop processes its records again, the refused outputs dead-lettered then.
//!
//! The transactional calls block (`commit_transaction` flushes first): the service loop
//! waits for them on its own thread, never on an async worker. Retriable errors are retried,
//! abortable ones returned as [`DeliveryError::Abortable`], a fenced producer as
//! [`DeliveryError::Fenced`], other failures as [`DeliveryError::Fatal`]. Each call runs on
//! a thread of its own and is waited for at most its timeout (twice for the commit, which
//! flushes first) and [`STUCK_GRACE`]:
//! librdkafka 2.12 may never return from `send_offsets_to_transaction` once the broker of
//! the group coordinator died (its coordinator requests are not timed out: librdkafka
//! issues 5456 and 5511; seen in the fault suite with the broker holding leaders killed).
//! Such a producer, like one that failed with a fatal transactional error, is
//! [`DeliveryError::Broken`], and replaced as a fenced one is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::events;
use super::health::Heartbeat;
use super::offsets::{OffsetTracker, TopicPartition};
use super::outbox::Producer;

/// Why a commit (or a send's transaction) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DeliveryError {
    /// The open transaction cannot commit: abort it, rewind, process again.
    #[error("transaction must abort: {0}")]
    Abortable(String),
    /// The producer is fenced: another producer took its transactional id over, or the
    /// brokers aborted its transaction for its age (the brokers were away longer than the
    /// transaction timeout). A new producer with the same id can go on, its uncommitted work
    /// processed again (Kafka Streams' task migration).
    #[error("fenced: {0}")]
    Fenced(String),
    /// The producer cannot go on, fenced aside: a transactional call did not return in time
    /// (librdkafka waits for a dead group coordinator forever; the call is left to end on
    /// its own thread), or librdkafka raised a fatal transactional error (seen: an abort
    /// refused as `INVALID_TXN_STATE` after a timed-out transaction's epoch bump). Replaced
    /// as a fenced one is: a new producer with the same transactional id aborts what the
    /// old one left open.
    #[error("broken: {0}")]
    Broken(String),
    /// This instance cannot go on: the producer failed for good.
    #[error("{0}")]
    Fatal(String),
}

/// The consumer, as a commit needs it.
pub(super) trait GroupConsumer {
    fn commit_list(&self, list: &TopicPartitionList, mode: CommitMode) -> KafkaResult<()>;
    fn metadata(&self) -> Option<ConsumerGroupMetadata>;
    /// Each assigned partition's position as the application sees it: past the last record
    /// handed over, and past the transaction markers that followed it (librdkafka steps over
    /// control records it does not hand over).
    fn app_positions(&self) -> HashMap<TopicPartition, i64>;
}

impl<C: ConsumerContext> GroupConsumer for BaseConsumer<C> {
    fn commit_list(&self, list: &TopicPartitionList, mode: CommitMode) -> KafkaResult<()> {
        self.commit(list, mode)
    }

    fn metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.group_metadata()
    }

    fn app_positions(&self) -> HashMap<TopicPartition, i64> {
        let Ok(list) = self.position() else { return HashMap::new() };
        list.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(at) => Some((TopicPartition::new(e.topic(), e.partition()), at)),
                _ => None,
            })
            .collect()
    }
}

/// The delivery guarantee, as the service loop uses it.
pub(super) trait Delivery: Send {
    /// Readies the producer for a send: opens a transaction when the guarantee needs one and
    /// none is open.
    fn before_send(&mut self) -> Result<(), DeliveryError>;
    /// Where `tp` may be committed now.
    fn committable(&self, tracker: &OffsetTracker, tp: &TopicPartition) -> Option<i64>;
    /// Commits the work done so far at `positions`; `sync`: wait for the outcome (on revoke
    /// and shutdown). `Ok(false)`: the commit failed and a later one retries it (logged).
    fn commit(
        &mut self,
        consumer: &dyn GroupConsumer,
        positions: &[(TopicPartition, i64)],
        sync: bool,
    ) -> Result<bool, DeliveryError>;
    /// Drops the work not committed yet. True when there was some (a transaction aborted):
    /// the caller then processes again from the committed positions.
    fn abort(&mut self) -> Result<bool, DeliveryError>;
    /// Whether a refused output can be rerouted now (at least once), or makes the open
    /// transaction abort (exactly once).
    fn reroutes_refusals(&self) -> bool;
    /// Whether records were sent since the last commit.
    fn open(&self) -> bool;
    /// Forgets what it knows of partitions no longer assigned.
    fn forget(&mut self, _tps: &[TopicPartition]) {}
    /// Goes on with a new producer, the old one fenced (exactly once: its transactions are
    /// initialized, which fences what is left of the old one). At least once a producer is
    /// never fenced: `Fatal`.
    fn replace(&mut self, _producer: Arc<Producer>) -> Result<(), DeliveryError> {
        Err(DeliveryError::Fatal("a producer replaced at least once".into()))
    }
}

/// An offset list.
fn offsets(positions: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (tp, offset) in positions {
        // A partition listed twice cannot happen (the positions come from a set).
        let _ = list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
    }
    list
}

/// At least once: commit what is acknowledged.
#[derive(Debug, Default)]
pub(super) struct AtLeastOnce;

impl Delivery for AtLeastOnce {
    fn before_send(&mut self) -> Result<(), DeliveryError> {
        Ok(())
    }

    fn committable(&self, tracker: &OffsetTracker, tp: &TopicPartition) -> Option<i64> {
        tracker.position(tp)
    }

    fn commit(
        &mut self,
        consumer: &dyn GroupConsumer,
        positions: &[(TopicPartition, i64)],
        sync: bool,
    ) -> Result<bool, DeliveryError> {
        if positions.is_empty() {
            return Ok(true);
        }
        let mode = if sync { CommitMode::Sync } else { CommitMode::Async };
        match consumer.commit_list(&offsets(positions), mode) {
            // The outcome of an asynchronous commit is reported to no one (rust-rdkafka's
            // event API leaves librdkafka without a commit callback for manual commits): it
            // is counted as sent; a failed one is retried by the next commit.
            Ok(()) => {
                events::committed(positions.len(), sync);
                Ok(true)
            }
            Err(error) => {
                events::commit_failed(positions.len(), &error);
                Ok(false)
            }
        }
    }

    fn abort(&mut self) -> Result<bool, DeliveryError> {
        Ok(false)
    }

    fn reroutes_refusals(&self) -> bool {
        true
    }

    fn open(&self) -> bool {
        false
    }
}

/// Exactly once: Kafka transactions.
pub(super) struct ExactlyOnce {
    producer: Arc<Producer>,
    /// A transaction is open (begun, not committed or aborted).
    open: bool,
    /// The positions of the last commit: a commit with nothing new is skipped.
    committed: HashMap<TopicPartition, i64>,
    /// The timeout given to each transactional call (librdkafka's own), and from which how
    /// long it is waited for before its producer is taken as stuck (see [`bounded`]).
    call_timeout: Duration,
    /// Beaten while a call is waited for and between the attempts of a call retried (a loop
    /// waiting on the brokers is alive).
    heartbeat: Arc<Heartbeat>,
    /// Records sent in the open transaction.
    sent: u64,
}

/// Pause between two attempts of a transactional call that failed with a retriable error.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long past its own timeout a transactional call is waited for before its producer is
/// taken as stuck.
const STUCK_GRACE: Duration = Duration::from_secs(5);

/// A transactional call, run on a thread of its own.
type Call = dyn Fn(&Producer, Duration) -> KafkaResult<()> + Send + Sync;

/// Runs `call` with `producer` and `timeout` on a thread of its own, waiting for it at most
/// `wait`, beating `heartbeat` meanwhile; `None` when it did not return in time (it goes on
/// alone, holding its producer until it returns, if ever).
fn bounded(
    producer: &Arc<Producer>,
    call: &Arc<Call>,
    timeout: Duration,
    wait: Duration,
    heartbeat: &Heartbeat,
) -> Option<KafkaResult<()>> {
    let (done, result) = mpsc::sync_channel(1);
    let (producer, call) = (producer.clone(), call.clone());
    std::thread::Builder::new()
        .name("txn-call".to_owned())
        .spawn(move || {
            // Nobody waits any more when it comes back late.
            let _ = done.send(call(&producer, timeout));
        })
        // As `std::thread::spawn`: out of threads, the process is in no state to go on.
        .expect("cannot start a transactional call's thread");
    let deadline = Instant::now() + wait;
    loop {
        heartbeat.beat();
        let left = deadline.saturating_duration_since(Instant::now());
        match result.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(outcome) => return Some(outcome),
            Err(RecvTimeoutError::Timeout) if !left.is_zero() => {}
            // Out of time, or the thread ended without an answer.
            Err(_) => return None,
        }
    }
}

impl ExactlyOnce {
    /// Initializes the producer's transactions: fences an older producer with the same
    /// transactional id (a zombie of this instance) and aborts what it left open. Retried
    /// while the brokers answer with retriable errors.
    pub fn init(
        producer: Arc<Producer>,
        call_timeout: Duration,
        heartbeat: Arc<Heartbeat>,
    ) -> Result<Self, DeliveryError> {
        let mut delivery =
            ExactlyOnce { producer, open: false, committed: HashMap::new(), call_timeout, heartbeat, sent: 0 };
        delivery.call("init_transactions", |p, t| p.init_transactions(t))?;
        Ok(delivery)
    }

    /// Runs a transactional call, again while it fails with a retriable error; each attempt
    /// waited for at most the call timeout and [`STUCK_GRACE`] (see [`bounded`]), twice the
    /// timeout for `commit_transaction`, which flushes with it first.
    fn call(
        &mut self,
        what: &str,
        call: impl Fn(&Producer, Duration) -> KafkaResult<()> + Send + Sync + 'static,
    ) -> Result<(), DeliveryError> {
        self.call_for(what, 1, call)
    }

    /// [`ExactlyOnce::call`] for a call that may take `timeouts` times the call timeout.
    fn call_for(
        &mut self,
        what: &str,
        timeouts: u32,
        call: impl Fn(&Producer, Duration) -> KafkaResult<()> + Send + Sync + 'static,
    ) -> Result<(), DeliveryError> {
        let call: Arc<Call> = Arc::new(call);
        loop {
            let waited = self.call_timeout * timeouts + STUCK_GRACE;
            let Some(outcome) = bounded(&self.producer, &call, self.call_timeout, waited, &self.heartbeat) else {
                return Err(DeliveryError::Broken(format!("{what} did not return within {} s", waited.as_secs())));
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                    tracing::warn!(call = what, %error, "Transactional call failed; retrying.");
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(KafkaError::Transaction(error)) if error.txn_requires_abort() => {
                    return Err(DeliveryError::Abortable(format!("{what}: {error}")));
                }
                // `commit_transaction` flushes first; records of a transaction that failed
                // meanwhile may never leave: the transaction cannot commit.
                Err(error @ KafkaError::Flush(_)) => {
                    return Err(DeliveryError::Abortable(format!("{what}: {error}")));
                }
                Err(KafkaError::Transaction(error)) if fenced(error.code()) => {
                    return Err(DeliveryError::Fenced(format!("{what}: {error}")));
                }
                Err(KafkaError::Transaction(error)) if error.is_fatal() => {
                    return Err(DeliveryError::Broken(format!("{what}: {error}")));
                }
                Err(error) => return Err(DeliveryError::Fatal(format!("{what}: {error}"))),
            }
        }
    }
}

/// Whether `code` says the producer was fenced (a newer epoch for its transactional id).
pub(super) fn fenced(code: rdkafka::error::RDKafkaErrorCode) -> bool {
    use rdkafka::error::RDKafkaErrorCode::{Fenced, InvalidProducerEpoch, ProducerFenced};
    matches!(code, Fenced | ProducerFenced | InvalidProducerEpoch)
}

impl Delivery for ExactlyOnce {
    fn before_send(&mut self) -> Result<(), DeliveryError> {
        if !self.open {
            self.call("begin_transaction", |p, _| p.begin_transaction())?;
            self.open = true;
            self.sent = 0;
        }
        self.sent += 1;
        Ok(())
    }

    fn committable(&self, tracker: &OffsetTracker, tp: &TopicPartition) -> Option<i64> {
        tracker.processed(tp)
    }

    fn commit(
        &mut self,
        consumer: &dyn GroupConsumer,
        positions: &[(TopicPartition, i64)],
        _sync: bool,
    ) -> Result<bool, DeliveryError> {
        let moved: Vec<(TopicPartition, i64)> =
            positions.iter().filter(|(tp, at)| self.committed.get(tp) != Some(at)).cloned().collect();
        if !self.open && moved.is_empty() {
            return Ok(true);
        }
        if !self.open {
            // Records processed without an output (a tenant-topic record that fired nothing):
            // their positions still commit in a transaction of their own.
            self.call("begin_transaction", |p, _| p.begin_transaction())?;
            self.open = true;
            self.sent = 0;
        }
        if !moved.is_empty() {
            let metadata = consumer
                .metadata()
                .ok_or_else(|| DeliveryError::Abortable("no consumer group metadata (not in the group)".into()))?;
            let list = offsets(&moved);
            self.call("send_offsets_to_transaction", move |p, t| p.send_offsets_to_transaction(&list, &metadata, t))?;
        }
        // It flushes first, with the same timeout.
        self.call_for("commit_transaction", 2, |p, t| p.commit_transaction(t))?;
        self.open = false;
        events::transaction_committed(moved.len(), self.sent);
        self.committed.extend(moved);
        Ok(true)
    }

    fn abort(&mut self) -> Result<bool, DeliveryError> {
        if !self.open {
            return Ok(false);
        }
        self.call("abort_transaction", |p, t| p.abort_transaction(t))?;
        self.open = false;
        Ok(true)
    }

    fn reroutes_refusals(&self) -> bool {
        false
    }

    fn open(&self) -> bool {
        self.open
    }

    fn replace(&mut self, producer: Arc<Producer>) -> Result<(), DeliveryError> {
        self.producer = producer;
        self.open = false;
        self.committed.clear();
        self.call("init_transactions", |p, t| p.init_transactions(t))
    }

    /// Their committed positions are forgotten: their next commit, after another assignment,
    /// is never skipped.
    fn forget(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.committed.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    fn producer() -> Arc<Producer> {
        let mut config = rdkafka::ClientConfig::new();
        // Never reached: the calls below do not talk to a broker.
        config.set("bootstrap.servers", "127.0.0.1:9");
        let outbox = super::super::outbox::Outbox::new(config, "dlq", Duration::from_secs(1)).expect("a producer");
        outbox.producer.clone()
    }

    #[test]
    fn a_transactional_call_that_does_not_return_in_time_is_left_behind() {
        let producer = producer();
        let heartbeat = Heartbeat::new();
        // A call that returns only when released (as librdkafka waiting for a dead group
        // coordinator, which never does).
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let stuck: Arc<Call> = Arc::new(move |_, _| {
            let _ = released.lock().expect("not poisoned").recv();
            Ok(())
        });
        let wait = Duration::from_millis(200);
        assert!(bounded(&producer, &stuck, Duration::ZERO, wait, &heartbeat).is_none(), "left behind");
        release.send(()).expect("the stuck call still waits");

        // A call that answers is waited for, whatever it answers.
        let answered: Arc<Call> = Arc::new(|_, _| Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)));
        let outcome = bounded(&producer, &answered, Duration::ZERO, Duration::from_secs(60), &heartbeat);
        assert!(matches!(outcome, Some(Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)))), "{outcome:?}");
    }
}
