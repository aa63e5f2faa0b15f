//! The session changelog's records: one session's state as `acs.v1.SessionState` protobuf
//! (proto/acs/v1/session.proto), and back.
//!
//! The key is `{input topic}/{session id}` (the session id is the delivery execution id):
//! changelog partition N holds the sessions of partition N of every input topic (a regex
//! subscription reads several), so the same session id in two input topics must be two keys,
//! or compaction would keep only one of them and a tombstone (which has no value to say
//! whose it is) would forget both. A topic name cannot contain `/`: the key splits at its
//! first one.
//!
//! The value holds the session's rule state too (`rules`, absent without one), and the
//! alerts kept for a replay: a restored session counts on where it stopped.

use std::sync::Arc;

use prost::Message;

use super::SessionState;
use super::store::RecentIds;
use crate::encode::AlertEncoder;
use crate::encode::proto::pb;
use crate::incidents::{Incident, Priority, RuleTally};
use crate::model::{SignalKind, Status};
use crate::rules::engine::{Distinct, Window};
use crate::rules::{Alert, Evidence, RuleState};
use crate::session::{Fired, SessionRules};

/// A changelog record that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("not an acs.v1.SessionState: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The key does not name an input topic (the session id is not repeated here: it is
    /// personal data).
    #[error("a key without its input topic (expected `{{input topic}}/{{session id}}`)")]
    Key,
    /// A rule window's group is none this version knows (groups are signal kind spellings,
    /// `none` or empty: no personal data).
    #[error("the window of rule {rule} has an unknown group {group:?} (expected a signal kind, `none` or empty)")]
    Group { rule: String, group: String },
    /// A kept alert or a window's evidence with a value outside the alert contract.
    #[error("the rule state holds an alert or evidence outside the alert contract (unknown severity or action)")]
    Alert,
    /// An incident with a priority this version does not know.
    #[error("the session's incident has an unknown priority floor")]
    Incident,
}

/// The changelog key of the session `id` of the input topic `topic`.
pub fn key(topic: &str, id: &str) -> String {
    let mut key = String::with_capacity(topic.len() + 1 + id.len());
    key.push_str(topic);
    key.push('/');
    key.push_str(id);
    key
}

/// The input topic and the session id of a changelog key.
pub fn split_key(key: &str) -> Result<(&str, &str), ChangelogError> {
    // A byte search: `str::split_once` costs a `memcmp` call per match, and a restore splits
    // up to millions of keys.
    match key.bytes().position(|byte| byte == b'/') {
        Some(at) if at > 0 => Ok((&key[..at], &key[at + 1..])),
        _ => Err(ChangelogError::Key),
    }
}

/// The input partition a session's events are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPartition {
    pub topic: String,
    pub partition: i32,
}

/// The changelog value of one session.
pub fn encode(state: &SessionState, input: &InputPartition) -> Vec<u8> {
    pb::SessionState {
        input_topic: input.topic.clone(),
        input_partition: input.partition,
        tenant_id: state.tenant_id.to_string(),
        status: state.status.map_or("", Status::as_str).to_owned(),
        sequence: state.sequence,
        pause_count: state.pause_count,
        security_flag_count: state.security_flag_count,
        extra_time_minutes: state.extra_time_minutes,
        first_seen: state.first_seen,
        last_seen: state.last_seen,
        touched_at: state.touched_at,
        finished_at: state.finished_at,
        applied_offset: state.applied_offset,
        recent_ids: state.recent_ids.as_raw().to_vec(),
        // Nothing allocated for a session without rule state (most of them).
        rules: state.rules.as_deref().map(rules_to_proto),
        silent: state.silent,
        silence_alerted_at: state.silence_alerted_at,
    }
    .encode_to_vec()
}

fn rules_to_proto(rules: &SessionRules) -> pb::session_state::RuleState {
    let state = &rules.state;
    pb::session_state::RuleState {
        watermark: state.watermark,
        ip_hashes: state.ips.as_raw().to_vec(),
        user_agent_hashes: state.user_agents.as_raw().to_vec(),
        extra_time_minutes: state.extra_time_minutes,
        windows: state
            .windows
            .iter()
            .map(|window| pb::session_state::Window {
                rule: window.rule.to_string(),
                group: window.group.to_owned(),
                matches: window.matches.iter().map(Evidence::to_proto).collect(),
                last_fired: window.last_fired,
            })
            .collect(),
        fired: rules
            .fired
            .iter()
            .map(|fired| pb::session_state::Fired { position: fired.position, alert: fired.alert.proto().to_vec() })
            .collect(),
        incident: rules.incident.as_deref().map(incident_to_proto),
    }
}

