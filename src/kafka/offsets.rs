//! At-least-once offset tracking: when may an input offset be committed?
//!
//! # The rule
//!
//! The runtime consumes an input record, runs the pure core on it, and produces `0..n` output
//! records (events, dead letters, alerts, re-keyed records); its state changes are written later,
//! with others (see below). An input offset may be committed only when **every** output derived
//! from that record **and from every earlier record of the same partition**, state changes
//! included, has been acknowledged by the broker. Committing earlier risks loss: if
//! the process dies after the commit but before an output is durable, the consumer group resumes
//! after the input and that output is never produced.
//!
//! Delivery acknowledgements arrive **out of order** (several partitions and brokers, retries,
//! batching). The rust-rdkafka `examples/at_least_once.rs` example warns that committing "only once
//! the message has been fully processed" works only when messages complete in order: if offset
//! `i+n` completes and is committed before offset `i`, then after a failure the records in
//! `[i, i+n)` may be lost. **Out-of-order completion must never commit past a record that is not
//! fully acknowledged.** [`OffsetTracker`] enforces exactly that: per partition it keeps the
//! in-flight input records in offset order and only ever reports the position just after the
//! longest fully-completed prefix.
//!
//! A committed position follows Kafka semantics: it is the offset of the *next* record to consume,
//! i.e. the last fully-completed contiguous record's offset + 1. Every tracked record with an
//! offset below the position is complete.
//!
//! # Usage
//!
//! ```
//! use acs_stream::kafka::offsets::{OffsetTracker, TopicPartition};
//!
//! let tp = TopicPartition::new("acs-logs", 0);
//! let mut tracker = OffsetTracker::new();
//! let a = tracker.begin(&tp, 10, 2); // two outputs (e.g. event + alert)
//! let b = tracker.begin(&tp, 11, 1);
//! assert_eq!(tracker.processed(&tp), Some(12), "past every record begun");
//! tracker.ack(b); // out of order: offset 11 is done, 10 is not
//! assert_eq!(tracker.position(&tp), None, "nothing completed in order yet");
//! tracker.ack(a);
//! assert_eq!(tracker.position(&tp), None, "one output of offset 10 still unacknowledged");
//! tracker.ack(a); // both outputs of offset 10 acknowledged: 10 and 11 are complete
//! assert_eq!(tracker.position(&tp), Some(12));
//! assert_eq!(tracker.in_flight(), 0);
//! ```
//!
//! [`position`](OffsetTracker::position) is the position to commit now (at least once);
//! [`processed`](OffsetTracker::processed) is the position past every record begun, for a
//! transaction that carries all their outputs (exactly once). Neither changes when read: the
//! caller reads them when it commits, and committing an unchanged position again is harmless.
//!
//! # State written later: holds and flushes
//!
//! A stateful processor does not write its state changes with every record: it writes the
//! latest state of each changed entry now and then (a *flush*, as Kafka Streams flushes its
//! store caches on commit). A record whose state change is not durable yet must not be
//! committed past either, or a crash would lose the change (the record would not be processed
//! again). [`begin_held`](OffsetTracker::begin_held) registers such a record; [`flush`](OffsetTracker::flush)
//! starts the write of everything held so far and returns the ticket its records are
//! acknowledged with. Positions never pass the first held record whose flush is not fully
//! acknowledged:
//!
//! ```
//! use acs_stream::kafka::offsets::{OffsetTracker, TopicPartition};
//!
//! let tp = TopicPartition::new("acs-logs", 0);
//! let mut tracker = OffsetTracker::new();
//! let a = tracker.begin_held(&tp, 10, 1); // record 10 changed the state
//! tracker.ack(a);
//! assert_eq!(tracker.position(&tp), Some(10), "outputs acknowledged, state not durable yet");
//! let flush = tracker.flush(&tp, 2).expect("something to write"); // two changelog records
//! tracker.ack(flush);
//! assert_eq!(tracker.position(&tp), Some(10));
//! tracker.ack(flush);
//! assert_eq!(tracker.position(&tp), Some(11));
//! ```
//!
//! # Failures, rebalances, stale tickets
//!
//! - A failed output that was rerouted (dead letter acknowledged) is just an [`ack`](OffsetTracker::ack).
//!   [`fail`](OffsetTracker::fail) is for an output that is lost for good: the partition is
//!   *poisoned* and never commits past that record until [`reset_partition`](OffsetTracker::reset_partition)
//!   (neither [`position`](OffsetTracker::position) nor [`processed`](OffsetTracker::processed)
//!   passes it).
//! - On revocation, [`revoke`](OffsetTracker::revoke) returns the final positions to commit and
//!   forgets the partitions. Each partition assignment has its own epoch, carried in every
//!   [`Ticket`], so acknowledgements that arrive later for a forgotten (or re-assigned) partition
//!   are ignored safely.
//!
//! # Cost
//!
//! `begin` is one hash lookup (skipped when the partition is the same as the previous `begin`'s)
//! plus a `VecDeque` push; `ack`/`fail` index the partition slot and the queue directly (no
//! hashing); completed records are popped from the queue front as soon as they are contiguous, so
//! every operation is O(1) amortized and memory is bounded by the in-flight window (from the oldest
//! incomplete record to the newest), never by history.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

/// A Kafka topic partition: the unit of ordering and of offset commits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name (shared: clone is a reference-count increment).
    pub topic: Arc<str>,
    /// Partition number within the topic.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic partition from a topic name and a partition number.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// Identifies one input record registered with [`OffsetTracker::begin`], for the later
/// [`ack`](OffsetTracker::ack)/[`fail`](OffsetTracker::fail) of its outputs.
///
/// Small and `Copy`, to travel as a delivery opaque. It carries the epoch of the partition
/// assignment it belongs to: once the partition is revoked, reset, or rewound, the ticket is stale
/// and reports made with it are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Index of the partition state in the tracker's slot table.
    slot: u32,
    /// Tracker-wide unique number of the partition assignment (never reused).
    epoch: u64,
    /// Per-assignment sequence number of the record (0, 1, 2, ... in `begin` order), or of
    /// the flush.
    seq: u64,
    /// A flush's ticket ([`OffsetTracker::flush`]), not a record's.
    flush: bool,
}

/// One input record in flight.
#[derive(Debug)]
struct Record {
    offset: i64,
    /// Outputs not yet reported.
    remaining: u32,
    /// An output failed without reroute: the record never completes.
    failed: bool,
}

impl Record {
    fn is_complete(&self) -> bool {
        self.remaining == 0 && !self.failed
    }
}

