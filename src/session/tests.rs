//! The session store over small hand-written sessions.

use std::sync::Arc;
use std::time::Duration;

use super::changelog::ChangelogError;
use super::store::Change;
use super::*;
use crate::config::Config;
use crate::model::{Anomaly, Event, ReasonCatalog, SessionView, Source, Status};
use crate::pipeline::Pipeline;

const NOW: i64 = 1_767_261_400_000;
const T0: i64 = 1_767_261_000_000;
const DE: &str = "dIresu#d1#h1#acme";

fn event(pipeline: &Pipeline, json: &str, offset: i64) -> Event<'static> {
    let source = Source { topic: Arc::from("raw"), partition: 0, offset };
    pipeline.enrich(json.as_bytes(), &source, NOW).unwrap_or_else(|dead| panic!("{json}: {dead:?}")).into_owned()
}

/// A flat record of session `DE`: action, action status, declared status ("" for none),
/// seconds after T0, message id.
fn flat(action: &str, outcome: &str, status: &str, at: i64, id: &str) -> String {
    let status = if status.is_empty() { String::new() } else { format!(",\"status\":\"{status}\"") };
    format!(
        r#"{{"deliveryExecutionId":"{DE}","actor":"proctor","action":"{action}","actionStatus":"{outcome}","incidentTime":{},"messageId":"{id}"{status}}}"#,
        (T0 + at * 1000) / 1000
    )
}

struct Run {
    pipeline: Pipeline,
    sessions: Sessions,
    now: i64,
    offset: i64,
}

impl Run {
    fn new() -> Run {
        Run {
            pipeline: Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap(),
            sessions: Sessions::new(SessionLimits::default()),
            now: NOW,
            offset: 0,
        }
    }

    fn apply(&mut self, json: &str) -> (SessionView, Vec<Anomaly>) {
        self.offset += 1;
        let mut event = event(&self.pipeline, json, self.offset);
        let view = self.sessions.apply(&mut event, self.offset, self.now);
        (view, event.anomalies)
    }
}

#[test]
fn a_session_that_begins_with_a_pause_then_resumes_and_closes() {
    let mut run = Run::new();
    let (view, anomalies) = run.apply(&flat("pause", "succeeded", "suspended", 0, "m1"));
    assert_eq!((view.status_before, view.status_after, view.sequence), (None, Some(Status::Suspended), 1));
    assert!(view.transition_valid && anomalies.is_empty(), "{anomalies:?}");
    assert_eq!(view.pause_count, 1);
    let (view, anomalies) = run.apply(&flat("resume", "succeeded", "", 10, "m2"));
    assert_eq!((view.status_before, view.status_after), (Some(Status::Suspended), Some(Status::Interacting)));
    assert!(anomalies.is_empty(), "{anomalies:?}");
    let (view, _) = run.apply(&flat("submission", "succeeded", "closed", 20, "m3"));
    assert_eq!(view.status_after, Some(Status::Closed));
    assert_eq!((view.sequence, view.first_seen, view.last_seen), (3, T0, T0 + 20_000));
    // The asynchronous log goes on after the end: marked, never blocked.
    let (view, anomalies) = run.apply(&flat("flag", "succeeded", "", 30, "m4"));
    assert_eq!(anomalies, [Anomaly::EventAfterFinal]);
    assert!(!view.transition_valid);
    assert_eq!((view.status_after, view.security_flag_count), (Some(Status::Closed), 1));
    // A proctor's resume reopens it.
    let (view, anomalies) = run.apply(&flat("resume", "succeeded", "", 40, "m5"));
    assert_eq!((view.status_after, anomalies.len()), (Some(Status::Interacting), 0));
}

#[test]
fn duplicates_are_marked_and_count_nothing() {
    let mut run = Run::new();
    run.apply(&flat("start", "succeeded", "", 0, "m1"));
    let (first, _) = run.apply(&flat("pause", "succeeded", "", 5, "m2"));
    let (again, anomalies) = run.apply(&flat("pause", "succeeded", "", 5, "m2"));
    assert_eq!(anomalies, [Anomaly::Duplicate]);
    assert!(again.duplicate && !first.duplicate);
    assert_eq!((again.sequence, again.pause_count), (first.sequence, first.pause_count));
    assert_eq!((again.status_before, again.status_after), (Some(Status::Suspended), Some(Status::Suspended)));
    // Past the horizon, the same id counts again.
    run.now += Duration::from_secs(3661).as_millis() as i64;
    let (later, anomalies) = run.apply(&flat("resume", "succeeded", "", 6, "m2"));
    assert!(!later.duplicate && anomalies.is_empty(), "{anomalies:?}");
}