fn incident_to_proto(incident: &Incident) -> pb::session_state::IncidentState {
    pb::session_state::IncidentState {
        revision: incident.revision,
        alert_count: incident.alert_count,
        folded_alert_count: incident.folded,
        by_rule: (incident.by_rule.iter())
            .map(|tally| pb::session_state::RuleTally {
                rule: tally.rule.to_string(),
                count: tally.count,
                points: tally.points,
            })
            .collect(),
        level: incident.level,
        level_at: incident.level_at,
        peak: incident.peak,
        floor: incident.floor.to_raw(),
        first_alert_at: incident.first_alert_at,
        last_alert_at: incident.last_alert_at,
        updated_at: incident.updated_at,
        updated_position: incident.updated_position,
        budget_hour: incident.budget_hour,
        budget_used: incident.budget_used,
        session_status: incident.session_status.map_or("", Status::as_str).to_owned(),
    }
}

fn incident_from_proto(message: pb::session_state::IncidentState) -> Result<Incident, ChangelogError> {
    Ok(Incident {
        revision: message.revision,
        alert_count: message.alert_count,
        folded: message.folded_alert_count,
        by_rule: (message.by_rule.into_iter())
            .map(|tally| RuleTally { rule: Arc::from(tally.rule), count: tally.count, points: tally.points })
            .collect(),
        level: message.level,
        level_at: message.level_at,
        peak: message.peak,
        floor: Priority::from_raw(message.floor).ok_or(ChangelogError::Incident)?,
        first_alert_at: message.first_alert_at,
        last_alert_at: message.last_alert_at,
        updated_at: message.updated_at,
        updated_position: message.updated_position,
        budget_hour: message.budget_hour,
        budget_used: message.budget_used,
        session_status: match message.session_status.as_str() {
            "" => None,
            spelled => Some(Status::parse(spelled).value),
        },
    })
}

/// The group spelled `group` (see [`Window::group`]), as the engine holds it.
fn static_group(group: &str) -> Option<&'static str> {
    match group {
        "" => Some(""),
        "none" => Some("none"),
        _ => SignalKind::ALL.iter().map(|kind| kind.as_str()).find(|kind| *kind == group),
    }
}