/// State changes being written ([`OffsetTracker::flush`]).
#[derive(Debug)]
struct Flush {
    /// The first record held when the flush started, if any: no position passes it until the
    /// flush is fully acknowledged.
    from: Option<i64>,
    /// Records of the flush not yet reported.
    remaining: u32,
    /// A record of the flush failed without reroute: it never completes.
    failed: bool,
}

/// Bookkeeping of one assigned partition.
#[derive(Debug)]
struct Partition {
    tp: TopicPartition,
    epoch: u64,
    /// The epoch the partition had when assigned: kept over rewinds, which leave the state
    /// changes being written alone (flush tickets carry it).
    assignment: u64,
    /// Records from the oldest incomplete one to the newest, in offset order. The front is never
    /// complete (completed front records are popped at once).
    records: VecDeque<Record>,
    /// Sequence number of `records[0]`.
    base_seq: u64,
    /// Offset of the last `begin`, to detect rewinds.
    last_begun: Option<i64>,
    /// Number of records in `records` that are not complete.
    incomplete: usize,
    /// Last popped (completed) record's offset + 1.
    position: Option<i64>,
    /// Poison: never report a position above this.
    cap: Option<i64>,
    /// The lowest record held ([`OffsetTracker::begin_held`]) since the last flush started.
    held: Option<i64>,
    /// Flushes not fully acknowledged, oldest first.
    flushes: VecDeque<Flush>,
    /// Sequence number of `flushes[0]`.
    base_flush: u64,
}

impl Partition {
    fn new(tp: TopicPartition, epoch: u64) -> Self {
        Self {
            tp,
            epoch,
            assignment: epoch,
            records: VecDeque::new(),
            base_seq: 0,
            last_begun: None,
            incomplete: 0,
            position: None,
            cap: None,
            held: None,
            flushes: VecDeque::new(),
            base_flush: 0,
        }
    }

    /// The position to commit now, poison and state changes not yet durable applied.
    fn effective(&self) -> Option<i64> {
        let mut position = self.position?;
        if let Some(cap) = self.cap {
            position = position.min(cap);
        }
        // The lowest record held by a flush not fully written, or by the next one (a rewind
        // may begin lower records after a flush started).
        let writing = self.flushes.iter().filter(|flush| flush.remaining > 0 || flush.failed);
        if let Some(held) = writing.filter_map(|flush| flush.from).chain(self.held).min() {
            position = position.min(held);
        }
        Some(position)
    }

    /// Forgets the fully acknowledged flushes at the front.
    fn pop_flushes(&mut self) {
        while self.flushes.front().is_some_and(|front| front.remaining == 0 && !front.failed) {
            self.flushes.pop_front();
            self.base_flush += 1;
        }
    }

    /// Index in `records` of the ticket's record, if still tracked.
    fn index(&self, seq: u64) -> Option<usize> {
        let idx = usize::try_from(seq.checked_sub(self.base_seq)?).ok()?;
        (idx < self.records.len()).then_some(idx)
    }

    /// Pops the completed prefix, moving the position past it.
    fn advance(&mut self) {
        while let Some(front) = self.records.front() {
            if !front.is_complete() {
                break;
            }
            self.position = Some(front.offset.saturating_add(1));
            self.records.pop_front();
            self.base_seq += 1;
        }
    }

    /// Lowers the poison cap to `at`.
    fn poison(&mut self, at: i64) {
        self.cap = Some(self.cap.map_or(at, |c| c.min(at)));
    }
}

/// Tracks, per topic partition, the input records whose outputs are in flight, and computes the
/// offsets that are safe to commit under at-least-once delivery (see the [module docs](self)).
///
/// Pure and synchronous: the runtime calls [`begin`](Self::begin) when it hands an input record's
/// outputs to the producer, [`ack`](Self::ack) from delivery reports, and, when it commits, reads
/// each partition's [`position`](Self::position) (or [`processed`](Self::processed)).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Partition states; `None` slots are free (listed in `free`).
    slots: Vec<Option<Partition>>,
    free: Vec<u32>,
    index: HashMap<TopicPartition, u32>,
    /// Next assignment epoch (tracker-wide, never reused).
    next_epoch: u64,
    /// Records not complete, all partitions.
    in_flight: usize,
    /// `(slot, epoch)` of the previous `begin`, to skip the hash lookup on runs of one partition.
    last: Option<(u32, u64)>,
}

impl OffsetTracker {
    /// An empty tracker (no partitions).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the input record at `offset` of `tp`, whose processing produced `outputs` output
    /// records still to be acknowledged; returns its ticket for [`ack`](Self::ack)/[`fail`](Self::fail).
    ///
    /// A record with `outputs == 0` is complete at once. Offsets of one partition must arrive in
    /// increasing order; gaps are fine (Kafka offsets skip over transaction markers and compacted
    /// records). An offset that is not above the partition's previous one is taken as a seek
    /// backwards: the partition is reset (as by [`reset_partition`](Self::reset_partition), poison
    /// included) before the record is registered, so outstanding tickets become stale and
    /// positions restart from the re-consumed records. This is safe for at-least-once because
    /// every record from `offset` on will be begun again. Flushes
    /// (state changes being written, see [`flush`](Self::flush)) and held records survive a
    /// rewind: the state was not rewound, so they still hold positions back.
    pub fn begin(&mut self, tp: &TopicPartition, offset: i64, outputs: usize) -> Ticket {
        self.begin_with(tp, offset, outputs, false)
    }

    /// [`begin`](Self::begin) for a record that changed the partition's state, a change not
    /// durable yet: no position passes the record until a [`flush`](Self::flush) started
    /// after this call is fully acknowledged.
    pub fn begin_held(&mut self, tp: &TopicPartition, offset: i64, outputs: usize) -> Ticket {
        self.begin_with(tp, offset, outputs, true)
    }

