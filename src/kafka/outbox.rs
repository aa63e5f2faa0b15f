//! Sending outputs and taking their delivery reports (Kafka Streams' `RecordCollector`).
//!
//! Every record produced carries a [`Pending`]: the [`Ticket`] of its input record in the
//! offset tracker, and what to do if the brokers refuse it for good. librdkafka's delivery
//! callback (on the producer's own thread) hands the report back through a channel; the
//! service loop settles it: an acknowledgement acks the ticket, a refusal goes to the
//! delivery mode (at least once: rerouted here; exactly once: the transaction aborts).
//!
//! At least once, the outputs of one input record the brokers refuse (an alert, the
//! tenant-topic copy, the event itself) are dead-lettered once, when the last of them is
//! settled: one dead letter with the original bytes, `produce_failed`, and
//! `acs.error.output` naming every refused output; the outputs that were acknowledged stay
//! published. A dead letter refused as too large is sent again without the value; one refused
//! otherwise (or a changelog record) is lost for good: its partition stops.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

use super::events;
use super::offsets::{OffsetTracker, Ticket, TopicPartition};
use super::plan::{self, Refused, Role};
use crate::decode::{ErrorCode, Rejection};
use crate::encode::{DeadLetter, Headers as OutputHeaders, Output};
use crate::model::Source;
use crate::pipeline::Record;
use crate::telemetry::{DeliveryMeters, Meters, Published};

/// The producer every output goes through.
pub(super) type Producer = ThreadedProducer<OutboxContext>;

/// Delivery callbacks: hand the report to the service loop.
pub(super) struct OutboxContext {
    pub deliveries: Sender<Delivery>,
}

impl ClientContext for OutboxContext {
    /// A client-level error (a broker unreachable, a request timed out): librdkafka retries
    /// the records concerned.
    fn error(&self, error: KafkaError, reason: &str) {
        events::producer_error(&error, reason);
    }
}

impl ProducerContext for OutboxContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let error = result.as_ref().err().map(|(error, _)| error.clone());
        // The receiver lives as long as the service loop; a send fails only during teardown,
        // when nothing is committed any more.
        let _ = self.deliveries.send(Delivery { pending, error });
    }
}

/// A delivery report, moved from librdkafka's thread to the service loop.
#[derive(Debug)]
pub(super) struct Delivery {
    pub pending: Box<Pending>,
    pub error: Option<KafkaError>,
}

/// The original record, kept until its outputs are settled: a refused output dead-letters
/// the ORIGINAL key and value.
#[derive(Debug)]
pub(super) struct Input {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    source: Source,
    /// Outputs with this fallback not settled yet.
    unsettled: AtomicU32,
    /// Whether any was refused (then `refused` says which).
    any_refused: AtomicBool,
    refused: Mutex<RefusedOutputs>,
    /// Its `produce_failed` rejection, but for the detail (the processor's stamp, whether the
    /// value may go with it).
    rejection: Rejection,
}

impl Input {
    pub fn new(record: &Record<'_>, outputs: u32, rejection: Rejection) -> Arc<Input> {
        Arc::new(Input {
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.to_vec(),
            source: record.source.clone(),
            unsettled: AtomicU32::new(outputs),
            any_refused: AtomicBool::new(false),
            refused: Mutex::new(Vec::new()),
            rejection,
        })
    }

    /// Bytes held for the copy.
    pub fn bytes(&self) -> usize {
        self.key.as_deref().map_or(0, <[u8]>::len) + self.value.len()
    }

    /// One output settled (`refused`: with its role and error); the refused outputs when it
    /// was the last one settled and any was refused.
    fn settle(&self, refused: Option<(Role, String)>) -> Option<RefusedOutputs> {
        let mut list = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(refused) = refused {
            list.push(refused);
            self.any_refused.store(true, Ordering::Relaxed);
        }
        let last = self.unsettled.fetch_sub(1, Ordering::AcqRel) == 1;
        (last && self.any_refused.load(Ordering::Relaxed)).then(|| std::mem::take(&mut *list))
    }