fn rules_from_proto(
    message: pb::session_state::RuleState,
    alerts: &AlertEncoder,
) -> Result<SessionRules, ChangelogError> {
    let windows = message
        .windows
        .into_iter()
        .map(|window| {
            let Some(group) = static_group(&window.group) else {
                return Err(ChangelogError::Group { rule: window.rule, group: window.group });
            };
            let matches = window.matches.into_iter().map(Evidence::from_proto).collect::<Option<_>>();
            Ok(Window::new(Arc::from(window.rule), group, matches.ok_or(ChangelogError::Alert)?, window.last_fired))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fired = message
        .fired
        .into_iter()
        .map(|fired| {
            // An absent alert is refused like any alert outside the contract (no severity).
            let message = pb::Alert::decode(fired.alert.as_slice()).map_err(|_| ChangelogError::Alert)?;
            // Published again as first stamped (by the configuration that fired it).
            let stamped = crate::encode::stamp::AlertStamp::fields(&message);
            let alert = Alert::from_proto(message).ok_or(ChangelogError::Alert)?;
            let stamp = crate::encode::stamp::AlertStamp::of(&stamped);
            let alert = alert.with_view(|view| alerts.record_stamped(view, stamp.as_ref()));
            Ok(Fired { position: fired.position, alert })
        })
        .collect::<Result<Vec<_>, ChangelogError>>()?;
    Ok(SessionRules {
        state: RuleState {
            watermark: message.watermark,
            ips: Distinct::from_raw(message.ip_hashes),
            user_agents: Distinct::from_raw(message.user_agent_hashes),
            extra_time_minutes: message.extra_time_minutes,
            windows,
            prune_due: Default::default(),
        },
        fired,
        incident: message.incident.map(incident_from_proto).transpose()?.map(Box::new),
    })
}

/// Reads changelog values back into session states, reusing one message's buffers from value
/// to value: a restore decodes up to millions of them in a row.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    message: pb::SessionState,
}

impl Decoder {
    /// The session's state in `value` if it belongs to the input partition `topic`/`partition`
    /// (`None`: another's), its tenant id given by `tenant` (shared, not allocated per session).
    pub fn decode(
        &mut self,
        value: &[u8],
        topic: &str,
        partition: i32,
        tenant: impl FnOnce(&str) -> Arc<str>,
        alerts: &AlertEncoder,
    ) -> Result<Option<SessionState>, ChangelogError> {
        let message = &mut self.message;
        // Cleared, not dropped: the strings and the ids' buffer keep their capacity.
        message.clear();
        message.merge(value)?;
        if message.input_topic != topic || message.input_partition != partition {
            return Ok(None);
        }
        let status = match message.status.as_str() {
            "" => None,
            spelled => Some(Status::parse(spelled).value),
        };
        // Moved out: the rule state's buffers become the state's own.
        let rules = message.rules.take().map(|rules| rules_from_proto(rules, alerts)).transpose()?.map(Box::new);
        Ok(Some(SessionState {
            tenant_id: tenant(&message.tenant_id),
            status,
            sequence: message.sequence,
            pause_count: message.pause_count,
            security_flag_count: message.security_flag_count,
            extra_time_minutes: message.extra_time_minutes,
            first_seen: message.first_seen,
            last_seen: message.last_seen,
            touched_at: message.touched_at,
            finished_at: message.finished_at,
            applied_offset: message.applied_offset,
            // A copy of exactly the ids' length: the state's own buffer.
            recent_ids: RecentIds::from_raw(message.recent_ids.clone()),
            rules,
            silent: message.silent,
            silence_alerted_at: message.silence_alerted_at,
            dirty: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::rules::alert::evidence_sample as evidence;
    use crate::rules::{EvidenceCode, Severity};

    fn state() -> SessionState {
        SessionState {
            tenant_id: "acme".into(),
            status: Some(Status::Suspended),
            sequence: 7,
            pause_count: 2,
            security_flag_count: 1,
            extra_time_minutes: 22.5,
            first_seen: 1_767_261_000_000,
            last_seen: 1_767_261_060_000,
            touched_at: 1_767_261_400_000,
            finished_at: None,
            applied_offset: 41,
            recent_ids: RecentIds::from_raw(vec![u64::MAX, 3 << 16 | 7]),
            rules: None,
            silent: true,
            silence_alerted_at: Some(1_767_261_360_000),
            dirty: false,
        }
    }

    /// A full rule state: two windows with evidence (one grouped by signal, one cooling
    /// down), distinct IPs and user agents, two kept alerts.
    fn rules() -> SessionRules {
        let t0 = 1_767_261_000_000;
        let mut raw = evidence("m3", t0 + 20_000, 43);
        raw.reason_code = Some(EvidenceCode::Raw(Box::from("N52")));
        raw.action = None;
        let mut bare = evidence("m4", t0 + 30_000, 44);
        bare.reason_code = None;
        let fired =
            |alert: Alert| Fired { position: 40, alert: alert.with_view(|view| AlertEncoder::default().record(view)) };
        let alert = |rule: &str, severity, delivery: Option<&str>, evidence: Vec<Evidence>| Alert {
            alert_id: crate::rules::alert::alert_id(rule, "s", "", &evidence[0]),
            rule_id: Arc::from(rule),
            severity,
            tenant_id: "acme".into(),
            delivery_execution_id: delivery.map(str::to_owned),
            test_taker: delivery.map(|_| "student1".to_owned()),
            title: "t".into(),
            summary: "s".into(),
            count: evidence.len() as u32,
            window_start: evidence[0].incident_time,
            window_end: evidence[evidence.len() - 1].incident_time,
            fired_at: evidence[evidence.len() - 1].incident_time,
            evidence,
            mode: crate::rules::RuleMode::Live,
        };
        SessionRules {
            state: RuleState {
                watermark: Some(t0 + 30_000),
                ips: Distinct::from_raw(vec![1, u64::MAX]),
                user_agents: Distinct::from_raw(vec![7]),
                extra_time_minutes: 12.5,
                windows: vec![
                    Window::new(
                        Arc::from("repeated-pauses"),
                        "",
                        VecDeque::from([evidence("m1", t0, 41), raw]),
                        Some(t0 - 60_000),
                    ),
                    Window::new(
                        Arc::from("security-signals"),
                        SignalKind::PauseOnBlur.as_str(),
                        VecDeque::from([bare]),
                        None,
                    ),
                    Window::new(Arc::from("no-signal"), "none", VecDeque::new(), Some(t0)),
                ],
                prune_due: Default::default(),
            },
            fired: vec![
                fired(alert("repeated-pauses", Severity::Medium, Some("u#d#h#acme"), vec![evidence("m0", t0, 40)])),
                fired(alert(
                    "tenant-rule",
                    Severity::Critical,
                    None,
                    vec![evidence("m0", t0, 40), evidence("m", t0, 9)],
                )),
            ],
            incident: Some(Box::new(Incident {
                revision: 3,
                alert_count: 4,
                folded: 1,
                by_rule: vec![
                    RuleTally { rule: Arc::from("ip-change"), count: 1, points: 25 },
                    RuleTally { rule: Arc::from("security-flag"), count: 3, points: 16 },
                ],
                level: 37.25,
                level_at: t0 + 20_000,
                peak: 41.5,
                floor: Priority::High,
                first_alert_at: Some(t0),
                last_alert_at: Some(t0 + 20_000),
                updated_at: t0 + 30_000,
                updated_position: 40,
                budget_hour: 1,
                budget_used: 3,
                session_status: Some(Status::Suspended),
            })),
        }
    }

    #[test]
    fn a_session_round_trips() {
        let input = InputPartition { topic: "acs.raw".into(), partition: 3 };
        let mut decoder = Decoder::default();
        let shared: Arc<str> = Arc::from("acme");
        let tenant = |tenant: &str| {
            assert_eq!(tenant, "acme");
            shared.clone()
        };
        // The second value has fewer fields set: nothing of the first one stays.
        let full = SessionState { finished_at: Some(5), rules: Some(Box::new(rules())), ..state() };
        for state in [full, SessionState { status: None, recent_ids: RecentIds::default(), ..state() }] {
            let value = encode(&state, &input);
            let back = decoder.decode(&value, "acs.raw", 3, tenant, &AlertEncoder::default()).unwrap();
            assert_eq!(back.as_ref(), Some(&state));
            assert_eq!(back.as_ref().unwrap().rules.is_some(), state.rules.is_some());
            assert!(Arc::ptr_eq(&back.unwrap().tenant_id, &shared), "the shared tenant id");
            // Another input partition's: not decoded into a state.
            assert_eq!(decoder.decode(&value, "acs.raw", 4, tenant, &AlertEncoder::default()).unwrap(), None);
            assert_eq!(decoder.decode(&value, "acs.raw.b", 3, tenant, &AlertEncoder::default()).unwrap(), None);
        }
    }

    #[test]
    fn a_key_names_the_input_topic_then_the_session() {
        let key = key("acs.raw", "dIresu#d1/x#h1#acme");
        assert_eq!(key, "acs.raw/dIresu#d1/x#h1#acme");
        // Split at the first '/': a topic name has none, a session id may.
        assert_eq!(split_key(&key).unwrap(), ("acs.raw", "dIresu#d1/x#h1#acme"));
        for bare in ["dIresu#d1#h1#acme", "/dIresu#d1#h1#acme", ""] {
            assert!(matches!(split_key(bare), Err(ChangelogError::Key)), "{bare:?}");
        }
    }

    #[test]
    fn unreadable_values_are_refused() {
        let decoded = Decoder::default().decode(
            b"\xff\xff\xff",
            "acs.raw",
            0,
            |tenant| Arc::from(tenant),
            &AlertEncoder::default(),
        );
        assert!(matches!(decoded, Err(ChangelogError::Decode(_))));
    }

    #[test]
    fn rule_state_this_version_cannot_hold_is_refused() {
        let input = InputPartition { topic: "acs.raw".into(), partition: 0 };
        let value = encode(&SessionState { rules: Some(Box::new(rules())), ..state() }, &input);
        let decode = |message: &pb::SessionState| {
            let alerts = AlertEncoder::default();
            Decoder::default().decode(&message.encode_to_vec(), "acs.raw", 0, |tenant| Arc::from(tenant), &alerts)
        };
        let message = pb::SessionState::decode(value.as_slice()).unwrap();
        assert!(decode(&message).unwrap().is_some());

        let mut unknown_group = message.clone();
        unknown_group.rules.as_mut().unwrap().windows[1].group = "a-newer-kind".into();
        let error = decode(&unknown_group).unwrap_err();
        assert!(matches!(&error, ChangelogError::Group { group, .. } if group == "a-newer-kind"), "{error}");
        assert_eq!(
            error.to_string(),
            "the window of rule security-signals has an unknown group \"a-newer-kind\" (expected a signal kind, \
             `none` or empty)"
        );

        let mut unknown_action = message.clone();
        unknown_action.rules.as_mut().unwrap().windows[0].matches[0].action = 999;
        assert!(matches!(decode(&unknown_action), Err(ChangelogError::Alert)));
        let mut unknown_severity = message.clone();
        let fired = &mut unknown_severity.rules.as_mut().unwrap().fired[0];
        let mut alert = pb::Alert::decode(fired.alert.as_slice()).unwrap();
        alert.severity = 99;
        fired.alert = alert.encode_to_vec();
        assert!(matches!(decode(&unknown_severity), Err(ChangelogError::Alert)));
        let mut no_alert = message.clone();
        no_alert.rules.as_mut().unwrap().fired[1].alert = Vec::new();
        assert!(matches!(decode(&no_alert), Err(ChangelogError::Alert)));
        let mut unknown_priority = message.clone();
        unknown_priority.rules.as_mut().unwrap().incident.as_mut().unwrap().floor = 17;
        assert!(matches!(decode(&unknown_priority), Err(ChangelogError::Incident)));
        let mut not_an_alert = message;
        not_an_alert.rules.as_mut().unwrap().fired[1].alert = vec![0xff, 0xff];
        assert!(matches!(decode(&not_an_alert), Err(ChangelogError::Alert)));
    }
}