    fn begin_with(&mut self, tp: &TopicPartition, offset: i64, outputs: usize, hold: bool) -> Ticket {
        let slot = self.slot_for(tp);
        let Self { slots, next_epoch, in_flight, last, .. } = self;
        let p = slots[slot as usize].as_mut().expect("slot_for returns a live slot");
        if p.last_begun.is_some_and(|prev| offset <= prev) {
            // The records are begun again (their tickets go stale), but the state was not
            // rewound: its changes being written, or held for the next flush, still hold
            // positions back, and a lost one still stops the partition.
            let mut fresh = Partition::new(p.tp.clone(), *next_epoch);
            fresh.assignment = p.assignment;
            fresh.flushes = std::mem::take(&mut p.flushes);
            fresh.base_flush = p.base_flush;
            fresh.held = p.held;
            fresh.incomplete = fresh.flushes.iter().filter(|flush| flush.remaining > 0 || flush.failed).count();
            fresh.cap = fresh.flushes.iter().filter(|flush| flush.failed).filter_map(|flush| flush.from).min();
            *in_flight -= p.incomplete - fresh.incomplete;
            *p = fresh;
            *next_epoch += 1;
        }
        *last = Some((slot, p.epoch));
        let seq = p.base_seq + p.records.len() as u64;
        // More than u32::MAX outputs cannot happen; clamping errs on the safe side (never completes).
        let remaining = u32::try_from(outputs).unwrap_or(u32::MAX);
        p.records.push_back(Record { offset, remaining, failed: false });
        p.last_begun = Some(offset);
        if hold {
            p.held = Some(p.held.map_or(offset, |held| held.min(offset)));
        }
        if remaining > 0 {
            p.incomplete += 1;
            *in_flight += 1;
        } else if p.records.len() == 1 {
            p.advance();
        }
        Ticket { slot, epoch: p.epoch, seq, flush: false }
    }

    /// One output of the ticket's record was acknowledged by the broker (or, after a failure, its
    /// dead-letter reroute was). When all outputs of the record and of every earlier record of the
    /// partition are acknowledged, the partition's [`position`](Self::position) advances.
    ///
    /// Stale tickets (partition revoked, reset or rewound since `begin`) and acknowledgements beyond
    /// the record's declared outputs are ignored.
    pub fn ack(&mut self, ticket: Ticket) {
        let Self { slots, in_flight, .. } = self;
        let Some(p) = live(slots, ticket) else { return };
        if ticket.flush {
            let Some(flush) = flush_of(p, ticket.seq).filter(|flush| flush.remaining > 0) else { return };
            flush.remaining -= 1;
            if flush.remaining == 0 && !flush.failed {
                p.incomplete -= 1;
                *in_flight -= 1;
                p.pop_flushes();
            }
            return;
        }
        let Some(idx) = p.index(ticket.seq) else { return };
        let rec = &mut p.records[idx];
        if rec.remaining == 0 {
            return;
        }
        rec.remaining -= 1;
        if rec.is_complete() {
            p.incomplete -= 1;
            *in_flight -= 1;
            if idx == 0 {
                p.advance();
            }
        }
    }

    /// One output of the ticket's record failed permanently and was not rerouted: the partition is
    /// poisoned and will never commit past this record (records before it may still complete and
    /// commit) until [`reset_partition`](Self::reset_partition) (or a revoke or rewind). The record
    /// stays in flight for good. Returns true when the partition is poisoned: records begun after
    /// this one can never be committed, so the runtime should stop consuming it (pause, or seek
    /// back to the record and [`reset_partition`](Self::reset_partition)).
    ///
    /// A stale ticket (forgotten partition) is ignored: returns false then (the partition's
    /// current assignment is not concerned). A ticket whose record was already completed and
    /// passed (more reports than outputs, a caller bug) freezes the partition at its current
    /// position, to stay on the safe side.
    ///
    /// A record of a [`flush`](Self::flush): the partition never commits past the first record
    /// the flush held. A flush that held none (tombstones of expired entries only) loses no
    /// state: its record counts as written, and false is returned (nothing to stop).
    pub fn fail(&mut self, ticket: Ticket) -> bool {
        let Self { slots, in_flight, .. } = self;
        let Some(p) = live(slots, ticket) else { return false };
        if ticket.flush {
            let Some(flush) = flush_of(p, ticket.seq).filter(|flush| flush.remaining > 0) else {
                // More reports than records (a caller bug): frozen where it is, to be safe.
                if let Some(position) = p.effective() {
                    p.poison(position);
                }
                return true;
            };
            flush.remaining -= 1;
            let Some(from) = flush.from else {
                // Tombstones of expired entries only: losing one loses no state (the entry
                // expires again when restored). Counted as written; nothing is stopped.
                if flush.remaining == 0 && !flush.failed {
                    p.incomplete -= 1;
                    *in_flight -= 1;
                    p.pop_flushes();
                }
                return false;
            };
            // A lost state change: never past the first record it held.
            flush.failed = true;
            p.poison(from);
            return true;
        }
        match p.index(ticket.seq) {
            Some(idx) => {
                let rec = &mut p.records[idx];
                if rec.is_complete() {
                    // Complete but waiting behind an earlier record: back in flight.
                    p.incomplete += 1;
                    *in_flight += 1;
                }
                rec.remaining = rec.remaining.saturating_sub(1);
                rec.failed = true;
                let offset = rec.offset;
                p.poison(offset);
            }
            None => {
                if ticket.seq < p.base_seq {
                    // Already passed: the position is set since a record was popped.
                    if let Some(pos) = p.position {
                        p.poison(pos);
                    }
                }
            }
        }
        true
    }

