//! The four upstream shapes → one set of [`Parts`]: which raw field holds which canonical
//! field, and under which name (for error details). No validation happens here; it only
//! moves fields, so every shape then goes through the same checks in the same order.

use super::raw::{AcsControl, ActorIdentity, DeliveryExecution, Envelope, Field, Opt, ReasonObject, Scalar};
use crate::model::{ActionStatus, Actor, Shape};

/// One raw field and its name in the input.
#[derive(Debug, Default)]
pub struct Slot<'a> {
    pub path: &'static str,
    pub value: Option<Field<'a>>,
}

impl<'a> Slot<'a> {
    fn new(path: &'static str, value: Opt<'a>) -> Slot<'a> {
        Slot { path, value: value.0 }
    }

    /// The first of two spellings that is present.
    fn either(first: Slot<'a>, second: Slot<'a>) -> Slot<'a> {
        if first.value.is_some() || second.value.is_none() { first } else { second }
    }
}

/// A nested object that should be an object but is not (reported as `invalid_field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadContainer {
    pub path: &'static str,
    pub found: &'static str,
}

/// Canonical fields, still raw, from whichever shape.
#[derive(Debug, Default)]
pub struct Parts<'a> {
    pub shape: Option<Shape>,
    pub execution_id: Slot<'a>,
    /// Further fields that also name the delivery execution (`_id`, ...): they must agree.
    pub other_execution_ids: [Slot<'a>; 2],
    pub tenant_id: Slot<'a>,
    pub time: Slot<'a>,
    pub delivery_id: Slot<'a>,
    pub message_id: Slot<'a>,
    pub actor: Slot<'a>,
    /// Set by the shape itself (ACS messages are proctor actions).
    pub fixed_actor: Option<Actor>,
    pub actor_id: Slot<'a>,
    pub test_taker: Slot<'a>,
    pub login: Slot<'a>,
    pub name: Slot<'a>,
    pub user_agent: Slot<'a>,
    pub ip: Slot<'a>,
    pub action: Slot<'a>,
    pub action_status: Slot<'a>,
    pub fixed_action_status: Option<ActionStatus>,
    pub status: Slot<'a>,
    pub acs_status: Slot<'a>,
    pub reason_code: Slot<'a>,
    pub reason_message: Slot<'a>,
    pub extra_time_added: Slot<'a>,
    pub extra_time_total: Slot<'a>,
    pub last_update: Slot<'a>,
    pub item_id: Slot<'a>,
    pub resource_link: Slot<'a>,
    pub attempt_number: Slot<'a>,
    pub incident_severity: Slot<'a>,
    pub bad_containers: Vec<BadContainer>,
}

impl Parts<'_> {
    pub fn shape(&self) -> Shape {
        self.shape.unwrap_or(Shape::Flat)
    }

    /// "(`x` is a string; expected an object)" for containers on the way to `path`.
    pub fn container_note(&self, prefix: &str) -> String {
        self.bad_containers
            .iter()
            .filter(|c| prefix.starts_with(c.path))
            .map(|c| format!(" (`{}` is {}; expected an object)", c.path, c.found))
            .collect()
    }
}

/// Which shape a parsed record is.
pub fn detect(envelope: &Envelope<'_>) -> Shape {
    if envelope.acs_control.is_some() {
        return Shape::Acs;
    }
    // An object `action` alone is not enough: a flat record may carry a malformed one.
    let control = envelope.actor_identity.is_some()
        || envelope.delivery_execution.is_some()
        || (matches!(envelope.action.0, Some(Field::Object(_))) && envelope.timestamp.is_some());
    if !control {
        return Shape::Flat;
    }
    match &envelope.action.0 {
        Some(Field::Object(action)) => match &action.kind.0 {
            Some(Field::Scalar(Scalar::Str(kind))) if kind.eq_ignore_ascii_case("log") => Shape::Log,
            _ => Shape::Control,
        },
        _ => Shape::Control,
    }
}

/// Moves an envelope's fields into [`Parts`] according to its shape.
#[inline]
pub fn parts(envelope: Envelope<'_>) -> Parts<'_> {
    match detect(&envelope) {
        Shape::Flat => flat(envelope),
        shape @ (Shape::Control | Shape::Log) => control(envelope, shape),
        Shape::Acs => acs(envelope),
    }
}

/// Splits an optional nested object: its content, or a note when it is not an object.
fn open<'a, T: Default>(path: &'static str, field: Opt<'a, T>, bad: &mut Vec<BadContainer>) -> T {
    match field.0 {
        Some(Field::Object(inner)) => inner,
        Some(other) => {
            bad.push(BadContainer { path, found: other.type_name() });
            T::default()
        }
        None => T::default(),
    }
}

/// A field that is expected to be scalar; an object there is kept as a marker.
fn scalar<'a, T>(field: Opt<'a, T>) -> Opt<'a> {
    Opt(field.0.map(|value| match value {
        Field::Scalar(scalar) => Field::Scalar(scalar),
        Field::Object(_) => Field::Object(super::raw::Skip),
    }))
}

