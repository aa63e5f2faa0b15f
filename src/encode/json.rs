//! The JSON contract for consumers: camelCase names, the spec's own lowercase spellings,
//! epoch milliseconds. Spec fields are always present (`null` when absent); extras
//! (`*Raw`, `acsStatus`, `signal`, ...) appear only when they have a value.
//!
//! Written from the canonical event ([`to_vec`]: `process`, `output.format = "json"`) or
//! from its protobuf encoding ([`from_proto`]: `tail`). Both fill the one view below, so the
//! field order and the rules for absent fields are defined once; the test
//! `protobuf_gives_back_the_same_json` checks the two give the same bytes.

use serde::Serialize;
use serde_json::value::RawValue;

use super::proto::{self, pb};
use crate::model::{Event, ReasonCode, SessionView};

/// A borrowed view of an event in the JSON contract's field order. `R`, `S` and `A` are
/// how the reason, the signal and the anomalies are written: the model's own types for an
/// event, the views below for a protobuf message (with the same names and rules).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventJson<'a, R, S, A> {
    tenant_id: &'a str,
    delivery_execution_id: &'a str,
    delivery_id: Option<&'a str>,
    message_id: &'a str,
    message_id_generated: bool,
    shape: &'static str,
    actor: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_raw: Option<&'a str>,
    actor_id: Option<&'a str>,
    test_taker: Option<&'a str>,
    login: Option<&'a str>,
    name: Option<&'a str>,
    user_agent: Option<&'a str>,
    ip: Option<&'a str>,
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_raw: Option<&'a str>,
    action_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_status_raw: Option<&'a str>,
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_raw: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acs_status: Option<&'a str>,
    reason_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code_raw: Option<&'a str>,
    reason_message: Option<&'a str>,
    reason: Option<R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<S>,
    extra_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_time_total: Option<f64>,
    incident_time: i64,
    last_update: Option<i64>,
    item_id: Option<&'a str>,
    resource_link: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    incident_severity: Option<f64>,
    anomalies: &'a [A],
    /// Absent only for an event that did not go through the session state.
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a SessionView>,
    source: SourceJson<'a>,
    processor: ProcessorJson<'a>,
    /// Only for a tenant whose personal data is protected.
    #[serde(skip_serializing_if = "Option::is_none")]
    privacy: Option<PrivacyJson<'a>>,
}

/// Where a record was read (an event's `source`, an incident's).
#[derive(Serialize)]
pub(super) struct SourceJson<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProcessorJson<'a> {
    version: &'a str,
    processed_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog_version: Option<&'a str>,
}

/// `privacy`: how a tenant's personal data was protected (`[privacy]`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivacyJson<'a> {
    pub mode: &'a str,
    pub key_id: &'a str,
}

/// Serializes an event to its JSON contract.
pub fn to_vec(event: &Event) -> Vec<u8> {
    let view = EventJson {
        tenant_id: &event.tenant_id,
        delivery_execution_id: &event.delivery_execution_id,
        delivery_id: event.delivery_id.as_deref(),
        message_id: &event.message_id,
        message_id_generated: event.message_id_generated,
        shape: event.shape.as_str(),
        actor: event.actor.map(|a| a.as_str()),
        actor_raw: event.actor_raw.as_deref(),
        actor_id: event.actor_id.as_deref(),
        test_taker: event.test_taker.as_deref(),
        login: event.login.as_deref(),
        name: event.name.as_deref(),
        user_agent: event.user_agent.as_deref(),
        ip: event.ip.as_deref(),
        action: event.action.map(|a| a.as_str()),
        action_raw: event.action_raw.as_deref(),
        action_status: event.action_status.map(|a| a.as_str()),
        action_status_raw: event.action_status_raw.as_deref(),
        status: event.status.map(|s| s.as_str()),
        status_raw: event.status_raw.as_deref(),
        acs_status: event.acs_status.as_deref(),
        reason_code: event.reason_code.numeric(),
        reason_code_raw: match &event.reason_code {
            ReasonCode::Raw(raw) => Some(raw),
            _ => None,
        },
        reason_message: event.reason_message.as_deref(),
        reason: event.reason.as_deref(),
        signal: event.signal.as_ref(),
        extra_time: event.extra_time,
        extra_time_total: event.extra_time_total,
        incident_time: event.incident_time,
        last_update: event.last_update,
        item_id: event.item_id.as_deref(),
        resource_link: event.resource_link.as_deref(),
        attempt_number: event.attempt_number,
        incident_severity: event.incident_severity,
        anomalies: &event.anomalies,
        session: event.session.as_ref(),
        source: SourceJson {
            topic: &event.source.topic,
            partition: event.source.partition,
            offset: event.source.offset,
        },
        processor: ProcessorJson {
            version: crate::VERSION,
            processed_at: event.processed_at,
            rules_version: event.stamp.as_ref().map(|s| &*s.rules_version),
            catalog_version: event.stamp.as_ref().map(|s| &*s.catalog_version),
        },
        privacy: event.privacy.as_ref().map(|p| PrivacyJson { mode: p.mode, key_id: &p.key_id }),
    };
    // Serializing plain data with string keys into a Vec cannot fail.
    serde_json::to_vec(&view).expect("an event always serializes to JSON")
}

