//! The checks of a broker test's run, by what a consumer reads afterwards, per input record
//! (partition and offset): exactly once (`read_committed`: each input's outputs once, no
//! transaction left open, sessions and alerts as an uninterrupted run's) or at least once
//! (nothing lost, duplicates counted, every view one an uninterrupted run gives).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use acs_stream::commands::demo::OutputRecord;
use acs_stream::encode::proto::pb;
use acs_stream::synth::SynthRecord;
use prost::Message as _;

use super::alerts::{assert_same_alerts, published_alerts, reference_session_alerts};
use super::processor::expected_id;
use super::topics::{input_ends, now_ms, open_transactions, read_committed};

/// Output topics are created by the service with 2 partitions (`RunConfig`).
pub const OUTPUT_PARTITIONS: i32 = 2;

/// A run to check: what went in, and where it went.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub brokers: &'a str,
    /// The topics' prefix and the group (`RunConfig`).
    pub prefix: &'a str,
    pub input: &'a str,
    pub input_partitions: i32,
    pub inputs: &'a [SynthRecord],
}

/// What the checks found, for the test's summary line.
#[derive(Debug, Default)]
pub struct Checked {
    pub events: usize,
    pub dead_letters: usize,
    pub produce_failed: usize,
    /// Outputs beyond the first of their input (at least once: replays).
    pub duplicates: usize,
    pub session_alerts: usize,
    pub tenant_alerts: usize,
    pub tenant_records: usize,
}

