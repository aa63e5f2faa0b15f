//! The JSON contract for consumers: camelCase names, the spec's own lowercase spellings,
//! epoch milliseconds. Spec fields are always present (`null` when absent); extras
//! (`*Raw`, `acsStatus`, `signal`, ...) appear only when they have a value.

use serde::Serialize;

use crate::model::{
    Action, ActionStatus, Actor, Anomaly, Event, ReasonCode, ReasonInfo, Shape, Signal, Source, Status,
};

/// A borrowed view of an event in the JSON contract's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventJson<'a> {
    tenant_id: &'a str,
    delivery_execution_id: &'a str,
    delivery_id: Option<&'a str>,
    message_id: &'a str,
    message_id_generated: bool,
    shape: Shape,
    actor: Option<Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_raw: Option<&'a str>,
    actor_id: Option<&'a str>,
    test_taker: Option<&'a str>,
    login: Option<&'a str>,
    name: Option<&'a str>,
    user_agent: Option<&'a str>,
    ip: Option<&'a str>,
    action: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_raw: Option<&'a str>,
    action_status: Option<ActionStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_status_raw: Option<&'a str>,
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_raw: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acs_status: Option<&'a str>,
    reason_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code_raw: Option<&'a str>,
    reason_message: Option<&'a str>,
    reason: Option<&'a ReasonInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<&'a Signal>,
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
    anomalies: &'a [Anomaly],
    source: &'a Source,
    processor: Processor,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Processor {
    version: &'static str,
    processed_at: i64,
}

/// Serializes an event to its JSON contract.
pub fn to_vec(event: &Event) -> Vec<u8> {
    let view = EventJson {
        tenant_id: &event.tenant_id,
        delivery_execution_id: &event.delivery_execution_id,
        delivery_id: event.delivery_id.as_deref(),
        message_id: &event.message_id,
        message_id_generated: event.message_id_generated,
        shape: event.shape,
        actor: event.actor,
        actor_raw: event.actor_raw.as_deref(),
        actor_id: event.actor_id.as_deref(),
        test_taker: event.test_taker.as_deref(),
        login: event.login.as_deref(),
        name: event.name.as_deref(),
        user_agent: event.user_agent.as_deref(),
        ip: event.ip.as_deref(),
        action: event.action,
        action_raw: event.action_raw.as_deref(),
        action_status: event.action_status,
        action_status_raw: event.action_status_raw.as_deref(),
        status: event.status,
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
        source: &event.source,
        processor: Processor { version: crate::VERSION, processed_at: event.processed_at },
    };
    // Serializing plain data with string keys into a Vec cannot fail.
    serde_json::to_vec(&view).expect("an event always serializes to JSON")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use crate::config::Config;
    use crate::model::{ReasonCatalog, Source};
    use crate::pipeline::Pipeline;

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