/// Why a protobuf event cannot be written in the JSON contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FromProtoError {
    /// An enum number this build does not know (a newer schema), or `UNSPECIFIED` where the
    /// contract needs a value.
    #[error("{field}: no JSON spelling for enum value {value}")]
    Enum { field: &'static str, value: i32 },
    #[error("signal.data_json is not one JSON document: {0}")]
    Data(String),
}

/// The catalog entry as [`crate::model::ReasonInfo`] writes it.
#[derive(Serialize)]
struct ReasonJson<'a> {
    category: &'static str,
    cause: &'a str,
    description: Option<&'a str>,
}

/// The signal as [`crate::model::Signal`] writes it (same names, same rules).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignalJson<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    about: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issue: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    processes: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_format: Option<&'a str>,
}

/// An enum field: its spelling, `None` for `UNSPECIFIED`, an error for a number this build
/// does not know.
fn spelled<P: TryFrom<i32>, M, T>(
    field: &'static str,
    value: i32,
    model: impl Fn(P) -> Option<M>,
    spell: impl Fn(M) -> T,
) -> Result<Option<T>, FromProtoError> {
    let known = P::try_from(value).map_err(|_| FromProtoError::Enum { field, value })?;
    Ok(model(known).map(spell))
}

/// A field the contract always has: `UNSPECIFIED` is an error.
fn required(field: &'static str, value: i32, spelling: Option<&'static str>) -> Result<&'static str, FromProtoError> {
    spelling.ok_or(FromProtoError::Enum { field, value })
}