#[test]
fn the_declared_status_wins_and_a_disagreement_is_marked() {
    let mut run = Run::new();
    run.apply(&flat("start", "succeeded", "", 0, "m1"));
    // Paused upstream, but the pause event was filtered: the flag declares `suspended`.
    let (view, anomalies) = run.apply(&flat("flag", "succeeded", "suspended", 5, "m2"));
    assert_eq!(view.status_after, Some(Status::Suspended));
    assert_eq!(anomalies, [Anomaly::StatusMismatch]);
    // Navigation while suspended: illegal, still tracked.
    let (view, anomalies) = run.apply(&flat("navigation", "succeeded", "", 6, "m3"));
    assert_eq!(anomalies, [Anomaly::IllegalTransition]);
    assert_eq!((view.transition_valid, view.status_after), (false, Some(Status::Suspended)));
}

#[test]
fn failed_actions_change_nothing_and_reset_restarts_the_attempt() {
    let mut run = Run::new();
    run.apply(&flat("start", "succeeded", "", 0, "m1"));
    run.apply(&flat("pause", "succeeded", "", 1, "m2"));
    run.apply(&flat("resume", "succeeded", "", 2, "m3"));
    let (view, anomalies) = run.apply(&flat("pause", "failed", "", 3, "m4"));
    assert_eq!((view.status_after, view.pause_count), (Some(Status::Interacting), 1));
    assert!(anomalies.is_empty());
    run.apply(&flat("flag", "succeeded", "", 4, "m5"));
    let (view, _) = run.apply(&flat("reset", "succeeded", "", 5, "m6"));
    assert_eq!((view.status_after, view.pause_count, view.security_flag_count), (Some(Status::Initial), 0, 0));
    assert_eq!(view.sequence, 6, "the sequence goes on through a reset");
}

#[test]
fn extra_time_absolute_from_acs_added_from_flat_records() {
    let mut run = Run::new();
    let acs = |minutes: &str, id: &str| {
        format!(
            r#"{{"deliveryExecutionId":"{DE}","status":"running","acsControl":{{"action":"update","extra_time":{minutes},"incident_time":"2026-01-01T09:50:00+00:00","reason_code":"30020"}},"messageId":"{id}"}}"#
        )
    };
    let (view, _) = run.apply(&acs("15", "a1"));
    assert_eq!(view.extra_time_minutes, 15.0);
    let (view, _) = run.apply(&acs("10.25", "a2"));
    assert_eq!(view.extra_time_minutes, 10.25, "the new absolute value");
    let added = format!(
        r#"{{"deliveryExecutionId":"{DE}","actor":"proctor","action":"update","actionStatus":"succeeded","extraTime":5,"incidentTime":{}}}"#,
        T0 / 1000 + 1
    );
    let (view, _) = run.apply(&added);
    assert_eq!(view.extra_time_minutes, 15.25, "minutes added");
}

#[test]
fn out_of_order_times_are_marked() {
    let mut run = Run::new();
    run.apply(&flat("start", "succeeded", "", 10, "m1"));
    let (view, anomalies) = run.apply(&flat("flag", "succeeded", "", 5, "m2"));
    assert_eq!(anomalies, [Anomaly::OutOfOrderTime]);
    assert_eq!((view.first_seen, view.last_seen), (T0 + 5_000, T0 + 10_000));
}

#[test]
fn ended_and_idle_sessions_expire() {
    let limits = SessionLimits {
        finished_ttl: Duration::from_secs(60),
        idle_ttl: Duration::from_secs(600),
        ..SessionLimits::default()
    };
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let mut sessions = Sessions::new(limits);
    let mut ended = event(&pipeline, &flat("terminate", "succeeded", "", 0, "m1"), 1);
    sessions.apply(&mut ended, 1, NOW);
    let other = flat("pause", "succeeded", "", 0, "m2").replace(DE, "u#d1#h2#acme");
    sessions.apply(&mut event(&pipeline, &other, 2), 2, NOW);
    assert_eq!(sessions.len(), 2);
    assert!(sessions.expire(NOW + 59_999).is_empty());
    assert_eq!(sessions.expire(NOW + 60_000), [DE.to_owned()]);
    assert_eq!(sessions.expire(NOW + 600_000), ["u#d1#h2#acme".to_owned()]);
    assert!(sessions.is_empty());
}

#[test]
fn input_processed_again_is_not_applied_twice() {
    let mut run = Run::new();
    run.apply(&flat("start", "succeeded", "", 0, "m1"));
    let (view, _) = run.apply(&flat("pause", "succeeded", "", 5, "m2"));
    assert_eq!((view.sequence, view.pause_count), (2, 1));
    // The same offsets again (a restart replays from the last commit): nothing changes, and
    // nothing is marked, whatever the message ids say.
    let mut replayed = event(&run.pipeline, &flat("pause", "succeeded", "", 5, "other-id"), 2);
    let again = run.sessions.apply(&mut replayed, 2, NOW);
    assert_eq!((again.sequence, again.pause_count, again.status_after), (2, 1, Some(Status::Suspended)));
    assert!(replayed.anomalies.is_empty() && !again.duplicate);
    // Newer input goes on from there.
    let (view, _) = run.apply(&flat("resume", "succeeded", "", 6, "m3"));
    assert_eq!((view.sequence, view.status_after), (3, Some(Status::Interacting)));
}

