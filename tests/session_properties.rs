//! Properties of the session state over random event sequences: applying never panics, the
//! counters equal what the events say (an independent model recounts them), duplicates are
//! exactly the repeated message ids, and replaying the same input gives the same states.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use acs_stream::config::Config;
use acs_stream::model::{Anomaly, ReasonCatalog, SessionView, Source};
use acs_stream::pipeline::Pipeline;
use acs_stream::session::Sessions;
use proptest::prelude::*;

const NOW: i64 = 1_767_261_400_000;
const T0: i64 = 1_767_261_000;
const ACTIONS: [&str; 12] = [
    "start",
    "pause",
    "resume",
    "terminate",
    "termination",
    "reset",
    "submission",
    "update",
    "flag",
    "log",
    "navigation",
    "wander",
];
const OUTCOMES: [&str; 4] = ["succeeded", "failed", "interacting", "maybe"];
const STATUSES: [Option<&str>; 6] =
    [None, Some("interacting"), Some("suspended"), Some("closed"), Some("paused"), Some("sleeping")];
const ACTORS: [&str; 4] = ["test-taker", "proctor", "deliver-fe", "security-plugin"];

/// One generated event: session, action, outcome, declared status, actor, seconds after
/// T0, message id (from a small pool, so that retries happen), extra time.
#[derive(Debug, Clone)]
struct Step {
    session: usize,
    action: usize,
    outcome: usize,
    status: usize,
    actor: usize,
    at: i64,
    id: u8,
    extra: Option<ExtraTime>,
}

#[derive(Debug, Clone, Copy)]
enum ExtraTime {
    /// Flat `extraTime`: minutes added.
    Added(u8),
    /// ACS `extra_time`: the new absolute value.
    Total(u8),
}

fn step() -> impl Strategy<Value = Step> {
    let extra = prop_oneof![
        4 => Just(None),
        1 => (0u8..30).prop_map(|m| Some(ExtraTime::Added(m))),
        1 => (0u8..90).prop_map(|m| Some(ExtraTime::Total(m))),
    ];
    (0usize..3, 0..ACTIONS.len(), 0..OUTCOMES.len(), 0..STATUSES.len(), 0..ACTORS.len(), 0i64..600, 0u8..40, extra)
        .prop_map(|(session, action, outcome, status, actor, at, id, extra)| Step {
            session,
            action,
            outcome,
            status,
            actor,
            at,
            id,
            extra,
        })
}

fn execution_id(session: usize) -> String {
    format!("u{session}#d#h#acme")
}

fn record(step: &Step) -> Vec<u8> {
    let de = execution_id(step.session);
    let id = format!("m{}-{}", step.session, step.id);
    let value = match step.extra {
        Some(ExtraTime::Total(minutes)) => serde_json::json!({
            "deliveryExecutionId": de, "messageId": id, "status": "running",
            "acsControl": {"action": ACTIONS[step.action], "extra_time": minutes,
                           "incident_time": chrono_iso(T0 + step.at)},
        }),
        _ => {
            let mut value = serde_json::json!({
                "deliveryExecutionId": de, "messageId": id, "actor": ACTORS[step.actor],
                "action": ACTIONS[step.action], "actionStatus": OUTCOMES[step.outcome],
                "incidentTime": T0 + step.at,
            });
            if let Some(status) = STATUSES[step.status] {
                value["status"] = serde_json::json!(status);
            }
            if let Some(ExtraTime::Added(minutes)) = step.extra {
                value["extraTime"] = serde_json::json!(minutes);
            }
            value
        }
    };
    serde_json::to_vec(&value).unwrap()
}

/// `2026-01-01T09:50:00+00:00` from epoch seconds (ACS times are ISO-8601).
fn chrono_iso(seconds: i64) -> String {
    let minutes = (seconds - 1_767_225_600) / 60;
    format!("2026-01-01T{:02}:{:02}:{:02}+00:00", minutes / 60, minutes % 60, seconds % 60)
}

fn pipeline() -> Pipeline {
    Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap()
}

/// Applies every step; returns each event's session view and anomalies.
fn apply(pipeline: &Pipeline, steps: &[Step]) -> Vec<(SessionView, Vec<Anomaly>)> {
    let mut sessions: Sessions = pipeline.sessions();
    steps
        .iter()
        .enumerate()
        .map(|(offset, step)| {
            let bytes = record(step);
            let source = Source { topic: Arc::from("raw"), partition: 0, offset: offset as i64 };
            let mut event = pipeline.enrich(&bytes, &source, NOW).expect("generated records are valid");
            let view = sessions.apply(&mut event, offset as i64, NOW);
            (view, event.anomalies)
        })
        .collect()
}

/// The counters of one session, recounted from the events themselves.
#[derive(Debug, Default)]
struct Model {
    seen: HashSet<u8>,
    sequence: u64,
    pauses: u32,
    flags: u32,
    extra: f64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn counters_equal_what_the_events_say_and_replays_are_identical(steps in prop::collection::vec(step(), 1..60)) {
        let pipeline = pipeline();
        let views = apply(&pipeline, &steps);
        let mut models: HashMap<usize, Model> = HashMap::new();
        for (step, (view, anomalies)) in steps.iter().zip(&views) {
            let model = models.entry(step.session).or_default();
            let duplicate = !model.seen.insert(step.id);
            prop_assert_eq!(view.duplicate, duplicate, "{:?}", step);
            prop_assert_eq!(anomalies.contains(&Anomaly::Duplicate), duplicate);
            if !duplicate {
                model.sequence += 1;
                // ACS records have no action status (succeeded); flat ones fail only on "failed".
                let acs = matches!(step.extra, Some(ExtraTime::Total(_)));
                let succeeded = acs || OUTCOMES[step.outcome] != "failed";
                if succeeded {
                    match ACTIONS[step.action] {
                        "reset" => {
                            model.pauses = 0;
                            model.flags = 0;
                            model.extra = 0.0;
                        }
                        "pause" => model.pauses += 1,
                        "flag" => model.flags += 1,
                        _ => {}
                    }
                    match step.extra {
                        Some(ExtraTime::Total(minutes)) => model.extra = f64::from(minutes),
                        Some(ExtraTime::Added(minutes)) => model.extra += f64::from(minutes),
                        None => {}
                    }
                }
            }
            prop_assert_eq!(view.sequence, model.sequence);
            prop_assert_eq!(view.pause_count, model.pauses);
            prop_assert_eq!(view.security_flag_count, model.flags);
            prop_assert_eq!(view.extra_time_minutes, model.extra);
            prop_assert!(view.first_seen <= view.last_seen);
            prop_assert_eq!(view.transition_valid, !anomalies.iter().any(|a| matches!(a, Anomaly::IllegalTransition | Anomaly::EventAfterFinal)) || duplicate);
        }
        prop_assert_eq!(apply(&pipeline, &steps), views, "the same input gives the same states");
    }
}