    /// The offset to commit for `tp` now (at least once): the last fully-completed contiguous
    /// record's offset + 1, so every tracked record below it is complete, never past a record
    /// whose state change is not durable yet nor past a poisoned record. `None` when no record
    /// completed since the partition was (re)assigned or rewound, or the partition is unknown.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.partition(tp)?.effective()
    }

    /// The position past the longest prefix of `tp`'s records whose outputs are all
    /// acknowledged, their state changes durable or not: everything below it is published
    /// (what was kept to publish it again on a replay can go), not necessarily committable.
    pub fn acknowledged(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.partition(tp)?;
        let position = p.position?;
        Some(p.cap.map_or(position, |cap| cap.min(position)))
    }

    /// Whether `ticket` belongs to the current assignment of its partition (not to one revoked,
    /// reset or rewound since).
    pub fn current(&self, ticket: Ticket) -> bool {
        let Some(Some(p)) = self.slots.get(ticket.slot as usize) else { return false };
        if ticket.flush { p.assignment == ticket.epoch } else { p.epoch == ticket.epoch }
    }

    /// The position just past the last record begun on `tp` since it was (re)assigned, never
    /// past a record poisoned by a [`fail`](Self::fail): what a transaction commits, since every
    /// output of those records is in it (exactly-once). `None` when no record was begun.
    pub fn processed(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.partition(tp)?;
        let next = p.last_begun? + 1;
        Some(p.cap.map_or(next, |cap| cap.min(next)))
    }

    /// Input records not complete yet (outputs unacknowledged, or failed), all partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Input records of `tp` not complete yet (0 for an unknown partition).
    pub fn in_flight_partition(&self, tp: &TopicPartition) -> usize {
        self.partition(tp).map_or(0, |p| p.incomplete)
    }

    /// Starts the write of the state changes of `tp` held so far, in `outputs` records:
    /// returns the ticket to [`ack`](Self::ack) (or [`fail`](Self::fail)) each of them with,
    /// or `None` when there is nothing to wait for (no record; held records, if any, are
    /// released: their changes needed no write). The flush counts as one record in flight
    /// ([`in_flight`](Self::in_flight)) until its records are acknowledged. Without a held record
    /// since the last flush, the flush holds no position back (e.g. tombstones of expired
    /// entries).
    pub fn flush(&mut self, tp: &TopicPartition, outputs: usize) -> Option<Ticket> {
        // A partition with no record yet (tombstones of restored entries) is tracked from now.
        let slot = if outputs == 0 { *self.index.get(tp)? } else { self.slot_for(tp) };
        let Self { slots, in_flight, .. } = self;
        let p = slots[slot as usize].as_mut()?;
        let from = p.held.take();
        if outputs == 0 {
            return None;
        }
        let seq = p.base_flush + p.flushes.len() as u64;
        let remaining = u32::try_from(outputs).unwrap_or(u32::MAX);
        p.flushes.push_back(Flush { from, remaining, failed: false });
        p.incomplete += 1;
        *in_flight += 1;
        Some(Ticket { slot, epoch: p.assignment, seq, flush: true })
    }

    /// Forgets the partitions (on revocation) and returns, for each that has one, its final commit
    /// position (the value [`position`](Self::position) gives: committing it again if it was
    /// committed already is harmless), for a synchronous commit before the partitions go.
    /// Unknown partitions and partitions with no completed record are omitted.
    /// Later reports with tickets of these partitions are ignored.
    pub fn revoke(&mut self, tps: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::with_capacity(tps.len());
        for tp in tps {
            if let Some(p) = self.forget(tp) {
                if let Some(pos) = p.effective() {
                    out.push((p.tp, pos));
                }
            }
        }
        out
    }

    /// Forgets `tp` entirely (e.g. after re-assignment, or to clear poison after seeking back):
    /// its in-flight records, position and poison. Later reports with its old tickets are ignored.
    pub fn reset_partition(&mut self, tp: &TopicPartition) {
        self.forget(tp);
    }

    fn partition(&self, tp: &TopicPartition) -> Option<&Partition> {
        let slot = *self.index.get(tp)?;
        self.slots[slot as usize].as_ref()
    }

    /// The slot of `tp`, created on first sight.
    fn slot_for(&mut self, tp: &TopicPartition) -> u32 {
        if let Some((slot, epoch)) = self.last {
            if let Some(p) = &self.slots[slot as usize] {
                if p.epoch == epoch && p.tp == *tp {
                    return slot;
                }
            }
        }
        if let Some(&slot) = self.index.get(tp) {
            return slot;
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 partitions");
                self.slots.push(None);
                slot
            }
        };
        self.slots[slot as usize] = Some(Partition::new(tp.clone(), epoch));
        self.index.insert(tp.clone(), slot);
        slot
    }

    fn forget(&mut self, tp: &TopicPartition) -> Option<Partition> {
        let slot = self.index.remove(tp)?;
        let p = self.slots[slot as usize].take()?;
        self.free.push(slot);
        self.in_flight -= p.incomplete;
        Some(p)
    }
}

/// The flush a flush ticket refers to, if still tracked.
fn flush_of(p: &mut Partition, seq: u64) -> Option<&mut Flush> {
    let idx = usize::try_from(seq.checked_sub(p.base_flush)?).ok()?;
    p.flushes.get_mut(idx)
}

/// The live partition state a ticket refers to, if its assignment still exists (for a
/// record's ticket: and was not rewound since).
fn live(slots: &mut [Option<Partition>], ticket: Ticket) -> Option<&mut Partition> {
    let epoch = |p: &Partition| if ticket.flush { p.assignment } else { p.epoch };
    slots.get_mut(ticket.slot as usize)?.as_mut().filter(|p| epoch(p) == ticket.epoch)
}