#[test]
fn a_store_rebuilt_from_its_changes_goes_on_identically() {
    let mut run = Run::new();
    run.apply(&flat("start", "succeeded", "", 0, "m1"));
    run.apply(&flat("pause", "succeeded", "", 5, "m2"));
    let other = flat("terminate", "succeeded", "", 6, "m3").replace(DE, "u#d1#h9#acme");
    run.apply(&other);
    let changes = run.sessions.drain_changes("raw", 0);
    assert_eq!(changes.len(), 2, "one record per changed session");
    assert!(run.sessions.drain_changes("raw", 0).is_empty(), "drained");

    let mut restored = Sessions::new(SessionLimits::default());
    for (key, value) in &changes {
        restored.restore_record("raw", 0, key, value.as_deref()).unwrap();
    }
    // Records of another input partition sharing the changelog partition are not ours.
    let mut elsewhere = Sessions::new(SessionLimits::default());
    for (key, value) in &changes {
        elsewhere.restore_record("raw", 1, key, value.as_deref()).unwrap();
    }
    assert!(elsewhere.is_empty());

    assert_eq!(restored.get(DE), run.sessions.get(DE));
    let next = flat("resume", "succeeded", "", 7, "m2-retry");
    let mut a = event(&run.pipeline, &next, 10);
    let mut b = event(&run.pipeline, &next, 10);
    assert_eq!(run.sessions.apply(&mut a, 10, NOW), restored.apply(&mut b, 10, NOW));
    // A replayed input and a retried message id are recognized after the restore too.
    let mut replay = event(&run.pipeline, &flat("pause", "succeeded", "", 5, "m2"), 2);
    assert_eq!(restored.apply(&mut replay, 2, NOW).sequence, 3, "not applied twice");
    let mut retry = event(&run.pipeline, &flat("pause", "succeeded", "", 5, "m2"), 11);
    assert!(restored.apply(&mut retry, 11, NOW).duplicate);

    // Expiry writes a tombstone, which forgets the session on restore.
    let expired = run.sessions.expire(NOW + 25 * 3_600_000);
    assert_eq!(expired.len(), 2);
    let tombstones = run.sessions.drain_changes("raw", 0);
    assert!(tombstones.iter().all(|(_, value)| value.is_none()), "{tombstones:?}");
    for (key, value) in &tombstones {
        restored.restore_record("raw", 0, key, value.as_deref()).unwrap();
    }
    assert!(restored.is_empty());
}

#[test]
fn a_late_write_of_an_older_state_does_not_overwrite_the_newer_one_on_restore() {
    // The old owner's state after two events, then the new owner's after a third: the old
    // owner's write lands last in the changelog (it was revoked, and wrote late).
    let mut run = Run::new();
    run.apply(&flat("start", "succeeded", "", 0, "m1"));
    run.apply(&flat("pause", "succeeded", "", 5, "m2"));
    let old = run.sessions.drain_changes("raw", 0);
    run.apply(&flat("resume", "succeeded", "", 6, "m3"));
    let new = run.sessions.drain_changes("raw", 0);
    let log: Vec<Change> = old.iter().chain(&new).chain(&old).cloned().collect();
    let restored = restored_from(&log);
    assert_eq!(restored.get(DE), run.sessions.get(DE), "the newer state stays");
    assert_eq!(restored.get(DE).unwrap().applied_offset, 3);
}

#[test]
fn a_session_that_expires_and_comes_back_before_a_drain_is_restored() {
    let mut run = Run::new();
    run.apply(&flat("start", "succeeded", "", 0, "m1"));
    assert_eq!(run.sessions.expire(NOW + 25 * 3_600_000), vec![DE.to_owned()]);
    run.now = NOW + 25 * 3_600_000;
    let (view, _) = run.apply(&flat("pause", "succeeded", "", 10, "m2"));
    assert_eq!((view.status_before, view.sequence), (None, 1), "a new session");

    let changes = run.sessions.drain_changes("raw", 0);
    assert_eq!(changes.len(), 2, "{changes:?}");
    let key = format!("raw/{DE}");
    assert_eq!((changes[0].0.as_str(), changes[0].1.is_none()), (key.as_str(), true), "the tombstone first");
    assert_eq!((changes[1].0.as_str(), changes[1].1.is_some()), (key.as_str(), true), "then the new state");
    let mut restored = Sessions::new(SessionLimits::default());
    for (key, value) in &changes {
        restored.restore_record("raw", 0, key, value.as_deref()).unwrap();
    }
    assert_eq!(restored.get(DE), run.sessions.get(DE));
    assert_eq!(restored.get(DE).unwrap().pause_count, 1);
}

/// What a compacted changelog partition keeps of `log`: the last record of each key, in
/// the order of those records.
fn compacted(log: &[Change]) -> Vec<Change> {
    log.iter()
        .enumerate()
        .filter(|(at, (key, _))| !log[at + 1..].iter().any(|(later, _)| later == key))
        .map(|(_, change)| change.clone())
        .collect()
}