/// Writes a protobuf `acs.v1.EnrichedEvent` in the JSON contract: the same bytes
/// [`to_vec`] writes for the event it was encoded from (protobuf carries every field; its
/// enum numbers become the spec's spellings, the structured payload `data_json` is embedded
/// as JSON, an empty reason description is `null` as the catalog never holds an empty one).
/// The processor version is the one in the message, not this build's.
pub fn from_proto(event: &pb::EnrichedEvent) -> Result<Vec<u8>, FromProtoError> {
    use pb::action_status::Value;
    let action_status = match event.action_status.as_ref().and_then(|a| a.value.as_ref()) {
        None => None,
        Some(Value::Succeeded(_)) => Some("succeeded"),
        Some(Value::Failed(_)) => Some("failed"),
        Some(Value::Session(status)) => Some(required(
            "action_status.session",
            *status,
            spelled("action_status.session", *status, proto::model_status, |s| s.as_str())?,
        )?),
        Some(Value::Other(_)) => Some(crate::model::ActionStatus::Other.as_str()),
    };
    let reason = match &event.reason {
        None => None,
        Some(reason) => Some(ReasonJson {
            category: required(
                "reason.category",
                reason.category,
                spelled("reason.category", reason.category, proto::model_category, |c| c.as_str())?,
            )?,
            cause: &reason.cause,
            description: Some(reason.description.as_str()).filter(|d| !d.is_empty()),
        }),
    };
    let signal = match &event.signal {
        None => None,
        Some(signal) => Some(SignalJson {
            kind: required(
                "signal.kind",
                signal.kind,
                spelled("signal.kind", signal.kind, proto::model_signal_kind, |k| k.as_str())?,
            )?,
            command: signal.command.as_deref(),
            about: signal.about.as_deref(),
            issue: signal.issue.as_deref(),
            processes: &signal.processes,
            tags: &signal.tags,
            data: match signal.data_json.as_deref() {
                None => None,
                Some(text) => {
                    Some(serde_json::from_str(text).map_err(|error| FromProtoError::Data(error.to_string()))?)
                }
            },
            data_format: signal.data_format.as_deref(),
        }),
    };
    let session = match &event.session {
        None => None,
        Some(session) => Some(SessionView {
            status_before: spelled("session.status_before", session.status_before, proto::model_status, |s| s)?,
            status_after: spelled("session.status_after", session.status_after, proto::model_status, |s| s)?,
            transition_valid: session.transition_valid,
            sequence: session.sequence,
            pause_count: session.pause_count,
            security_flag_count: session.security_flag_count,
            extra_time_minutes: session.extra_time_minutes,
            first_seen: session.first_seen,
            last_seen: session.last_seen,
            duplicate: session.duplicate,
        }),
    };
    let source = event.source.as_ref();
    let view = EventJson {
        tenant_id: &event.tenant_id,
        delivery_execution_id: &event.delivery_execution_id,
        delivery_id: event.delivery_id.as_deref(),
        message_id: &event.message_id,
        message_id_generated: event.message_id_generated,
        shape: required("shape", event.shape, spelled("shape", event.shape, proto::model_shape, |s| s.as_str())?)?,
        actor: spelled("actor", event.actor, proto::model_actor, |a| a.as_str())?,
        actor_raw: event.actor_raw.as_deref(),
        actor_id: event.actor_id.as_deref(),
        test_taker: event.test_taker.as_deref(),
        login: event.login.as_deref(),
        name: event.name.as_deref(),
        user_agent: event.user_agent.as_deref(),
        ip: event.ip.as_deref(),
        action: spelled("action", event.action, proto::model_action, |a| a.as_str())?,
        action_raw: event.action_raw.as_deref(),
        action_status,
        action_status_raw: event.action_status_raw.as_deref(),
        status: spelled("status", event.status, proto::model_status, |s| s.as_str())?,
        status_raw: event.status_raw.as_deref(),
        acs_status: event.acs_status.as_deref(),
        reason_code: event.reason_code,
        reason_code_raw: event.reason_code_raw.as_deref(),
        reason_message: event.reason_message.as_deref(),
        reason,
        signal,
        extra_time: event.extra_time,
        extra_time_total: event.extra_time_total,
        incident_time: event.incident_time,
        last_update: event.last_update,
        item_id: event.item_id.as_deref(),
        resource_link: event.resource_link.as_deref(),
        attempt_number: event.attempt_number,
        incident_severity: event.incident_severity,
        anomalies: &event.anomalies,
        session: session.as_ref(),
        source: SourceJson {
            topic: source.map_or("", |s| &s.topic),
            partition: source.map_or(0, |s| s.partition),
            offset: source.map_or(0, |s| s.offset),
        },
        processor: ProcessorJson {
            version: &event.processor_version,
            processed_at: event.processed_at,
            rules_version: Some(event.rules_version.as_str()).filter(|v| !v.is_empty()),
            catalog_version: Some(event.catalog_version.as_str()).filter(|v| !v.is_empty()),
        },
        privacy: event.privacy.as_ref().map(|p| PrivacyJson { mode: &p.mode, key_id: &p.key_id }),
    };
    Ok(serde_json::to_vec(&view).expect("an event always serializes to JSON"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;
    use serde_json::{Value, json};

    use crate::config::Config;
    use crate::encode::proto::{self, pb};
    use crate::model::{ReasonCatalog, SignalKind, Source};
    use crate::pipeline::Pipeline;
    use crate::synth::{Generator, SynthOptions};

    fn event_json(value: &str) -> Value {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let source = Source { topic: Arc::from("raw"), partition: 2, offset: 9 };
        let event = pipeline.enrich(value.as_bytes(), &source, 1_767_261_400_000).expect("valid");
        serde_json::from_slice(&super::to_vec(&event)).unwrap()
    }

    #[test]
    fn the_contract_fields_are_always_present_with_the_spec_spellings() {
        let event = event_json(
            r#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"actor":"test-taker","action":"pause",
                "actionStatus":"succeeded","status":"paused","reasonCode":"20060",
                "reasonMessage":"[Pause On Blur] Test taker tried to move to a different tab/app."}"#,
        );
        for field in [
            "tenantId",
            "deliveryExecutionId",
            "deliveryId",
            "messageId",
            "actor",
            "action",
            "actionStatus",
            "status",
            "reasonCode",
            "reasonMessage",
            "incidentTime",
            "itemId",
            "testTaker",
            "userAgent",
            "ip",
            "reason",
            "anomalies",
            "source",
        ] {
            assert!(event.get(field).is_some(), "{field} missing from {event}");
        }
        assert_eq!(event["actor"], "test-taker");
        assert_eq!(event["action"], "pause");
        assert_eq!(event["actionStatus"], "succeeded");
        assert_eq!((&event["status"], &event["statusRaw"]), (&json!("suspended"), &json!("paused")));
        assert_eq!(event["reasonCode"], 20060);
        assert_eq!(
            event["reason"],
            json!({"category": "EXAMINEE", "cause": "NAVIGATION", "description": "Events related to full-screen mode or tab changes."})
        );
        assert_eq!(event["signal"], json!({"kind": "pause-on-blur"}));
        assert_eq!(event["incidentTime"], 1_767_261_300_000_i64);
        assert_eq!(event["source"], json!({"topic": "raw", "partition": 2, "offset": 9}));
        assert_eq!((&event["itemId"], &event["ip"]), (&Value::Null, &Value::Null), "absent spec fields are null");
        assert!(event.get("actorRaw").is_none() && event.get("reasonCodeRaw").is_none(), "extras only when set");
    }

    /// Every line of the golden inputs and of the shipped sample, plus synthetic traffic
    /// (stack traces, malformed records and every upstream shape).
    fn corpus() -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("tests/data/sample.jsonl")];
        for case in std::fs::read_dir(root.join("tests/golden")).unwrap() {
            files.push(case.unwrap().path().join("input.jsonl"));
        }
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for file in files.iter().filter(|file| file.is_file()) {
            let bytes = std::fs::read(file).unwrap();
            lines.extend(bytes.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec()));
        }
        for (seed, tenants, stack_trace_ratio) in [(1, 4, 0.05), (2, 9, 0.3), (3, 1, 0.0)] {
            let options = SynthOptions { seed, tenants, stack_trace_ratio, ..SynthOptions::stress() };
            lines.extend(Generator::new(options).take_records(2_000).into_iter().map(|record| record.value));
        }
        lines
    }

    #[test]
    fn protobuf_gives_back_the_same_json() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let mut events = 0;
        let mut keys = std::collections::BTreeSet::new();
        let mut kinds = std::collections::BTreeSet::new();
        let mut sessions = pipeline.sessions();
        let mut session_firsts = 0;
        for (offset, value) in corpus().iter().enumerate() {
            let source =
                Source { topic: Arc::from("acs.raw"), partition: (offset % 7) as i32 - 1, offset: offset as i64 };
            // Late enough for every synthetic record, early enough for the golden ones.
            let now = 1_767_261_400_000 + 86_400_000;
            let Ok(mut event) = pipeline.enrich(value, &source, now) else { continue };
            // Every other event without its session view: both forms are part of the contract.
            if offset % 2 == 0 {
                event.session = Some(sessions.apply(&mut event, offset as i64, now));
                session_firsts += usize::from(event.session.as_ref().unwrap().status_before.is_none());
            }
            let json = super::to_vec(&event);
            let message = pb::EnrichedEvent::decode(proto::to_vec(&event, 0).as_slice()).unwrap();
            let back = super::from_proto(&message).unwrap();
            assert_eq!(String::from_utf8(back).unwrap(), String::from_utf8(json.clone()).unwrap());
            let parsed: Value = serde_json::from_slice(&json).unwrap();
            keys.extend(parsed.as_object().unwrap().keys().cloned());
            if let Some(kind) = parsed["signal"]["kind"].as_str() {
                kinds.insert(kind.to_owned());
                keys.extend(parsed["signal"].as_object().unwrap().keys().map(|k| format!("signal.{k}")));
            }
            if let Some(session) = parsed["session"].as_object() {
                keys.extend(session.keys().map(|k| format!("session.{k}")));
            }
            events += 1;
        }
        assert!(events > 6_000, "{events} events");
        assert!(session_firsts > 10, "first events of sessions (no status before): {session_firsts}");
        // The corpus holds every optional field and every signal kind: none is left untested.
        for key in [
            "actorRaw",
            "actionRaw",
            "actionStatusRaw",
            "statusRaw",
            "acsStatus",
            "reasonCodeRaw",
            "extraTimeTotal",
            "attemptNumber",
            "incidentSeverity",
            "signal.command",
            "signal.about",
            "signal.issue",
            "signal.processes",
            "signal.tags",
            "signal.data",
            "signal.dataFormat",
            "session",
            "session.statusBefore",
            "session.duplicate",
        ] {
            assert!(keys.contains(key), "{key} never seen in the corpus");
        }
        let all_kinds: Vec<&str> = SignalKind::ALL.iter().map(|kind| kind.as_str()).collect();
        for kind in &all_kinds {
            assert!(kinds.contains(*kind), "signal {kind} never seen in the corpus");
        }
        assert_eq!(kinds.len(), all_kinds.len());
    }

    #[test]
    fn a_protobuf_event_without_a_json_spelling_is_an_error() {
        let event = pb::EnrichedEvent { shape: pb::Shape::Flat as i32, actor: 99, ..Default::default() };
        assert_eq!(super::from_proto(&event), Err(super::FromProtoError::Enum { field: "actor", value: 99 }));
        let event = pb::EnrichedEvent::default();
        assert_eq!(super::from_proto(&event), Err(super::FromProtoError::Enum { field: "shape", value: 0 }));
        let signal = pb::Signal {
            kind: pb::SignalKind::StructuredData as i32,
            data_json: Some("{\"a\":".into()),
            ..Default::default()
        };
        let event = pb::EnrichedEvent { shape: pb::Shape::Flat as i32, signal: Some(signal), ..Default::default() };
        assert!(matches!(super::from_proto(&event), Err(super::FromProtoError::Data(_))));
        let event = pb::EnrichedEvent {
            shape: pb::Shape::Acs as i32,
            action_status: Some(pb::ActionStatus { value: Some(pb::action_status::Value::Session(0)) }),
            ..Default::default()
        };
        assert_eq!(
            super::from_proto(&event),
            Err(super::FromProtoError::Enum { field: "action_status.session", value: 0 })
        );
    }

    #[test]
    fn a_protobuf_event_keeps_its_own_processor_version() {
        let event = pb::EnrichedEvent {
            shape: pb::Shape::Log as i32,
            processor_version: "9.9.9".into(),
            processed_at: 7,
            ..Default::default()
        };
        let json: Value = serde_json::from_slice(&super::from_proto(&event).unwrap()).unwrap();
        assert_eq!(json["processor"], json!({"version": "9.9.9", "processedAt": 7}));
        assert_eq!(
            json["source"],
            json!({"topic": "", "partition": 0, "offset": 0}),
            "an absent source is the default"
        );
        assert_eq!((&json["actor"], &json["shape"]), (&Value::Null, &json!("log")));
    }

    #[test]
    fn protobuf_enum_names_never_leak() {
        let event = event_json(
            r#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"actor":"deliver-fe","action":"log",
                "actionStatus":"interacting","reasonCode":"N52","reasonMessage":"[deliver-fe] boom [item-1]"}"#,
        );
        let text = event.to_string();
        for leaked in ["ACTOR_", "ACTION_", "STATUS_", "SIGNAL_KIND", "REASON_CATEGORY", "SHAPE_", "Other", "DeliverFe"]
        {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
        assert_eq!((&event["reasonCode"], &event["reasonCodeRaw"]), (&Value::Null, &json!("N52")));
        assert_eq!(event["actionStatus"], "interacting");
        assert_eq!(event["anomalies"], json!(["non_numeric_reason_code"]));
        assert_eq!(event["signal"], json!({"kind": "deliver-fe", "tags": ["item-1"]}));
    }
}