/// The lag of a partition: records between the consumer's position and the high watermark,
/// never negative. `position` (the next offset handed to the service) and `committed` (the
/// group's offset) are librdkafka's, negative when unknown (`-1001` right after an
/// assignment, the cause of the negative lags of vector#21649): the position is taken when
/// known, else the committed offset; with neither, or no high watermark yet, there is no lag
/// to report (`None`) rather than a wrong one. A position past a high watermark not refreshed
/// yet is lag 0.
pub fn consumer_lag(high_watermark: i64, position: i64, committed: i64) -> Option<i64> {
    let position = [position, committed].into_iter().find(|offset| *offset >= 0)?;
    (high_watermark >= 0).then(|| (high_watermark - position).max(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lag_is_never_negative_nor_guessed() {
        use super::consumer_lag;
        assert_eq!(consumer_lag(100, 40, 30), Some(60), "from the position");
        assert_eq!(consumer_lag(100, -1001, 30), Some(70), "right after an assignment: the committed offset");
        assert_eq!(consumer_lag(100, -1001, -1001), None, "nothing known: nothing reported");
        assert_eq!(consumer_lag(-1, 40, 30), None, "no high watermark yet");
        assert_eq!(consumer_lag(100, 120, 30), Some(0), "a stale high watermark");
        assert_eq!(consumer_lag(0, -1001, 0), Some(0), "an empty partition");
    }

    use super::*;
    use proptest::prelude::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("in", partition)
    }

    /// One step of a table-driven scenario; tickets are named by labels.
    #[derive(Debug, Clone)]
    enum Step {
        /// `begin(tp(p), offset, outputs)`, ticket stored under the label.
        Begin(&'static str, i32, i64, usize),
        Ack(&'static str),
        Fail(&'static str),
        /// `position(tp(p))`.
        Position(i32, Option<i64>),
        /// `processed(tp(p))`: past the last record begun, never past a poisoned one.
        Processed(i32, Option<i64>),
        /// `in_flight()` and `in_flight_partition(tp(p))` for the listed partitions.
        InFlight(usize, Vec<(i32, usize)>),
        /// `revoke(partitions)` and its expected result.
        Revoke(Vec<i32>, Vec<(i32, i64)>),
        Reset(i32),
    }
    use Step::*;

    fn cases() -> Vec<(&'static str, Vec<Step>)> {
        vec![
            (
                "in-order acks commit each record",
                vec![
                    Begin("a", 0, 0, 1),
                    Begin("b", 0, 1, 1),
                    Position(0, None),
                    Processed(0, Some(2)),
                    Ack("a"),
                    Position(0, Some(1)),
                    Ack("b"),
                    Position(0, Some(2)),
                    InFlight(0, vec![(0, 0)]),
                ],
            ),
            (
                "out-of-order acks never commit past the unacknowledged record",
                vec![
                    Begin("a", 0, 0, 1),
                    Begin("b", 0, 1, 1),
                    Begin("c", 0, 2, 1),
                    Ack("c"),
                    Ack("b"),
                    Position(0, None),
                    InFlight(1, vec![(0, 1)]),
                    Ack("a"),
                    Position(0, Some(3)),
                ],
            ),
            (
                "middle record holds the position",
                vec![
                    Begin("a", 0, 0, 1),
                    Begin("b", 0, 1, 1),
                    Begin("c", 0, 2, 1),
                    Ack("a"),
                    Ack("c"),
                    Position(0, Some(1)),
                    InFlight(1, vec![(0, 1)]),
                    Ack("b"),
                    Position(0, Some(3)),
                ],
            ),
            (
                "a record completes only when all its outputs are acked",
                vec![
                    Begin("a", 0, 7, 3),
                    Ack("a"),
                    Ack("a"),
                    Position(0, None),
                    InFlight(1, vec![(0, 1)]),
                    Ack("a"),
                    Position(0, Some(8)),
                    InFlight(0, vec![(0, 0)]),
                ],
            ),
            (
                "zero-output records complete at once",
                vec![
                    Begin("a", 0, 0, 0),
                    Position(0, Some(1)),
                    InFlight(0, vec![(0, 0)]),
                    Begin("b", 0, 1, 0),
                    Position(0, Some(2)),
                ],
            ),
            (
                "zero-output record behind a pending one waits for it",
                vec![
                    Begin("a", 0, 0, 1),
                    Begin("b", 0, 1, 0),
                    Begin("c", 0, 2, 0),
                    Position(0, None),
                    InFlight(1, vec![(0, 1)]),
                    Ack("a"),
                    Position(0, Some(3)),
                ],
            ),
            (
                "gaps in offsets: position is last completed offset + 1",
                vec![
                    Begin("a", 0, 5, 1),
                    Begin("b", 0, 9, 1),
                    Begin("c", 0, 20, 1),
                    Ack("b"),
                    Position(0, None),
                    Ack("a"),
                    Position(0, Some(10)),
                    Ack("c"),
                    Position(0, Some(21)),
                ],
            ),
            (
                "fail poisons the partition: earlier records commit, never past the failed one",
                vec![
                    Begin("a", 0, 0, 1),
                    Begin("b", 0, 1, 2),
                    Begin("c", 0, 2, 1),
                    Fail("b"),
                    Processed(0, Some(1)),
                    Ack("c"),
                    Ack("b"),
                    Position(0, None),
                    Ack("a"),
                    Position(0, Some(1)),
                    Begin("d", 0, 3, 0),
                    Begin("e", 0, 4, 1),
                    Ack("e"),
                    Position(0, Some(1)),
                    Processed(0, Some(1)),
                    InFlight(1, vec![(0, 1)]),
                ],
            ),
            (
                "reset clears poison",
                vec![
                    Begin("a", 0, 0, 1),
                    Fail("a"),
                    Processed(0, Some(0)),
                    InFlight(1, vec![(0, 1)]),
                    Reset(0),
                    Processed(0, None),
                    InFlight(0, vec![(0, 0)]),
                    Begin("b", 0, 0, 1),
                    Processed(0, Some(1)),
                    Ack("a"), // stale: old assignment, must not complete "b"
                    Position(0, None),
                    InFlight(1, vec![(0, 1)]),
                    Ack("b"),
                    Position(0, Some(1)),
                ],
            ),
            (
                "fail on a record completed but not yet passed puts it back in flight",
                vec![
                    Begin("a", 0, 0, 1),
                    Begin("b", 0, 1, 1),
                    Ack("b"),
                    InFlight(1, vec![]),
                    Fail("b"),
                    InFlight(2, vec![(0, 2)]),
                    Ack("a"),
                    Position(0, Some(1)),
                    Processed(0, Some(1)),
                ],
            ),
            (
                "fail after the record was committed freezes the partition",
                vec![
                    Begin("a", 0, 0, 1),
                    Ack("a"),
                    Position(0, Some(1)),
                    Fail("a"),
                    Processed(0, Some(1)),
                    Begin("b", 0, 1, 1),
                    Ack("b"),
                    InFlight(0, vec![(0, 0)]),
                    Position(0, Some(1)),
                    Processed(0, Some(1)),
                ],
            ),
            (
                "revoke returns final positions; late acks are ignored",
                vec![
                    Begin("a", 0, 0, 1),
                    Begin("b", 0, 1, 1),
                    Begin("x", 1, 0, 1),
                    Ack("a"),
                    Position(0, Some(1)),
                    Revoke(vec![0, 1, 9], vec![(0, 1)]),
                    InFlight(0, vec![(0, 0), (1, 0)]),
                    Ack("b"),
                    Ack("x"),
                    Fail("b"),
                    Position(0, None),
                    Position(1, None),
                    // Re-assigned: a fresh epoch, old tickets cannot complete new records (nor
                    // poison them), even those of a partition whose slot it reuses.
                    Begin("b2", 0, 1, 1),
                    Ack("b"),
                    Ack("x"),
                    Fail("b"),
                    Position(0, None),
                    Processed(0, Some(2)),
                    InFlight(1, vec![(0, 1)]),
                    Ack("b2"),
                    Position(0, Some(2)),
                ],
            ),
            (
                "revoke before any completion returns nothing",
                vec![
                    Begin("a", 0, 0, 1),
                    Revoke(vec![0], vec![]),
                    Ack("a"),
                    InFlight(0, vec![(0, 0)]),
                    Position(0, None),
                ],
            ),
            (
                "multiple partitions are independent",
                vec![
                    Begin("a0", 0, 0, 1),
                    Begin("a1", 1, 100, 1),
                    Begin("b0", 0, 1, 1),
                    Begin("b1", 1, 101, 1),
                    Ack("b1"),
                    Ack("a0"),
                    Position(0, Some(1)),
                    Position(1, None),
                    Fail("b0"),
                    Ack("a1"),
                    Position(0, Some(1)),
                    Position(1, Some(102)),
                    Processed(0, Some(1)),
                    Processed(1, Some(102)),
                    InFlight(1, vec![(0, 1), (1, 0)]),
                ],
            ),
            (
                "a partition's position moves with its own records only",
                vec![
                    Position(0, None),
                    Begin("a", 0, 0, 1),
                    Begin("b", 1, 0, 1),
                    Begin("c", 0, 1, 1),
                    Position(0, None),
                    Position(1, None),
                    Ack("a"),
                    Position(0, Some(1)),
                    Position(1, None),
                    Ack("b"),
                    Position(0, Some(1)),
                    Position(1, Some(1)),
                    Ack("c"),
                    Position(0, Some(2)),
                    Position(1, Some(1)),
                ],
            ),
            (
                "excess acks are ignored and never complete another record",
                vec![
                    Begin("a", 0, 0, 1),
                    Begin("b", 0, 1, 1),
                    Ack("b"),
                    Ack("b"),
                    Position(0, None),
                    InFlight(1, vec![(0, 1)]),
                    Ack("a"),
                    Ack("a"),
                    Position(0, Some(2)),
                    InFlight(0, vec![(0, 0)]),
                    Begin("c", 0, 2, 1),
                    Ack("a"), // its record is passed: must not complete "c"
                    Ack("b"),
                    Position(0, Some(2)),
                    InFlight(1, vec![(0, 1)]),
                ],
            ),
            (
                "a non-increasing offset is a rewind: partition reset",
                vec![
                    Begin("a", 0, 10, 1),
                    Ack("a"),
                    Begin("b", 0, 11, 1),
                    Position(0, Some(11)),
                    Processed(0, Some(12)),
                    Begin("a2", 0, 5, 1),
                    Processed(0, Some(6)),
                    InFlight(1, vec![(0, 1)]),
                    Position(0, None),
                    Ack("b"), // stale
                    Position(0, None),
                    InFlight(1, vec![(0, 1)]),
                    Ack("a2"),
                    Position(0, Some(6)),
                ],
            ),
            (
                "unknown partitions answer empty",
                vec![
                    Position(3, None),
                    Processed(3, None),
                    InFlight(0, vec![(3, 0)]),
                    Revoke(vec![3], vec![]),
                    Reset(3),
                ],
            ),
        ]
    }

    #[test]
    fn table_driven_scenarios() {
        for (name, steps) in cases() {
            let mut t = OffsetTracker::new();
            let mut tickets: HashMap<&str, Ticket> = HashMap::new();
            for (i, step) in steps.into_iter().enumerate() {
                let at = format!("case {name:?}, step {i} {step:?}");
                match step {
                    Begin(label, p, offset, outputs) => {
                        tickets.insert(label, t.begin(&tp(p), offset, outputs));
                    }
                    Ack(label) => t.ack(tickets[label]),
                    Fail(label) => {
                        t.fail(tickets[label]);
                    }
                    Position(p, want) => assert_eq!(t.position(&tp(p)), want, "{at}"),
                    Processed(p, want) => assert_eq!(t.processed(&tp(p)), want, "{at}"),
                    InFlight(total, per) => {
                        assert_eq!(t.in_flight(), total, "{at}");
                        for (p, n) in per {
                            assert_eq!(t.in_flight_partition(&tp(p)), n, "{at}: partition {p}");
                        }
                    }
                    Revoke(ps, want) => {
                        let tps: Vec<_> = ps.into_iter().map(tp).collect();
                        let got: Vec<(i32, i64)> =
                            t.revoke(&tps).into_iter().map(|(tp, o)| (tp.partition, o)).collect();
                        assert_eq!(got, want, "{at}");
                    }
                    Reset(p) => t.reset_partition(&tp(p)),
                }
            }
        }
    }

    #[test]
    fn memory_is_bounded_by_the_in_flight_window() {
        let mut t = OffsetTracker::new();
        let p = tp(0);
        for offset in 0..100_000 {
            let ticket = t.begin(&p, offset, 1);
            t.ack(ticket);
        }
        let slot = t.index[&p];
        let state = t.slots[slot as usize].as_ref().unwrap();
        assert!(state.records.is_empty());
        assert_eq!(t.position(&p), Some(100_000));
        for round in 0..100u32 {
            t.revoke(std::slice::from_ref(&p));
            t.begin(&p, i64::from(round), 1);
        }
        assert_eq!(t.slots.len(), 1, "freed slots are reused");
        assert_eq!(t.index.len(), 1);
    }

    #[test]
    fn a_failure_of_an_earlier_assignment_leaves_the_current_one_alone() {
        let mut t = OffsetTracker::new();
        let p = tp(0);
        let old = t.begin(&p, 10, 2);
        // Revoked and assigned again: the old ticket is stale.
        let _ = t.revoke(std::slice::from_ref(&p));
        let current = t.begin(&p, 10, 1);
        assert!(!t.fail(old), "stale: not applied");
        t.ack(current);
        assert_eq!(t.position(&p), Some(11), "the current assignment commits on");
        assert_eq!(t.processed(&p), Some(11), "not poisoned");
        let next = t.begin(&p, 11, 1);
        assert!(t.fail(next), "live: applied");
        assert_eq!(t.processed(&p), Some(11), "poisoned at the failed record");
        assert_eq!(t.position(&p), Some(11));
    }

    #[test]
    fn topic_names_distinguish_partitions() {
        let mut t = OffsetTracker::new();
        let a = TopicPartition::new("a", 0);
        let b = TopicPartition::new("b", 0);
        let ta = t.begin(&a, 0, 1);
        let tb = t.begin(&b, 0, 1);
        t.ack(tb);
        assert_eq!(t.position(&a), None);
        assert_eq!(t.position(&b), Some(1));
        t.ack(ta);
        assert_eq!(t.position(&a), Some(1));
        assert_eq!(a.to_string(), "a[0]");
    }

    #[test]
    fn state_changes_hold_positions_until_their_flush_is_acknowledged() {
        let a = tp(0);
        let mut t = OffsetTracker::new();
        let first = t.begin_held(&a, 10, 0);
        let _ = t.begin_held(&a, 11, 0);
        assert_eq!(t.position(&a), Some(10), "complete, not durable");
        let flush = t.flush(&a, 2).expect("two changelog records");
        let _ = t.begin_held(&a, 12, 0); // held by the next flush
        assert_eq!(t.in_flight_partition(&a), 1, "the flush is in flight");
        t.ack(flush);
        assert_eq!(t.position(&a), Some(10), "one changelog record unacknowledged");
        t.ack(flush);
        t.ack(flush); // one report too many: ignored
        assert_eq!(t.position(&a), Some(12));
        assert_eq!(t.in_flight(), 0);
        assert!(t.flush(&a, 0).is_none(), "nothing to write: record 12 is released");
        assert_eq!(t.position(&a), Some(13));
        t.ack(first); // a record's ticket with no output left: ignored
        assert_eq!((t.position(&a), t.in_flight()), (Some(13), 0));

        // Tombstones only (no record held): losing one stops nothing.
        let tombstones = t.flush(&a, 1).expect("one tombstone");
        assert!(!t.fail(tombstones), "no state lost");
        assert_eq!((t.position(&a), t.processed(&a), t.in_flight()), (Some(13), Some(13), 0));

        // A lost state change: never past the first record it held.
        let _ = t.begin_held(&a, 20, 0);
        let _ = t.begin_held(&a, 21, 0);
        let flush = t.flush(&a, 2).expect("two records");
        t.ack(flush);
        assert!(t.fail(flush));
        assert_eq!(t.processed(&a), Some(20), "poisoned at the first record held");
        assert_eq!(t.position(&a), Some(20));
        assert_eq!(t.in_flight_partition(&a), 1, "the failed flush never completes");

        // A flush of a partition with no record yet (its restored entries expired) is
        // tracked, and a revoke makes its ticket stale.
        let b = tp(1);
        let flush = t.flush(&b, 1).expect("tracked from now");
        assert_eq!(t.in_flight_partition(&b), 1);
        assert_eq!(t.revoke(std::slice::from_ref(&b)), vec![]);
        t.ack(flush);
        assert_eq!(t.in_flight(), 1, "only the failed flush of {a}");
        assert_eq!(t.position(&b), None);
    }

    /// A random operation of the property test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Begin the next record of partition `p` after an offset gap, with `outputs` outputs,
        /// held until flushed if `held`.
        Begin { p: usize, gap: i64, outputs: usize, held: bool },
        /// Flush partition `p`'s held records in `outputs` records.
        Flush { p: usize, outputs: usize },
        /// The next record of partition `p` comes `back` offsets before the last one (a seek
        /// backwards).
        Rewind { p: usize, back: i64 },
        /// Acknowledge the pending output picked (modulo the count) from the pending list.
        Ack(usize),
        /// Fail the pending output picked (modulo the count).
        Fail(usize),
        /// Revoke partition `p`, and re-assign it (offsets continue where they were).
        Revoke(usize),
    }

    const PARTITIONS: usize = 3;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..PARTITIONS, 0i64..3, 0usize..4, any::<bool>())
                .prop_map(|(p, gap, outputs, held)| Op::Begin { p, gap, outputs, held }),
            2 => (0..PARTITIONS, 0usize..3).prop_map(|(p, outputs)| Op::Flush { p, outputs }),
            1 => (0..PARTITIONS, 0i64..4).prop_map(|(p, back)| Op::Rewind { p, back }),
            8 => any::<usize>().prop_map(Op::Ack),
            1 => (0..PARTITIONS).prop_map(Op::Revoke),
        ]
    }

    fn op_with_failures() -> impl Strategy<Value = Op> {
        prop_oneof![10 => op(), 1 => any::<usize>().prop_map(Op::Fail)]
    }

    /// Reference model of one partition assignment: every record ever begun, never forgotten.
    #[derive(Debug, Default)]
    struct Model {
        /// Epoch of the records (a revoke or a rewind starts a new one).
        epoch: u32,
        /// Epoch of the flushes (a revoke starts a new one, a rewind does not).
        flush_epoch: u32,
        /// (offset, outputs not reported, failed), since the last revoke or rewind.
        records: Vec<(i64, usize, bool)>,
        /// Offsets of the held records not in a flush yet.
        unflushed: Vec<i64>,
        /// (offsets of the held records covered, records not reported, failed)
        flushes: Vec<(Vec<i64>, usize, bool)>,
        next_offset: i64,
        /// Position the tracker gave at the previous step, since the last revoke or rewind
        /// (positions never go back within one).
        seen: Option<i64>,
    }

    impl Model {
        /// The lowest held record whose state change is not durable.
        fn barrier(&self) -> Option<i64> {
            let writing = self.flushes.iter().filter(|f| f.1 > 0 || f.2).flat_map(|f| f.0.iter().copied());
            writing.chain(self.unflushed.iter().copied()).min()
        }

        /// Position after the longest complete prefix, below every state change not durable.
        fn expected_position(&self) -> Option<i64> {
            let mut pos = None;
            for &(offset, remaining, failed) in &self.records {
                if remaining > 0 || failed {
                    break;
                }
                pos = Some(offset + 1);
            }
            pos.map(|pos| self.barrier().map_or(pos, |barrier| barrier.min(pos)))
        }

        fn incomplete(&self) -> usize {
            self.records.iter().filter(|r| r.1 > 0 || r.2).count()
                + self.flushes.iter().filter(|f| f.1 > 0 || f.2).count()
        }

        /// Everything below `pos` is complete and durable.
        fn all_complete_below(&self, pos: i64) -> bool {
            self.records.iter().filter(|r| r.0 < pos).all(|r| r.1 == 0 && !r.2)
                && self.barrier().is_none_or(|barrier| barrier >= pos)
        }

        /// The lowest record a flush that failed held, if any.
        fn poisoned_by_flush(&self) -> Option<i64> {
            self.flushes.iter().filter(|f| f.2).filter_map(|f| f.0.iter().copied().min()).min()
        }

        /// The lowest record lost for good: a failed output, or the first record a failed
        /// flush held.
        fn poisoned(&self) -> Option<i64> {
            self.records.iter().filter(|r| r.2).map(|r| r.0).chain(self.poisoned_by_flush()).min()
        }

        /// Past the last record begun, never past a record lost for good.
        fn expected_processed(&self) -> Option<i64> {
            let next = self.records.last()?.0 + 1;
            Some(self.poisoned().map_or(next, |poisoned| poisoned.min(next)))
        }
    }

    /// What a pending report is for.
    #[derive(Debug, Clone, Copy)]
    enum Target {
        Record(usize),
        Flush(usize),
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut t = OffsetTracker::new();
        let tps: Vec<TopicPartition> = (0..PARTITIONS as i32).map(tp).collect();
        let mut models: Vec<Model> = (0..PARTITIONS).map(|_| Model::default()).collect();
        // Pending outputs: (ticket, partition, model epoch, record or flush index).
        let mut pending: Vec<(Ticket, usize, u32, Target)> = Vec::new();

        // The tracker's positions of `p` against the model: the position is the complete and
        // durable prefix, never past an incomplete record, never back; `processed` never
        // passes a record lost for good.
        let check_positions = |t: &OffsetTracker, p: usize, m: &Model| -> Result<(), TestCaseError> {
            let position = t.position(&tps[p]);
            if let Some(pos) = position {
                prop_assert!(m.all_complete_below(pos), "position {pos} past an incomplete record: {m:?}");
            }
            prop_assert_eq!(position, m.expected_position(), "partition {}", p);
            prop_assert!(
                m.seen.is_none_or(|seen| position.is_some_and(|pos| pos >= seen)),
                "position went back from {:?} to {position:?}",
                m.seen
            );
            prop_assert_eq!(t.processed(&tps[p]), m.expected_processed(), "partition {}", p);
            Ok(())
        };

        for op in ops {
            match op {
                Op::Begin { p, gap, outputs, held } => {
                    let m = &mut models[p];
                    let offset = m.next_offset + gap;
                    m.next_offset = offset + 1;
                    let ticket =
                        if held { t.begin_held(&tps[p], offset, outputs) } else { t.begin(&tps[p], offset, outputs) };
                    m.records.push((offset, outputs, false));
                    let idx = m.records.len() - 1;
                    if held {
                        m.unflushed.push(offset);
                    }
                    pending.extend(std::iter::repeat_n((ticket, p, m.epoch, Target::Record(idx)), outputs));
                }
                Op::Flush { p, outputs } => {
                    let m = &mut models[p];
                    let covered = std::mem::take(&mut m.unflushed);
                    let ticket = t.flush(&tps[p], outputs);
                    prop_assert_eq!(ticket.is_some(), outputs > 0);
                    if let Some(ticket) = ticket {
                        m.flushes.push((covered, outputs, false));
                        let idx = m.flushes.len() - 1;
                        pending.extend(std::iter::repeat_n((ticket, p, m.flush_epoch, Target::Flush(idx)), outputs));
                    }
                }
                Op::Rewind { p, back } => {
                    let m = &mut models[p];
                    // Only once something was begun since the last rewind or revoke.
                    if let Some(&(last, ..)) = m.records.last() {
                        let offset = (last - back).max(0);
                        let ticket = t.begin(&tps[p], offset, 1);
                        // Records begin again from `offset`; flushes and held records stay.
                        m.epoch += 1;
                        m.records = vec![(offset, 1, false)];
                        m.seen = None;
                        m.next_offset = offset + 1;
                        pending.push((ticket, p, m.epoch, Target::Record(0)));
                    }
                }
                Op::Ack(pick) | Op::Fail(pick) if !pending.is_empty() => {
                    let (ticket, p, epoch, target) = pending.swap_remove(pick % pending.len());
                    let m = &mut models[p];
                    let is_fail = matches!(op, Op::Fail(_));
                    let stops = if is_fail {
                        t.fail(ticket)
                    } else {
                        t.ack(ticket);
                        false
                    };
                    match target {
                        Target::Record(idx) if epoch == m.epoch => {
                            let rec = &mut m.records[idx];
                            rec.1 -= 1;
                            rec.2 |= is_fail;
                            prop_assert_eq!(stops, is_fail);
                        }
                        Target::Flush(idx) if epoch == m.flush_epoch => {
                            let flush = &mut m.flushes[idx];
                            flush.1 -= 1;
                            // Losing tombstones (nothing held) stops nothing.
                            let fails = is_fail && !flush.0.is_empty();
                            prop_assert_eq!(stops, fails);
                            flush.2 |= fails;
                        }
                        _ => {}
                    }
                }
                Op::Ack(_) | Op::Fail(_) => {}
                Op::Revoke(p) => {
                    let got = t.revoke(std::slice::from_ref(&tps[p]));
                    let m = &mut models[p];
                    let want: Vec<_> = m.expected_position().map(|pos| (tps[p].clone(), pos)).into_iter().collect();
                    prop_assert_eq!(got, want);
                    // Re-assigned later: a fresh assignment; offsets continue upwards.
                    let next_offset = m.next_offset;
                    *m = Model { epoch: m.epoch + 1, flush_epoch: m.flush_epoch + 1, next_offset, ..Model::default() };
                }
            }
            // Invariants after every step.
            let mut total = 0;
            for (p, m) in models.iter_mut().enumerate() {
                check_positions(&t, p, m)?;
                m.seen = t.position(&tps[p]);
                prop_assert_eq!(t.in_flight_partition(&tps[p]), m.incomplete());
                total += m.incomplete();
            }
            prop_assert_eq!(t.in_flight(), total);
        }

        // Flush what is held, deliver every outstanding output: every partition reaches last
        // offset + 1 unless poisoned.
        for (p, m) in models.iter_mut().enumerate() {
            let covered = std::mem::take(&mut m.unflushed);
            if let Some(ticket) = t.flush(&tps[p], 1) {
                m.flushes.push((covered, 1, false));
                pending.push((ticket, p, m.flush_epoch, Target::Flush(m.flushes.len() - 1)));
            }
        }
        while let Some((ticket, p, epoch, target)) = pending.pop() {
            t.ack(ticket);
            let m = &mut models[p];
            match target {
                Target::Record(idx) if epoch == m.epoch => m.records[idx].1 -= 1,
                Target::Flush(idx) if epoch == m.flush_epoch => m.flushes[idx].1 -= 1,
                _ => {}
            }
        }
        for (p, m) in models.iter().enumerate() {
            check_positions(&t, p, m)?;
            let last = m.records.last().map(|r| r.0 + 1);
            match m.poisoned() {
                None => {
                    prop_assert_eq!(t.position(&tps[p]), last);
                    prop_assert_eq!(t.processed(&tps[p]), last);
                    prop_assert_eq!(t.in_flight_partition(&tps[p]), 0);
                }
                Some(failed) => {
                    prop_assert!(t.position(&tps[p]).is_none_or(|pos| pos <= failed));
                    prop_assert_eq!(t.processed(&tps[p]), last.map(|last| last.min(failed)));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

        #[test]
        fn random_interleavings_never_commit_past_unacked(ops in prop::collection::vec(op(), 0..200)) {
            run(ops)?;
        }

        #[test]
        fn random_interleavings_with_failures_never_commit_past_failed(
            ops in prop::collection::vec(op_with_failures(), 0..200),
        ) {
            run(ops)?;
        }
    }
}