    /// An output acknowledged: nothing to lock unless something was refused.
    fn settle_acknowledged(&self) -> Option<RefusedOutputs> {
        if !self.any_refused.load(Ordering::Relaxed) && self.unsettled.load(Ordering::Acquire) > 1 {
            self.unsettled.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.settle(None)
    }
}

/// The outputs of an input refused for good, each with its role and error.
pub(super) type RefusedOutputs = Vec<(Role, String)>;

/// What to do when the brokers refuse a produced record for good.
#[derive(Debug)]
pub(super) enum Fallback {
    /// An output of the input record (its `role`): the input is dead-lettered once, when all
    /// its outputs are settled.
    Input { input: Arc<Input>, role: Role },
    /// A dead letter carrying the original value: refused as too large, it is sent again
    /// without the value (the headers still say where the record is in the input).
    DeadLetter { dead: Box<DeadLetter>, key: Option<Box<[u8]>>, output: Option<String> },
    /// Nothing left to try: the record is lost, its partition stopped.
    Nothing,
}

/// Travels with each produced record (the delivery opaque).
#[derive(Debug)]
pub(super) struct Pending {
    pub ticket: Ticket,
    /// Acknowledgements of the ticket this record's delivery stands for: 1, or the number of
    /// refused outputs a dead letter replaces.
    pub acks: u32,
    /// The consumed record's partition (stopped if the output is lost for good) and offset.
    pub tp: TopicPartition,
    pub offset: i64,
    /// Its place in the consumed record's plan (exactly once: which output to leave out when
    /// the record is processed again after a refusal).
    pub index: usize,
    /// Bytes held for this record (input copy and output), released with its report.
    pub bytes: usize,
    pub fallback: Fallback,
    /// What it is (the metrics' kind).
    pub kind: Published,
    /// When its input record was consumed: set on the record's own output (event, dead letter,
    /// re-keyed record), not on its alerts or changelog records.
    pub consumed_at: Option<Instant>,
}

/// A record as the producer takes it: an output, or a changelog record (explicit partition;
/// no value for a tombstone).
pub(super) struct Raw<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Option<OwnedHeaders>,
    pub partition: Option<i32>,
}

impl<'a> Raw<'a> {
    /// An output record, with `headers` in place of its own when given.
    pub fn output(output: &'a Output<'a>, headers: Option<OwnedHeaders>) -> Raw<'a> {
        Raw {
            topic: &output.topic,
            key: output.key.as_deref(),
            value: Some(&output.value),
            headers: headers.or_else(|| (!output.headers.is_empty()).then(|| kafka_headers(&output.headers))),
            partition: None,
        }
    }
}

fn kafka_headers(list: &OutputHeaders) -> OwnedHeaders {
    list.iter().fold(OwnedHeaders::new_with_capacity(list.len()), |headers, (name, value)| {
        headers.insert(Header { key: name, value: Some(value.as_bytes()) })
    })
}

/// What a refusal becomes.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Rerouted (a dead letter sent): nothing else to do.
    Rerouted,
    /// The record is lost for good: its partition must stop.
    Lost(TopicPartition),
    /// Exactly once: the open transaction must abort; `refused` is remembered for the record
    /// at (`tp`, `offset`), processed again then; `lost`: nothing can replace the record (a
    /// dead letter refused for another reason than its size, a changelog record): the
    /// partition stops there.
    Abort { tp: TopicPartition, offset: i64, refused: Refused, lost: bool },
    /// An output of an earlier assignment of its partition: nothing of the current one.
    Stale,
}

/// The producer's side of the service: sends, and settles delivery reports.
pub(super) struct Outbox {
    pub producer: Arc<Producer>,
    deliveries: Receiver<Delivery>,
    /// For a producer made anew ([`Outbox::recreate`]).
    sender: Sender<Delivery>,
    config: ClientConfig,
    pub tracker: OffsetTracker,
    /// Bytes held for the records in flight (see `Pending::bytes`).
    pub in_flight_bytes: usize,
    meters: DeliveryMeters,
    dead_letter_topic: String,
    /// How long a send may wait for room in the producer's queue.
    grace: Duration,
}