#[test]
fn two_input_topics_sharing_a_changelog_partition_keep_their_sessions_apart() {
    // Partition 0 of two input topics (a regex subscription) writes to changelog partition
    // 0; the same session id is in both.
    let (mut a, mut b) = (Run::new(), Run::new());
    a.apply(&flat("start", "succeeded", "", 0, "m1"));
    b.apply(&flat("start", "succeeded", "", 0, "m1"));
    b.apply(&flat("pause", "succeeded", "", 5, "m2"));
    let mut log = a.sessions.drain_changes("raw.a", 0);
    log.extend(b.sessions.drain_changes("raw.b", 0));
    assert_eq!(log.len(), 2, "{log:?}");
    assert_ne!(log[0].0, log[1].0, "one key per input topic");
    // Topic a's session expires: its tombstone comes last.
    assert_eq!(a.sessions.expire(NOW + 25 * 3_600_000), vec![DE.to_owned()]);
    log.extend(a.sessions.drain_changes("raw.a", 0));
    assert_eq!(
        log.last().map(|(key, value)| (key.as_str(), value.is_none())),
        Some((format!("raw.a/{DE}").as_str(), true))
    );

    // Before and after compaction, topic b's session is restored; topic a's is forgotten.
    for log in [log.clone(), compacted(&log)] {
        let mut restored_b = Sessions::new(SessionLimits::default());
        let mut restored_a = Sessions::new(SessionLimits::default());
        for (key, value) in &log {
            restored_b.restore_record("raw.b", 0, key, value.as_deref()).unwrap();
            restored_a.restore_record("raw.a", 0, key, value.as_deref()).unwrap();
        }
        assert_eq!(restored_b.get(DE), b.sessions.get(DE), "{log:?}");
        assert_eq!(restored_b.get(DE).map(|state| state.pause_count), Some(1));
        assert!(restored_a.is_empty(), "{log:?}");
    }
    // A key that does not name its input topic is refused, not taken for anyone's.
    let mut restored = Sessions::new(SessionLimits::default());
    let value = log[1].1.as_deref();
    assert!(matches!(restored.restore_record("raw.b", 0, DE, value), Err(ChangelogError::Key)));
    assert!(matches!(restored.restore_record("raw.b", 0, DE, None), Err(ChangelogError::Key)));
    assert!(restored.is_empty());
}

#[test]
fn recent_ids_keep_the_newest_within_the_horizon_in_bounded_memory() {
    use super::store::RecentIds;
    let limits = SessionLimits::default();
    let mut run = Run::new();
    for n in 0..100 {
        run.apply(&flat("flag", "succeeded", "", n, &format!("id-{n}")));
    }
    let state = run.sessions.get(DE).unwrap();
    assert_eq!(state.recent_ids.len(), limits.remembered_ids);
    assert!(state.recent_ids.heap_bytes() <= limits.remembered_ids * 8, "{}", state.recent_ids.heap_bytes());
    // The newest are remembered, the oldest forgotten.
    let (view, _) = run.apply(&flat("flag", "succeeded", "", 100, "id-99"));
    assert!(view.duplicate);
    let (view, _) = run.apply(&flat("flag", "succeeded", "", 101, "id-0"));
    assert!(!view.duplicate);

    // A restored buffer holds exactly its ids; more ids grow it up to the bound, not past.
    let mut restored = RecentIds::from_raw(vec![1 << 16; 20]);
    assert_eq!(restored.heap_bytes(), 20 * 8);
    for n in 0..40 {
        restored.push(n << 16, NOW, limits.remembered_ids);
    }
    assert_eq!((restored.len(), restored.heap_bytes()), (32, 32 * 8));

    // Minutes wrap around modulo 2^16 without forgetting a recent id or keeping an old one.
    let mut ids = RecentIds::default();
    let wrap = 65_536 * 60_000;
    let before_wrap = wrap - 30_000;
    ids.push(7 << 16, before_wrap, 32);
    assert!(ids.contains(7 << 16) && !ids.contains(8 << 16));
    let _ = ids.as_raw();
    let mut kept = ids.clone();
    kept_forget(&mut kept, before_wrap + 59 * 60_000);
    assert_eq!(kept.len(), 1, "59 minutes later, across the wrap: still within 1 h");
    kept_forget(&mut kept, before_wrap + 60 * 60_000 - 100);
    assert_eq!(kept.len(), 1, "just under 1 h later, whatever the minute boundaries: remembered");
    kept_forget(&mut kept, before_wrap + 62 * 60_000);
    assert!(kept.is_empty(), "62 minutes later: forgotten");
    // Seen a minute ahead (another member's clock): remembered, not taken for 45 days old.
    let mut ahead = RecentIds::default();
    ahead.push(9 << 16, before_wrap + 60_000, 32);
    kept_forget(&mut ahead, before_wrap);
    assert!(ahead.contains(9 << 16));
}