/// Reads what the run of `prefix` published, as a `read_committed` consumer, and checks it
/// against `inputs`: each input's event (or dead letter) exactly once, sessions and
/// session-scoped alerts as the reference's, no alert and no tenant-topic record twice, no
/// transaction left open. `refused_tenant`: that tenant's events topic refuses every record:
/// each of its valid inputs is one `produce_failed` dead letter naming the event instead.
pub fn check_exactly_once(run: &Run<'_>, refused_tenant: Option<&str>) -> Checked {
    let Run { brokers, prefix, input, input_partitions, inputs } = *run;
    let event_topics: Vec<String> = ["tenant-01", "tenant-02"].iter().map(|t| format!("{prefix}.{t}.events")).collect();
    let mut output_topics = event_topics.clone();
    output_topics.push(format!("{prefix}.dlq"));
    output_topics.extend(["tenant-01", "tenant-02"].iter().map(|t| format!("{prefix}.{t}.alerts")));
    let internal = vec![format!("{prefix}.tenant-signals"), format!("{prefix}.sessions.changelog")];
    // The group's lag is 0 on the tenant topic too, which is written in transactions (each
    // ending with a marker the consumer never hands over: the commits step over them).
    let tenant = format!("{prefix}.tenant-signals");
    for (partition, (committed, end)) in super::committed_for(brokers, prefix, &tenant, input_partitions) {
        assert_eq!(committed.unwrap_or(0), end, "{tenant}[{partition}]: committed to its end");
    }
    let mut open = open_transactions(brokers, &output_topics, OUTPUT_PARTITIONS);
    open.extend(open_transactions(brokers, &internal, input_partitions));
    assert!(open.is_empty(), "transactions left open (topic, partition, last stable offset, high watermark): {open:?}");

    let mut readable = event_topics.clone();
    readable.push(format!("{prefix}.dlq"));
    let outputs = read_committed(brokers, &readable, OUTPUT_PARTITIONS);
    let mut checked = Checked::default();
    let mut events: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut rejected: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut failed_ids: BTreeSet<String> = BTreeSet::new();
    let mut failures: BTreeSet<String> = BTreeSet::new();
    let mut events_only: Vec<OutputRecord> = Vec::new();
    for output in &outputs {
        let position = super::source_position(output, prefix);
        if output.topic.ends_with(".dlq") {
            checked.dead_letters += 1;
            if output.headers.get("acs.error.code").map(String::as_str) == Some("produce_failed") {
                checked.produce_failed += 1;
                failures.extend(output.headers.get("acs.error.detail").cloned());
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
    let positions: BTreeSet<(i32, i64)> = events.keys().chain(rejected.keys()).copied().collect();
    let expected_positions = input_positions(brokers, input, input_partitions);
    assert_eq!(positions.len(), inputs.len(), "one output per input");
    assert_eq!(positions, expected_positions, "every input position, and only those");
    // The refused tenant's valid inputs, and only those, are dead-lettered as refused.
    assert_eq!(
        failed_ids,
        refused_inputs(inputs, refused_tenant),
        "produce_failed dead letters: exactly the refused tenant's inputs (errors: {failures:?})"
    );

    // Sessions: every event's view is the one an uninterrupted run gives it (no replay is
    // visible to a read_committed consumer). With a refused tenant, its events are missing
    // from the topics, so only the other tenant's sessions are compared whole.
    let expected = super::reference_sessions(inputs, now_ms());
    let actual = super::sessions_of(&events_only, prefix);
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
    let tenant_records = read_committed(brokers, &internal[..1], input_partitions);
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

/// Reads everything the run of `prefix` published and checks it at least once: every input
/// position has its event (or dead letter); an output beyond the first of its position is a
/// replay (counted), never an output of nothing; every session view is one an uninterrupted
/// run gives, and each session's last event carries its final state; every session alert of
/// the reference is published, a replayed one byte for byte the same; the group is committed
/// to the end of the input and of the tenant topic.
pub fn check_at_least_once(run: &Run<'_>, refused_tenant: Option<&str>) -> Checked {
    let Run { brokers, prefix, input, input_partitions, inputs } = *run;
    for topic in [input.to_owned(), format!("{prefix}.tenant-signals")] {
        for (partition, (committed, end)) in super::committed_for(brokers, prefix, &topic, input_partitions) {
            assert_eq!(committed.unwrap_or(0), end, "{topic}[{partition}]: committed to its end (lag 0)");
        }
    }
    let readable: Vec<String> =
        ["tenant-01.events", "tenant-02.events", "dlq"].iter().map(|t| format!("{prefix}.{t}")).collect();
    let outputs = read_committed(brokers, &readable, OUTPUT_PARTITIONS);
    let mut checked = Checked::default();
    let mut per_position: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut events: Vec<OutputRecord> = Vec::new();
    let mut failed_ids: BTreeSet<String> = BTreeSet::new();
    let mut failures: BTreeSet<String> = BTreeSet::new();
    for output in &outputs {
        *per_position.entry(super::source_position(output, prefix)).or_default() += 1;
        if output.topic.ends_with(".dlq") {
            checked.dead_letters += 1;
            if output.headers.get("acs.error.code").map(String::as_str) == Some("produce_failed") {
                checked.produce_failed += 1;
                failures.extend(output.headers.get("acs.error.detail").cloned());
                assert_eq!(
                    output.headers.get("acs.error.output").map(String::as_str),
                    Some("event"),
                    "{:?}",
                    output.headers
                );
                let record = SynthRecord {
                    key: output.key.clone().unwrap_or_default(),
                    value: output.value.clone(),
                    malformed: false,
                };
                failed_ids.insert(expected_id(&record));
            }
        } else {
            checked.events += 1;
            events.push(output.clone());
        }
    }
    let expected_positions = input_positions(brokers, input, input_partitions);
    let positions: BTreeSet<(i32, i64)> = per_position.keys().copied().collect();
    assert_eq!(expected_positions.len(), inputs.len(), "the input topic holds the inputs");
    let lost: Vec<_> = expected_positions.difference(&positions).collect();
    let phantom: Vec<_> = positions.difference(&expected_positions).collect();
    if !lost.is_empty() {
        // Whether their outputs are missing, or there under another source position.
        let output_ids: BTreeSet<String> = outputs.iter().map(|output| output_id(output, prefix)).collect();
        let missing: Vec<String> =
            inputs.iter().filter(|r| !r.malformed).map(expected_id).filter(|id| !output_ids.contains(id)).collect();
        panic!("inputs lost (no event, no dead letter): {lost:?}; message ids without an output: {missing:?}");
    }
    assert!(phantom.is_empty(), "outputs of no input: {phantom:?}");
    checked.duplicates = outputs.len() - positions.len();
    // The refused tenant's valid inputs, and only those, are dead-lettered as refused.
    assert_eq!(
        failed_ids,
        refused_inputs(inputs, refused_tenant),
        "produce_failed dead letters: exactly the refused tenant's inputs (errors: {failures:?})"
    );

    // Sessions: every view one an uninterrupted run gives; each session's last event its
    // final state (a replay carries the session as it stands). With a refused tenant, its
    // events are not in the topics: only the other tenant's sessions are compared whole.
    let expected = super::reference_sessions(inputs, now_ms());
    let actual = super::sessions_of(&events, prefix);
    if refused_tenant.is_none() {
        assert_eq!(actual.len(), expected.len(), "sessions");
    }
    for (id, views) in &actual {
        let reference: HashSet<_> = expected[id].iter().map(super::counters).collect();
        for (_, view) in views {
            assert!(
                reference.contains(&super::counters(view)),
                "session {id}: {view:?} never happens without the faults"
            );
        }
        let last = views.last().unwrap().0;
        let final_state = super::counters(expected[id].last().unwrap());
        for (_, view) in views.iter().filter(|(at, _)| *at == last) {
            assert_eq!(super::counters(view), final_state, "session {id}: its last event");
        }
    }
    let published = published_alerts(brokers, prefix);
    assert_same_alerts(&published.session, &reference_session_alerts(inputs, input));
    checked.session_alerts = published.session.len();
    checked.tenant_alerts = published.tenant;
    checked
}

/// The message id an output stands for: its event's, or its dead letter's original record's.
fn output_id(output: &OutputRecord, prefix: &str) -> String {
    if output.topic == format!("{prefix}.dlq") {
        let record =
            SynthRecord { key: output.key.clone().unwrap_or_default(), value: output.value.clone(), malformed: false };
        // A value that is not JSON (malformed input) has no id to compare.
        if serde_json::from_slice::<serde_json::Value>(&record.value).is_err() {
            return String::new();
        }
        expected_id(&record)
    } else {
        pb::EnrichedEvent::decode(output.value.as_slice()).expect("protobuf event").message_id
    }
}

/// Every (partition, offset) of the input topic, to its end.
fn input_positions(brokers: &str, input: &str, input_partitions: i32) -> BTreeSet<(i32, i64)> {
    let ends = input_ends(brokers, input, input_partitions);
    ends.iter().flat_map(|(partition, end)| (0..*end).map(move |offset| (*partition, offset))).collect()
}

/// The ids of the valid inputs of `refused_tenant` (whose events topic refuses every record):
/// those to be dead-lettered as `produce_failed`; none without one.
fn refused_inputs(inputs: &[SynthRecord], refused_tenant: Option<&str>) -> BTreeSet<String> {
    let Some(tenant) = refused_tenant else { return BTreeSet::new() };
    let suffix = format!("#{tenant}");
    inputs
        .iter()
        .filter(|r| !r.malformed && String::from_utf8_lossy(&r.key).ends_with(&suffix))
        .map(expected_id)
        .collect()
}