impl Outbox {
    /// The producer made from `config`, its reports handed to this outbox.
    pub fn new(config: ClientConfig, dead_letter_topic: &str, grace: Duration) -> Result<Outbox, KafkaError> {
        let (sender, deliveries) = std::sync::mpsc::channel();
        let producer: Arc<Producer> =
            Arc::new(config.create_with_context(OutboxContext { deliveries: sender.clone() })?);
        Ok(Outbox {
            producer,
            deliveries,
            sender,
            config,
            tracker: OffsetTracker::new(),
            in_flight_bytes: 0,
            meters: DeliveryMeters::new(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            grace,
        })
    }

    /// A new producer in place of the current one (fenced: its transactional id was taken
    /// over, or its transaction expired while the brokers were away; or broken: stuck in a
    /// call, or failed for good). What the old one had in flight is purged when it goes (when
    /// a call left running on it returns, if ever): its reports come back as failures of
    /// stale tickets.
    pub fn recreate(&mut self) -> Result<Arc<Producer>, KafkaError> {
        let producer: Arc<Producer> =
            Arc::new(self.config.create_with_context(OutboxContext { deliveries: self.sender.clone() })?);
        self.producer = producer.clone();
        self.in_flight_bytes = 0;
        Ok(producer)
    }

    /// Sends one record; a full local queue is waited out (backpressure) until the grace
    /// period is over. On error the pending comes back with the error.
    pub fn send(&mut self, raw: Raw<'_>, pending: Box<Pending>) -> Result<(), (KafkaError, Box<Pending>)> {
        let bytes = pending.bytes;
        let deadline = Instant::now() + self.grace;
        let mut record = BaseRecord::with_opaque_to(raw.topic, pending);
        if let Some(value) = raw.value {
            record = record.payload(value);
        }
        if let Some(headers) = raw.headers {
            record = record.headers(headers);
        }
        if let Some(key) = raw.key {
            record = record.key(key);
        }
        if let Some(partition) = raw.partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.in_flight_bytes += bytes;
                    return Ok(());
                }
                // On the service loop's own thread: waiting here is backpressure.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, back)) => return Err((error, back.delivery_opaque)),
            }
        }
    }

    /// Every delivery report received so far.
    pub fn ready(&self) -> Vec<Delivery> {
        self.deliveries.try_iter().collect()
    }

    /// Waits up to `timeout` for one delivery report.
    pub fn next(&self, timeout: Duration) -> Option<Delivery> {
        self.deliveries.recv_timeout(timeout).ok()
    }

    /// An acknowledged record: its ticket, its metrics; the refused outputs of its input when
    /// it was the input's last output settled and others were refused.
    pub fn acknowledged(&mut self, pending: &Pending) -> Option<(Arc<Input>, RefusedOutputs)> {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(pending.bytes);
        events::published(&self.meters, pending.kind, pending.consumed_at);
        for _ in 0..pending.acks {
            self.tracker.ack(pending.ticket);
        }
        match &pending.fallback {
            Fallback::Input { input, .. } => input.settle_acknowledged().map(|refused| (input.clone(), refused)),
            _ => None,
        }
    }

    /// At least once: a record refused for good is rerouted (or lost).
    pub fn reroute(&mut self, pending: Pending, error: KafkaError) -> Refusal {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(pending.bytes);
        let Pending { ticket, acks, tp, offset, index, bytes, fallback, consumed_at, .. } = pending;
        match fallback {
            Fallback::Input { input, role } => {
                events::output_refused(&input.source, role.name(), &error);
                match input.settle(Some((role, error.to_string()))) {
                    Some(refused) => {
                        let ticket = PendingTicket { ticket, tp, offset, index, bytes, consumed_at };
                        self.dead_letter_input(&input, refused, ticket)
                    }
                    // Other outputs of the input are still in flight: the last one settled
                    // sends the dead letter (this output's ack goes with it).
                    None => Refusal::Rerouted,
                }
            }
            Fallback::DeadLetter { dead, key, output } if is_size_error(&error) => {
                events::dead_letter_too_large(&dead.source, dead.rejection.code.as_str(), &error);
                let mut record =
                    dead.to_record_without_value(&self.dead_letter_topic, key.as_deref(), &error.to_string());
                if let Some(output) = output {
                    record.headers.push((crate::encode::dead_letter::headers::OUTPUT, output.into()));
                }
                let kind = Published::DeadLetter;
                let pending = Box::new(Pending {
                    ticket,
                    acks,
                    tp,
                    offset,
                    index,
                    bytes,
                    fallback: Fallback::Nothing,
                    kind,
                    consumed_at,
                });
                self.send_or_lose(Raw::output(&record, None), pending)
            }
            Fallback::DeadLetter { .. } | Fallback::Nothing => self.lose(ticket, tp, &error),
        }
    }

    /// Sends the one dead letter of `input`, whose outputs `refused` the brokers refused; it
    /// acknowledges the ticket once per refused output when delivered.
    pub fn dead_letter_input(&mut self, input: &Input, refused: RefusedOutputs, at: PendingTicket) -> Refusal {
        Meters::dead_letter(ErrorCode::ProduceFailed);
        let roles = plan::role_names(refused.iter().map(|(role, _)| *role));
        let detail = refused.first().map(|(_, error)| error.clone()).unwrap_or_default();
        let letter = DeadLetter {
            rejection: Rejection { detail, ..input.rejection.clone() },
            source: input.source.clone(),
            processed_at: crate::kafka::runtime::now_ms(),
        };
        let record = Record::new(input.key.as_deref(), &input.value, input.source.clone());
        let output = plan::dead_letter_naming(&letter, &self.dead_letter_topic, &record, &roles, false);
        let fallback = Fallback::DeadLetter {
            dead: Box::new(letter),
            key: input.key.as_deref().map(Box::from),
            output: Some(roles),
        };
        let PendingTicket { ticket, tp, offset, index, bytes, consumed_at } = at;
        let acks = refused.len() as u32;
        let kind = Published::DeadLetter;
        let pending = Box::new(Pending { ticket, acks, tp, offset, index, bytes, fallback, kind, consumed_at });
        self.send_or_lose(Raw::output(&output, None), pending)
    }

    fn send_or_lose(&mut self, raw: Raw<'_>, pending: Box<Pending>) -> Refusal {
        match self.send(raw, pending) {
            Ok(()) => Refusal::Rerouted,
            Err((error, pending)) => {
                let Pending { ticket, tp, .. } = *pending;
                self.lose(ticket, tp, &error)
            }
        }
    }

    fn lose(&mut self, ticket: Ticket, tp: TopicPartition, error: &KafkaError) -> Refusal {
        // An output of an earlier assignment of the partition (revoked since): nothing of the
        // current one is concerned, and the record is processed again by whoever owns it.
        if !self.tracker.fail(ticket) {
            events::stale_output_lost(&tp, error);
            return Refusal::Stale;
        }
        events::output_lost(&tp, error, &self.dead_letter_topic);
        Refusal::Lost(tp)
    }

    /// Exactly once: a failed record makes its transaction abort; what to do differently
    /// when its input record is processed again. Only a record the brokers refused for what
    /// it is ([`is_refusal_of_the_record`]) is left out then; any other failure is its
    /// transaction's (purged, timed out, a partition not known yet to a restarted broker):
    /// it is sent again as it was.
    pub fn refused_in_transaction(&mut self, pending: Pending, error: &KafkaError) -> Refusal {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(pending.bytes);
        if !is_refusal_of_the_record(error) {
            return Refusal::Abort { tp: pending.tp, offset: pending.offset, refused: Refused::default(), lost: false };
        }
        let Pending { tp, offset, index, fallback, .. } = pending;
        let detail = error.to_string();
        let (refused, lost) = match fallback {
            Fallback::Input { input, role } => {
                events::output_refused(&input.source, role.name(), error);
                let outputs = std::collections::BTreeSet::from([index]);
                (Refused { outputs, detail, dead_letter_too_large: false }, false)
            }
            Fallback::DeadLetter { dead, .. } if is_size_error(error) => {
                events::dead_letter_too_large(&dead.source, dead.rejection.code.as_str(), error);
                (Refused { outputs: Default::default(), detail, dead_letter_too_large: true }, false)
            }
            // A dead letter refused otherwise, or a changelog record: nothing to fall back to.
            Fallback::DeadLetter { .. } | Fallback::Nothing => {
                events::output_lost(&tp, error, &self.dead_letter_topic);
                (Refused::default(), true)
            }
        };
        Refusal::Abort { tp, offset, refused, lost }
    }
}