fn kept_forget(ids: &mut super::store::RecentIds, now: i64) {
    ids.forget_older_than(now, Duration::from_secs(3600));
}

/// A store restored from the changes drained from `changes`, as after a restart.
fn restored_from(changes: &[Change]) -> Sessions {
    let mut restored = Sessions::new(SessionLimits::default());
    for (key, value) in changes {
        restored.restore_record("raw", 0, key, value.as_deref()).unwrap();
    }
    restored
}

/// `repeated-pauses` (3 succeeded pauses within 30 minutes): the four events before the
/// third pause (two pauses, each resumed), and the third.
fn repeated_pauses() -> ([String; 4], String) {
    let before = [
        flat("pause", "succeeded", "", 0, "p1"),
        flat("resume", "succeeded", "", 60, "r1"),
        flat("pause", "succeeded", "", 600, "p2"),
        flat("resume", "succeeded", "", 660, "r2"),
    ];
    (before, flat("pause", "succeeded", "", 1200, "p3"))
}

/// The alerts `json`, at `position`, fires in `sessions` under `rules` (tenant rules counted
/// in place).
fn evaluated(
    pipeline: &Pipeline,
    rules: &crate::rules::RuleSet,
    sessions: &mut Sessions,
    json: &str,
    position: i64,
) -> crate::encode::Alerts {
    let mut event = event(pipeline, json, position);
    sessions.apply_evaluating(&mut event, position, NOW, Some((rules, None))).alerts
}

#[test]
fn rule_state_is_restored_and_a_replay_fires_what_it_fired_until_committed() {
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let rules = crate::rules::RuleSet::defaults();
    let apply =
        |sessions: &mut Sessions, json: &str, position: i64| evaluated(&pipeline, &rules, sessions, json, position);
    // Two before the restart.
    let (before, third) = repeated_pauses();
    let mut never = Sessions::new(SessionLimits::default());
    for (position, json) in (1..).zip(&before) {
        assert!(apply(&mut never, json, position).is_empty());
    }
    let mut restored = restored_from(&never.drain_changes("raw", 0));
    assert_eq!(restored.get(DE), never.get(DE), "the rule state too");
    assert_eq!(restored.get(DE).and_then(|state| state.rules.as_ref()).map(|rules| rules.state.held()), Some(2));

    // The third pause fires in the restored store exactly as in the one that never restarted.
    let fired = apply(&mut never, &third, 5);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let alert = fired[0].alert().unwrap();
    assert_eq!((fired[0].rule(), &*alert.rule_id), ("repeated-pauses", "repeated-pauses"));
    let evidence: Vec<&str> = alert.evidence.iter().map(|e| &*e.message_id).collect();
    assert_eq!(evidence, ["p1", "p2", "p3"]);
    assert_eq!(apply(&mut restored, &third, 5), fired);
    assert_eq!(restored.get(DE), never.get(DE));

    // Input processed again: counts nothing, fires again what its position fired, also
    // after another restart (the alerts are kept in the changelog record).
    assert_eq!(apply(&mut restored, &third, 5), fired);
    let mut again = restored_from(&restored.drain_changes("raw", 0));
    assert_eq!(again.get(DE), restored.get(DE));
    assert_eq!(apply(&mut again, &third, 5), fired);
    assert!(apply(&mut again, &before[3], 4).is_empty(), "a position that fired nothing");
    assert_eq!(again.get(DE).map(|state| state.sequence), Some(5), "nothing applied twice");

    // Committed past it: forgotten at once (a session that ended keeps nothing), and a
    // replay fires nothing.
    again.committed(5);
    assert_eq!(apply(&mut again, &third, 5), fired, "not committed past it yet");
    again.committed(6);
    assert!(again.get(DE).and_then(|state| state.rules.as_ref()).is_some_and(|rules| rules.fired.is_empty()));
    assert!(apply(&mut again, &third, 5).is_empty());
    assert!(apply(&mut again, &flat("resume", "succeeded", "", 1260, "r3"), 6).is_empty());
    let mut after = restored_from(&again.drain_changes("raw", 0));
    assert!(apply(&mut after, &third, 5).is_empty());

    // The same without a restore in between: let go at the commit, the session untouched.
    let kept = |sessions: &Sessions| sessions.get(DE).and_then(|state| state.rules.as_ref()).map(|r| r.fired.len());
    assert_eq!(kept(&never), Some(1));
    never.committed(5);
    assert_eq!(kept(&never), Some(1), "not committed past it yet");
    never.committed(6);
    assert_eq!(kept(&never), Some(0));
}