fn flat(e: Envelope<'_>) -> Parts<'_> {
    let execution_id = Slot::new("deliveryExecutionId", e.delivery_execution_id);
    let id = Slot::new("_id", e.id);
    // `_id` stands in for an absent `deliveryExecutionId`; when both are sent they must agree.
    let (execution_id, others) = if execution_id.value.is_some() || id.value.is_none() {
        (execution_id, [id, Slot::default()])
    } else {
        (id, [Slot::default(), Slot::default()])
    };
    Parts {
        shape: Some(Shape::Flat),
        execution_id,
        other_execution_ids: others,
        tenant_id: Slot::new("tenantId", e.tenant_id),
        time: Slot::new("incidentTime", e.incident_time),
        delivery_id: Slot::new("deliveryId", e.delivery_id),
        message_id: Slot::new("messageId", e.message_id),
        actor: Slot::new("actor", e.actor),
        test_taker: Slot::new("testTaker", e.test_taker),
        login: Slot::new("login", e.login),
        name: Slot::new("name", e.name),
        user_agent: Slot::new("userAgent", e.user_agent),
        ip: Slot::new("ip", e.ip),
        action: Slot::new("action", scalar(e.action)),
        action_status: Slot::new("actionStatus", e.action_status),
        status: Slot::new("status", e.status),
        reason_code: Slot::new("reasonCode", e.reason_code),
        reason_message: Slot::new("reasonMessage", e.reason_message),
        extra_time_added: Slot::new("extraTime", e.extra_time),
        last_update: Slot::new("last_update_date", e.last_update_date),
        item_id: Slot::new("itemId", e.item_id),
        resource_link: Slot::new("resourceLink", scalar(e.resource_link)),
        ..Parts::default()
    }
}

fn control(e: Envelope<'_>, shape: Shape) -> Parts<'_> {
    let mut bad = Vec::new();
    let identity: ActorIdentity = open("actorIdentity", e.actor_identity, &mut bad);
    let execution: DeliveryExecution = open("deliveryExecution", e.delivery_execution, &mut bad);
    let reason: ReasonObject = open("reason", e.reason, &mut bad);
    let (action_type, action_status) = match e.action.0 {
        Some(Field::Object(action)) => (action.kind, action.status),
        other => (scalar(Opt(other)), Opt(None)),
    };
    let resource_link = match e.resource_link.0 {
        Some(Field::Object(link)) => Slot::new("resourceLink.identifier", link.identifier),
        other => Slot::new("resourceLink", scalar(Opt(other))),
    };
    let nested_id = Slot::new("deliveryExecution.id", execution.id);
    let top_id = Slot::new("deliveryExecutionId", e.delivery_execution_id);
    // The envelope's own `deliveryExecution.id` first; a top-level id stands in when it is
    // absent, and must agree when both are sent.
    let (execution_id, others) = if nested_id.value.is_some() || top_id.value.is_none() {
        (nested_id, [top_id, Slot::new("_id", e.id)])
    } else {
        (top_id, [Slot::new("_id", e.id), Slot::default()])
    };
    Parts {
        shape: Some(shape),
        execution_id,
        other_execution_ids: others,
        tenant_id: Slot::new("tenantId", e.tenant_id),
        time: Slot::new("timestamp", e.timestamp),
        delivery_id: Slot::new("deliveryId", e.delivery_id),
        message_id: Slot::new("messageId", e.message_id),
        actor: Slot::new("actorIdentity.role", identity.role),
        actor_id: Slot::new("actorIdentity.id", identity.id),
        name: Slot::new("actorIdentity.name", identity.name),
        user_agent: Slot::new("actorIdentity.userAgent", identity.user_agent),
        ip: Slot::new("actorIdentity.ip", identity.ip),
        action: Slot::new("action.type", action_type),
        action_status: Slot::new("action.status", action_status),
        status: Slot::new("deliveryExecution.status", execution.status),
        reason_code: Slot::new("reason.code", reason.code),
        reason_message: Slot::new("reason.message", reason.message),
        item_id: Slot::new("itemId", e.item_id),
        resource_link,
        bad_containers: bad,
        ..Parts::default()
    }
}

fn acs(e: Envelope<'_>) -> Parts<'_> {
    let mut bad = Vec::new();
    let control: AcsControl = *open("acsControl", e.acs_control, &mut bad);
    let user = open("acsControl.user", control.user, &mut bad);
    let link = open("acsControl.resource_link", control.resource_link, &mut bad);
    let link_camel = open("acsControl.resourceLink", control.resource_link_camel, &mut bad);
    let test_taker = Slot::either(
        Slot::new("acsControl.user.sub", user.sub),
        Slot::new("acsControl.userIdentifier", control.user_identifier),
    );
    Parts {
        shape: Some(Shape::Acs),
        execution_id: Slot::new("deliveryExecutionId", e.delivery_execution_id),
        other_execution_ids: [Slot::new("_id", e.id), Slot::default()],
        tenant_id: Slot::new("tenantId", e.tenant_id),
        time: Slot::either(
            Slot::new("acsControl.incident_time", control.incident_time),
            Slot::new("acsControl.incidentTime", control.incident_time_camel),
        ),
        delivery_id: Slot::new("deliveryId", e.delivery_id),
        message_id: Slot::new("messageId", e.message_id),
        fixed_actor: Some(Actor::Proctor),
        login: Slot { path: test_taker.path, value: test_taker.value.clone() },
        test_taker,
        action: Slot::new("acsControl.action", control.action),
        fixed_action_status: Some(ActionStatus::Succeeded),
        acs_status: Slot::new("status", e.status),
        reason_code: Slot::either(
            Slot::new("acsControl.reason_code", control.reason_code),
            Slot::new("acsControl.reasonCode", control.reason_code_camel),
        ),
        reason_message: Slot::either(
            Slot::new("acsControl.reason_message", control.reason_message),
            Slot::new("acsControl.reasonMessage", control.reason_message_camel),
        ),
        extra_time_total: Slot::new("acsControl.extra_time", control.extra_time),
        item_id: Slot::new("itemId", e.item_id),
        resource_link: Slot::either(
            Slot::new("acsControl.resource_link.id", link.id),
            Slot::new("acsControl.resourceLink.identifier", link_camel.identifier),
        ),
        attempt_number: Slot::either(
            Slot::new("acsControl.attempt_number", control.attempt_number),
            Slot::new("acsControl.attemptNumber", control.attempt_number_camel),
        ),
        incident_severity: Slot::new("acsControl.incident_severity", control.incident_severity),
        bad_containers: bad,
        ..Parts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::raw::parse;

    #[test]
    fn shapes_are_detected_by_their_own_keys() {
        let cases = [
            (r#"{"deliveryExecutionId":"x","action":"pause"}"#, Shape::Flat),
            (r#"{"action":{"type":"pause","status":"succeeded"},"timestamp":1}"#, Shape::Control),
            (r#"{"action":{"type":"log","status":"interacting"},"timestamp":1}"#, Shape::Log),
            (r#"{"action":{"type":"LOG"},"timestamp":1}"#, Shape::Log),
            (r#"{"action":{"type":"pause"},"incidentTime":1}"#, Shape::Flat),
            (r#"{"actorIdentity":{"role":"proctor"},"action":"pause"}"#, Shape::Control),
            (r#"{"deliveryExecution":{"id":"x"}}"#, Shape::Control),
            (r#"{"acsControl":{"action":"pause"},"action":{"type":"log"}}"#, Shape::Acs),
            (r#"{"acsControl":"pause"}"#, Shape::Acs),
            (r#"{"acsControl":null,"action":"pause"}"#, Shape::Flat),
            ("{}", Shape::Flat),
        ];
        for (json, shape) in cases {
            assert_eq!(detect(&parse(json).expect(json)), shape, "{json}");
        }
    }

    #[test]
    fn acs_spellings_fill_the_same_parts() {
        let snake = parts(
            parse(r#"{"deliveryExecutionId":"d","acsControl":{"user":{"sub":"u1"},"incident_time":"t","reason_code":"30020","resource_link":{"id":"r"},"attempt_number":1}}"#)
                .unwrap(),
        );
        let camel = parts(
            parse(r#"{"deliveryExecutionId":"d","acsControl":{"userIdentifier":"u1","incidentTime":"t","reasonCode":"30020","resourceLink":{"identifier":"r"},"attemptNumber":1}}"#)
                .unwrap(),
        );
        let text = |slot: &Slot<'_>| match &slot.value {
            Some(Field::Scalar(Scalar::Str(s))) => Some(s.to_string()),
            Some(Field::Scalar(Scalar::UInt(n))) => Some(n.to_string()),
            _ => None,
        };
        for (a, b) in [
            (&snake.test_taker, &camel.test_taker),
            (&snake.login, &camel.login),
            (&snake.time, &camel.time),
            (&snake.reason_code, &camel.reason_code),
            (&snake.resource_link, &camel.resource_link),
            (&snake.attempt_number, &camel.attempt_number),
        ] {
            assert!(text(a).is_some(), "{}", a.path);
            assert_eq!(text(a), text(b), "{} / {}", a.path, b.path);
        }
        for p in [&snake, &camel] {
            assert!(p.test_taker.value.is_some() && p.time.value.is_some() && p.reason_code.value.is_some());
            assert!(p.resource_link.value.is_some() && p.attempt_number.value.is_some());
            assert_eq!(p.fixed_actor, Some(Actor::Proctor));
        }
        assert_eq!(snake.time.path, "acsControl.incident_time");
        assert_eq!(camel.time.path, "acsControl.incidentTime");
    }

    #[test]
    fn wrong_containers_are_noted() {
        let p = parts(parse(r#"{"actorIdentity":"bob","deliveryExecution":{"id":"x"},"reason":[1]}"#).unwrap());
        assert_eq!(
            p.bad_containers,
            vec![
                BadContainer { path: "actorIdentity", found: "a string" },
                BadContainer { path: "reason", found: "an array" }
            ]
        );
        assert!(p.container_note("actorIdentity.role").contains("`actorIdentity` is a string"));
    }
}