/// Where a dead letter standing for refused outputs is accounted.
#[derive(Debug)]
pub(super) struct PendingTicket {
    pub ticket: Ticket,
    pub tp: TopicPartition,
    pub offset: i64,
    pub index: usize,
    pub bytes: usize,
    pub consumed_at: Option<Instant>,
}

/// At least once: a record that failed not for what it is, but for its producer's state
/// (purged, or not acknowledged in time with the brokers away); not counted as refused.
pub(super) fn is_collateral(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::PurgeQueue
                | RDKafkaErrorCode::PurgeInflight
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::State
        )
    )
}

/// The brokers (or the client) refused the record itself: its size or content, the topic's
/// policy or permissions, a topic that does not exist. Sent again, it would be refused again.
/// Any other error of a record in a transaction is the transaction's (purged when it failed,
/// timed out with the brokers away, a partition a restarted broker does not know yet): the
/// record is sent again as it was once the transaction is aborted.
pub(super) fn is_refusal_of_the_record(error: &KafkaError) -> bool {
    is_size_error(error)
        || matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::UnsupportedForMessageFormat
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::BadMessage
                    | RDKafkaErrorCode::InvalidTimestamp
                    | RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::PolicyViolation
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownPartition
            )
        )
}

/// The brokers refused a record for its size: a smaller one may still pass.
pub(super) fn is_size_error(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_error(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn only_what_the_record_is_makes_it_refused_in_a_transaction() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::PolicyViolation,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopic,
        ] {
            assert!(is_refusal_of_the_record(&produce_error(code)), "{code:?} refuses the record");
        }
        // Seen with the whole cluster restarting: a partition not known yet to the restarted
        // coordinator fails the transaction; its records are the transaction's, not refused.
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::InvalidTransactionalState,
            RDKafkaErrorCode::OperationNotAttempted,
            RDKafkaErrorCode::PurgeQueue,
            RDKafkaErrorCode::PurgeInflight,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert!(!is_refusal_of_the_record(&produce_error(code)), "{code:?} is the transaction's");
        }
    }
}