/// With JSON outputs, what a replay fires again after a restore (from the alert's protobuf
/// bytes in the changelog) is the JSON record first published, byte for byte.
#[test]
fn alerts_published_in_json_are_fired_again_byte_for_byte_after_a_restore() {
    let pipeline =
        Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap().with_format(crate::encode::Format::Json);
    let rules = crate::rules::RuleSet::defaults();
    let apply =
        |sessions: &mut Sessions, json: &str, position: i64| evaluated(&pipeline, &rules, sessions, json, position);
    let (pauses, third) = repeated_pauses();
    let mut sessions = pipeline.sessions();
    for (position, json) in (1..).zip(&pauses) {
        assert!(apply(&mut sessions, json, position).is_empty());
    }
    let fired = apply(&mut sessions, &third, 5);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let alert = fired[0].alert().unwrap();
    let published: serde_json::Value = serde_json::from_slice(&fired[0].output().value).unwrap();
    assert_eq!(published["alertId"], alert.alert_id.as_str());
    let stamp = pipeline.stamp();
    let mut expected = alert.to_json().into_bytes();
    crate::encode::stamp::AlertStamp {
        processor_version: crate::VERSION,
        rules_version: &stamp.rules_version,
        catalog_version: &stamp.catalog_version,
        privacy: None,
    }
    .put_json(&mut expected);
    assert_eq!(*fired[0].output().value, expected, "the alert, stamped with the configuration in force");

    let mut restored = pipeline.sessions();
    for (key, value) in sessions.drain_changes("raw", 0) {
        restored.restore_record("raw", 0, &key, value.as_deref()).unwrap();
    }
    let again = apply(&mut restored, &third, 5);
    assert_eq!(again, fired);
    assert_eq!(again[0].output(), fired[0].output());
}

#[test]
fn a_tenant_entry_keeps_its_rule_state_through_a_restore() {
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let rules = crate::rules::RuleSet::defaults();
    let error = format!(
        r#"{{"deliveryExecutionId":"{DE}","actor":"deliver-fe","action":"log","actionStatus":"interacting","incidentTime":{},"messageId":"t1","reasonCode":40010,"reasonMessage":"[deliver-fe] TypeError"}}"#,
        T0 / 1000
    );
    let mut sessions = Sessions::new(SessionLimits::default());
    let mut event = event(&pipeline, &error, 1);
    let mut forward = crate::rules::Forwarded::new();
    sessions.apply_evaluating(&mut event, 1, NOW, Some((&rules, Some(&mut forward))));
    assert_eq!(forward.iter().map(|id| &**id).collect::<Vec<_>>(), ["technical-burst"]);
    assert!(sessions.apply_tenant(&event, &forward, 1, NOW, &rules).is_empty());
    let restored = restored_from(&sessions.drain_changes("raw", 0));
    let tenant = restored.get("acme").and_then(|state| state.rules.as_ref());
    assert_eq!(tenant.map(|rules| rules.state.held()), Some(1), "the tenant's window");
    assert_eq!(restored.get("acme"), sessions.get("acme"));
    assert_eq!(restored.get(DE), sessions.get(DE));
}

#[test]
fn an_event_processed_again_is_forwarded_again_and_its_tenant_counts_it_once() {
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let rules = crate::rules::RuleSet::defaults();
    let error = |id: &str, at: i64| {
        format!(
            r#"{{"deliveryExecutionId":"{DE}","actor":"deliver-fe","action":"log","actionStatus":"interacting","incidentTime":{},"messageId":"{id}","reasonCode":40010,"reasonMessage":"[deliver-fe] TypeError"}}"#,
            T0 / 1000 + at
        )
    };
    let mut sessions = Sessions::new(SessionLimits::default());
    let mut tenant = Sessions::new(SessionLimits::default());
    // The session side forwards each error; the tenant-topic records are at positions 1..=19.
    for n in 1..=19 {
        let mut event = event(&pipeline, &error(&format!("e{n}"), n), n);
        let mut forward = crate::rules::Forwarded::new();
        sessions.apply_evaluating(&mut event, n, NOW, Some((&rules, Some(&mut forward))));
        assert!(tenant.apply_tenant(&event, &forward, n, NOW, &rules).is_empty());
    }
    // The 19th is processed again after a crash (its session already past it): forwarded again.
    let mut again = event(&pipeline, &error("e19", 19), 19);
    let mut forward = crate::rules::Forwarded::new();
    sessions.apply_evaluating(&mut again, 19, NOW, Some((&rules, Some(&mut forward))));
    assert_eq!(forward.iter().map(|id| &**id).collect::<Vec<_>>(), ["technical-burst"]);
    // Its second tenant-topic record (a new position) is not counted: still 19 errors.
    assert!(tenant.apply_tenant(&again, &forward, 20, NOW, &rules).is_empty(), "counted twice");
    // The 20th distinct error fires.
    let mut twentieth = event(&pipeline, &error("e20", 20), 20);
    let mut forward = crate::rules::Forwarded::new();
    sessions.apply_evaluating(&mut twentieth, 20, NOW, Some((&rules, Some(&mut forward))));
    let fired = tenant.apply_tenant(&twentieth, &forward, 21, NOW, &rules);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].alert().unwrap().count, 20);
}

/// The store with JSON incidents (the default policy), as `pipeline`'s would be.
fn with_json_incidents() -> Sessions {
    let encoder = crate::encode::incident::IncidentEncoder {
        format: crate::encode::Format::Json,
        ..crate::encode::incident::IncidentEncoder::default()
    };
    Sessions::new(SessionLimits::default()).with_incidents(encoder, crate::incidents::Policy::default())
}

fn incident_json(applied: &store::Applied) -> Option<serde_json::Value> {
    applied.incidents.first().map(|output| serde_json::from_slice(&output.value).unwrap())
}

/// A session's incident: a revision per event whose alerts change it (none for the others),
/// given again when the event that produced the latest revision is processed again (also
/// after a restore), and closed when the session ends; a clean session gets one closing
/// revision at `none`.
#[test]
fn a_sessions_incident_is_revised_by_its_alerts_given_again_on_a_replay_and_closed_at_its_end() {
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let rules = crate::rules::RuleSet::defaults();
    let apply = |sessions: &mut Sessions, json: &str, position: i64| {
        let mut event = event(&pipeline, json, position);
        sessions.apply_evaluating(&mut event, position, NOW, Some((&rules, None)))
    };
    let mut sessions = with_json_incidents();
    let (before, third) = repeated_pauses();
    for (position, json) in (1..).zip(&before) {
        assert!(apply(&mut sessions, json, position).incidents.is_empty(), "no alert, no revision");
    }
    let fired = apply(&mut sessions, &third, 5);
    assert_eq!(fired.alerts.len(), 1);
    let first = incident_json(&fired).expect("the alert revised the incident");
    let expected = serde_json::json!({
        "tenantId": "acme", "deliveryExecutionId": DE, "priority": "high", "score": 60, "alertCount": 1,
        "foldedAlertCount": 0, "byRule": {"repeated-pauses": 1}, "reasons": ["Repeated pauses ×1 (60 points)"],
        "firstAlertAt": T0 + 1_200_000, "lastAlertAt": T0 + 1_200_000, "updatedAt": T0 + 1_200_000,
        "sessionStatus": "suspended", "open": true, "revision": 1,
        "source": {"topic": "raw", "partition": 0, "offset": 5},
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&first[key], value, "{key}: {first}");
    }
    assert_eq!(fired.incidents[0].key.as_deref(), Some(DE.as_bytes()));
    assert!(apply(&mut sessions, &flat("resume", "succeeded", "", 1260, "r3"), 6).incidents.is_empty());

    // Processed again: the revision its position produced, byte for byte; not another's.
    assert_eq!(apply(&mut sessions, &third, 5).incidents, fired.incidents);
    assert!(apply(&mut sessions, &before[3], 4).incidents.is_empty());
    let mut restored = with_json_incidents();
    for (key, value) in sessions.drain_changes("raw", 0) {
        restored.restore_record("raw", 0, &key, value.as_deref()).unwrap();
    }
    assert_eq!(restored.get(DE), sessions.get(DE), "the incident is part of the session's state");
    assert_eq!(apply(&mut restored, &third, 5).incidents, fired.incidents);

    // A proctor terminates the session: its alert and the end, one revision.
    let end = apply(&mut restored, &flat("terminate", "succeeded", "", 1300, "t1"), 7);
    let closed = incident_json(&end).unwrap();
    assert_eq!((closed["revision"].as_u64(), closed["open"].as_bool()), (Some(2), Some(false)));
    assert_eq!((closed["priority"].as_str(), closed["sessionStatus"].as_str()), (Some("critical"), Some("terminated")));
    assert_eq!(closed["byRule"], serde_json::json!({"proctor-termination": 1, "repeated-pauses": 1}));

    // A clean session: one revision, when it ends.
    let other = |json: String| json.replace(DE, "dIresu#d2#h1#acme");
    assert!(apply(&mut restored, &other(flat("start", "succeeded", "", 0, "c1")), 8).incidents.is_empty());
    let clean = apply(&mut restored, &other(flat("submission", "succeeded", "closed", 60, "c2")), 9);
    let clean = incident_json(&clean).unwrap();
    assert_eq!((clean["priority"].as_str(), clean["score"].as_u64()), (Some("none"), Some(0)), "{clean}");
    assert_eq!((clean["revision"].as_u64(), clean["open"].as_bool()), (Some(1), Some(false)));
}

/// One event, one alert per family: an IP change flag matches security-flag and ip-change
/// (both "conduct"); the more severe is published, the other folded into the incident.
#[test]
fn an_event_publishes_one_alert_of_a_family_and_folds_the_others() {
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let rules = crate::rules::RuleSet::defaults();
    let mut sessions = with_json_incidents();
    let json = format!(
        r#"{{"deliveryExecutionId":"{DE}","actor":"proctor","action":"flag","actionStatus":"succeeded","incidentTime":{},"messageId":"ip1","reasonCode":20999,"reasonMessage":"IP address change detected."}}"#,
        T0 / 1000
    );
    let mut event = event(&pipeline, &json, 1);
    let applied = sessions.apply_evaluating(&mut event, 1, NOW, Some((&rules, None)));
    let published: Vec<&str> = applied.alerts.iter().map(|alert| alert.rule()).collect();
    assert_eq!(published, ["ip-change"]);
    assert_eq!(applied.folded.iter().map(|rule| &**rule).collect::<Vec<_>>(), ["security-flag"]);
    let incident = incident_json(&applied).unwrap();
    assert_eq!((incident["alertCount"].as_u64(), incident["foldedAlertCount"].as_u64()), (Some(2), Some(1)));
    assert_eq!(incident["score"], 25, "the folded alert adds no points");
    let kept = sessions.get(DE).and_then(|state| state.rules.as_ref()).map(|rules| rules.fired.len());
    assert_eq!(kept, Some(1), "only the published alert is kept for a replay");
}

/// Silence: an interacting session that sends nothing for `silence_after` (5 minutes) of its
/// partition's event time fires `session-silent` once, carried by an event of another
/// session, and revises its incident; a suspended session is not silent; the session's next
/// event clears it (silent again later, it fires again once the cooldown is over); a store
/// restored mid-silence fires the same alert at the same event.
#[test]
fn an_interacting_session_silent_for_five_minutes_fires_once_and_its_next_event_clears_it() {
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
    let rules = crate::rules::RuleSet::defaults();
    let apply = |sessions: &mut Sessions, json: &str, position: i64| {
        let mut event = event(&pipeline, json, position);
        sessions.apply_evaluating(&mut event, position, NOW, Some((&rules, None)))
    };
    let (quiet, paused) = ("dIresu#d2#h1#acme", "dIresu#d3#h1#acme");
    let of = |session: &str, json: String| json.replace(DE, session);
    let silent_alerts = |applied: &store::Applied| -> Vec<(String, i64, i64)> {
        (applied.alerts.iter())
            .filter(|alert| alert.rule() == "session-silent")
            .map(|alert| {
                let alert = alert.alert().unwrap();
                (alert.delivery_execution_id.unwrap(), alert.window_start, alert.fired_at)
            })
            .collect()
    };
    // The quiet session starts at 0 s; the paused one starts and pauses; the busy one (DE)
    // sends an update every minute, moving the partition's event time on.
    let mut sessions = with_json_incidents();
    let opening = [
        of(quiet, flat("start", "succeeded", "", 0, "q0")),
        of(paused, flat("start", "succeeded", "", 0, "p0")),
        of(paused, flat("pause", "succeeded", "", 10, "p1")),
        flat("start", "succeeded", "", 0, "b0"),
    ];
    for (position, json) in (1..).zip(&opening) {
        assert!(silent_alerts(&apply(&mut sessions, json, position)).is_empty());
    }
    let busy = |minute: i64| flat("update", "succeeded", "interacting", minute * 60, &format!("b{minute}"));
    let mut fired_at = Vec::new();
    let mut restored_mid_silence = None;
    for minute in 1..=12 {
        let position = 4 + minute;
        if minute == 4 {
            // A restart: the state written so far, restored into a new store.
            let mut restored = with_json_incidents();
            for (key, value) in sessions.clone().drain_changes("raw", 0) {
                restored.restore_record("raw", 0, &key, value.as_deref()).unwrap();
            }
            restored_mid_silence = Some(restored);
        }
        let applied = apply(&mut sessions, &busy(minute), position);
        if let Some(restored) = restored_mid_silence.as_mut() {
            let again = apply(restored, &busy(minute), position);
            assert_eq!((&again.alerts, &again.incidents), (&applied.alerts, &applied.incidents), "minute {minute}");
        }
        for (session, since, at) in silent_alerts(&applied) {
            fired_at.push((minute, session.clone(), since, at));
            let incident = applied.incidents.iter().find(|i| i.key.as_deref() == Some(session.as_bytes()));
            let incident: serde_json::Value = serde_json::from_slice(&incident.expect("its incident").value).unwrap();
            assert_eq!(incident["byRule"]["session-silent"], 1, "{incident}");
        }
    }
    assert_eq!(
        fired_at,
        [(5, quiet.to_owned(), T0, T0 + 300_000)],
        "once, when the partition's event time passed 5 minutes of silence; never the paused session"
    );
    let state = sessions.get(quiet).unwrap();
    assert!(state.silent);

    // Its next event clears it; silent again within the cooldown (30 min): no alert; after
    // it: one.
    apply(&mut sessions, &of(quiet, flat("update", "succeeded", "interacting", 13 * 60, "q1")), 20);
    assert!(!sessions.get(quiet).unwrap().silent);
    let mut again = Vec::new();
    for minute in 14..=60 {
        let applied = apply(&mut sessions, &busy(minute), 20 + minute);
        again.extend(silent_alerts(&applied).into_iter().map(|(session, since, _)| (minute, session, since)));
        if minute == 40 {
            apply(&mut sessions, &of(quiet, flat("update", "succeeded", "interacting", minute * 60, "q2")), 100);
        }
    }
    assert_eq!(again, [(45, quiet.to_owned(), T0 + 2_400_000)], "the cooldown held the second silence back");
}
