//! Decode: raw bytes → one canonical [`Event`], or a [`Rejection`] naming why not.
//!
//! Checks run in a fixed order and the first failure names the dead-letter code:
//! bytes (`invalid_utf8`, `too_large`) → JSON (`malformed_json`, `not_an_object`) →
//! identity (delivery execution id, then tenant: `missing_delivery_execution_id`,
//! `missing_tenant`, `invalid_tenant`, `tenant_mismatch`, `unknown_tenant`) → time
//! (`invalid_time`) → other fields (`invalid_field`). Anything unusual that is not an error
//! becomes an anomaly on the event. Pure: the clock is passed in.

pub mod identity;
pub mod message_id;
pub mod raw;
pub mod reject;
pub mod shapes;
pub mod time;

use std::borrow::Cow;

use identity::IdForm;
pub use identity::TenantPolicy;
use raw::{Field, Scalar};
pub use reject::{ErrorCode, Rejection};
use shapes::{Parts, Slot};

use crate::model::vocab::{Known, Parsed};
use crate::model::{AcsStatus, Action, ActionStatus, Actor, Anomaly, Event, ReasonCode, Source, Status, Text};

/// Decoding settings.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Larger values are dead-lettered with `too_large` (`input.max_event_bytes`).
    pub max_event_bytes: usize,
    pub tenants: TenantPolicy,
}

impl Decoder {
    /// Decodes and validates one record value read at `source`, at processing time `now_ms`.
    #[inline]
    pub fn decode<'a>(&self, value: &'a [u8], source: &Source, now_ms: i64) -> Result<Event<'a>, Rejection> {
        let text = std::str::from_utf8(value).map_err(|error| {
            let at = error.valid_up_to();
            Rejection::new(
                ErrorCode::InvalidUtf8,
                format!("the value is not UTF-8: invalid byte sequence at byte {at}"),
            )
        })?;
        if value.len() > self.max_event_bytes {
            return Err(Rejection::new(
                ErrorCode::TooLarge,
                format!(
                    "the value is {} bytes; the limit (input.max_event_bytes) is {}",
                    value.len(),
                    self.max_event_bytes
                ),
            ));
        }
        let envelope = raw::parse(text).map_err(|error| match error {
            raw::ParseError::Malformed(detail) => Rejection::new(ErrorCode::MalformedJson, detail),
            raw::ParseError::NotAnObject(found) => {
                Rejection::new(ErrorCode::NotAnObject, format!("the value is {found}; expected a JSON object"))
            }
        })?;
        let mut tenant = None;
        self.build(&mut shapes::parts(envelope), value, source, now_ms, &mut tenant).map_err(|mut rejection| {
            rejection.tenant = tenant.map(|tenant: Text<'_>| Box::from(&*tenant));
            rejection
        })
    }

    /// The event; `tenant` is set as soon as the tenant is read, for a refusal after that.
    #[inline]
    fn build<'a>(
        &self,
        parts: &mut Parts<'a>,
        value: &[u8],
        source: &Source,
        now_ms: i64,
        tenant: &mut Option<Text<'a>>,
    ) -> Result<Event<'a>, Rejection> {
        let mut anomalies = Vec::new();

        // Identity: the delivery execution id, then the tenant.
        let execution_id = execution_id(parts)?;
        let id_parts = match identity::classify_execution_id(&execution_id) {
            IdForm::Tao(id_parts) => Some(id_parts),
            IdForm::Opaque => None,
            IdForm::Malformed => return Err(malformed_id(parts.execution_id.path)),
        };
        let derived_tenant = id_parts.map(|p| sub(&execution_id, p.tenant));
        let tenant_id = self.tenant(parts, &execution_id, derived_tenant)?;
        *tenant = Some(tenant_id.clone());
        for other in std::mem::take(&mut parts.other_execution_ids) {
            match other.value {
                None => {}
                Some(Field::Scalar(Scalar::Str(id))) if id == execution_id => {}
                Some(Field::Scalar(Scalar::Str(id))) => {
                    let other_tenant = match identity::classify_execution_id(&id) {
                        IdForm::Tao(other) => Some(other.tenant),
                        IdForm::Opaque => None,
                        IdForm::Malformed => return Err(malformed_id(other.path)),
                    };
                    if other_tenant.is_some_and(|t| t != tenant_id.as_ref()) {
                        return Err(Rejection::new(
                            ErrorCode::TenantMismatch,
                            format!("`{}` names another tenant than `{}`", other.path, parts.execution_id.path),
                        ));
                    }
                    note(&mut anomalies, Anomaly::IdMismatch);
                }
                Some(_) => note(&mut anomalies, Anomaly::IdMismatch),
            }
        }
        self.tenants.check_allowed(&tenant_id)?;

        // Time.
        let incident_time = incident_time(parts, now_ms)?;

        // Other fields.
        if let Some(bad) = parts.bad_containers.first() {
            return Err(Rejection::new(
                ErrorCode::InvalidField,
                format!("`{}` is {}; expected an object", bad.path, bad.found),
            ));
        }
        let field_delivery_id = text(&mut parts.delivery_id)?;
        let derived_delivery_id = id_parts.map(|p| sub(&execution_id, p.delivery));
        let delivery_id = match (field_delivery_id, derived_delivery_id) {
            (Some(given), Some(derived)) => {
                if given != derived {
                    note(&mut anomalies, Anomaly::IdMismatch);
                }
                Some(given)
            }
            (given, derived) => given.or(derived),
        };
        let message_id = text(&mut parts.message_id)?;

        let (actor, actor_raw) = match parts.fixed_actor {
            Some(actor) => (Some(actor), None),
            None => vocabulary(
                &mut parts.actor,
                Actor::parse,
                Anomaly::UnknownActor,
                Some(Anomaly::MissingActor),
                &mut anomalies,
            )?,
        };
        let (action, action_raw) = vocabulary(
            &mut parts.action,
            Action::parse,
            Anomaly::UnknownAction,
            Some(Anomaly::MissingAction),
            &mut anomalies,
        )?;
        let (action_status, action_status_raw) = match parts.fixed_action_status {
            Some(status) => (Some(status), None),
            None => vocabulary(
                &mut parts.action_status,
                ActionStatus::parse,
                Anomaly::UnknownActionStatus,
                None,
                &mut anomalies,
            )?,
        };
        let acs_status = text(&mut parts.acs_status)?;
        let (status, status_raw) = match &acs_status {
            Some(raw) => {
                let parsed = AcsStatus::parse(raw);
                if parsed.value == AcsStatus::Other {
                    note(&mut anomalies, Anomaly::UnknownAcsStatus);
                }
                (parsed.value.session_status(), None)
            }
            None => vocabulary(&mut parts.status, Status::parse_lenient, Anomaly::UnknownStatus, None, &mut anomalies)?,
        };

        let actor_id = text(&mut parts.actor_id)?;
        let mut test_taker = text(&mut parts.test_taker)?;
        let mut login = text(&mut parts.login)?;
        if actor.is_some_and(Actor::is_test_taker_side) {
            test_taker = test_taker.or_else(|| actor_id.clone());
            login = login.or_else(|| actor_id.clone());
        }

        let mut event = Event {
            shape: parts.shape(),
            tenant_id,
            delivery_execution_id: execution_id,
            delivery_id,
            message_id: message_id.clone().unwrap_or_default(),
            message_id_generated: message_id.is_none(),
            actor,
            actor_raw,
            actor_id,
            test_taker,
            login,
            name: text(&mut parts.name)?,
            user_agent: text(&mut parts.user_agent)?,
            ip: text(&mut parts.ip)?,
            action,
            action_raw,
            action_status,
            action_status_raw,
            status,
            status_raw,
            acs_status,
            reason_code: reason_code(&mut parts.reason_code)?,
            reason_message: text(&mut parts.reason_message)?,
            extra_time: number(&mut parts.extra_time_added)?,
            extra_time_total: non_negative(&mut parts.extra_time_total)?,
            incident_time,
            last_update: last_update(&mut parts.last_update)?,
            item_id: text(&mut parts.item_id)?,
            resource_link: text(&mut parts.resource_link)?,
            attempt_number: count(&mut parts.attempt_number)?,
            incident_severity: non_negative(&mut parts.incident_severity)?,
            reason: None,
            signal: None,
            anomalies,
            session: None,
            source: source.clone(),
            processed_at: now_ms,
            stamp: None,
            privacy: None,
        };
        if event.message_id_generated {
            event.message_id = Text::Owned(message_id::generate(value));
        }
        Ok(event)
    }

    fn tenant<'a>(
        &self,
        parts: &mut Parts<'a>,
        execution_id: &str,
        derived: Option<Text<'a>>,
    ) -> Result<Text<'a>, Rejection> {
        let path = parts.tenant_id.path;
        let given = match parts.tenant_id.value.take() {
            None => None,
            Some(Field::Scalar(Scalar::Str(tenant))) if tenant.is_empty() => None,
            Some(Field::Scalar(Scalar::Str(tenant))) => Some(tenant),
            Some(other) => {
                return Err(Rejection::new(
                    ErrorCode::InvalidTenant,
                    format!("`{path}` is {}; expected a string", other.type_name()),
                ));
            }
        };
        let id_path = parts.execution_id.path;
        match (given, derived) {
            (Some(tenant), derived) => {
                self.tenants.check_syntax(&tenant, &format_args!("`{path}`"))?;
                if derived.is_some_and(|d| d != tenant) {
                    return Err(Rejection::new(
                        ErrorCode::TenantMismatch,
                        format!("`{path}` differs from the tenant segment of `{id_path}`"),
                    ));
                }
                Ok(tenant)
            }
            (None, Some(derived)) => {
                self.tenants.check_syntax(&derived, &format_args!("the tenant segment of `{id_path}`"))?;
                Ok(derived)
            }
            (None, None) => Err(Rejection::new(
                ErrorCode::MissingTenant,
                // The id is not quoted: it holds the test taker's user id.
                format!(
                    "no `{path}`, and `{id_path}` ({} characters, {} `#`) has no tenant segment \
                     (<user>#<delivery>#<attempt>#<tenant>)",
                    execution_id.chars().count(),
                    execution_id.matches('#').count()
                ),
            )),
        }
    }
}

fn malformed_id(path: &str) -> Rejection {
    Rejection::new(
        ErrorCode::InvalidDeliveryExecutionId,
        format!("`{path}` has the form <user>#<delivery>#<attempt>#<tenant> with an empty segment"),
    )
}

/// `part` (a slice of `whole`) as text that borrows from the input when `whole` does.
fn sub<'a>(whole: &Text<'a>, part: &str) -> Text<'a> {
    match whole {
        Cow::Borrowed(text) => {
            let start = part.as_ptr() as usize - text.as_ptr() as usize;
            Cow::Borrowed(&text[start..start + part.len()])
        }
        Cow::Owned(_) => Cow::Owned(part.to_owned()),
    }
}

/// Records an anomaly once.
fn note(anomalies: &mut Vec<Anomaly>, anomaly: Anomaly) {
    if !anomalies.contains(&anomaly) {
        anomalies.push(anomaly);
    }
}

fn execution_id<'a>(parts: &mut Parts<'a>) -> Result<Text<'a>, Rejection> {
    let path = parts.execution_id.path;
    let missing = |why: String| Rejection::new(ErrorCode::MissingDeliveryExecutionId, why);
    match parts.execution_id.value.take() {
        Some(Field::Scalar(Scalar::Str(id))) if !id.trim().is_empty() => Ok(id),
        Some(Field::Scalar(Scalar::Str(_))) => Err(missing(format!("`{path}` is empty"))),
        Some(other) => Err(missing(format!("`{path}` is {}; expected a string", other.type_name()))),
        None => Err(missing(format!("no delivery execution id (`{path}`){}", parts.container_note(path)))),
    }
}

fn incident_time(parts: &mut Parts<'_>, now_ms: i64) -> Result<i64, Rejection> {
    let path = parts.time.path;
    let invalid = |why: String| Rejection::new(ErrorCode::InvalidTime, format!("`{path}` {why}"));
    match parts.time.value.take() {
        None => Err(Rejection::new(
            ErrorCode::InvalidTime,
            format!("no incident time (`{path}`){}", parts.container_note(path)),
        )),
        Some(field) => {
            let millis = time::read_millis(&field).map_err(invalid)?;
            time::check_plausible(millis, now_ms).map_err(invalid)
        }
    }
}

fn invalid_type(slot: &Slot<'_>, found: &str, expected: &str) -> Rejection {
    Rejection::new(ErrorCode::InvalidField, format!("`{}` is {found}; expected {expected}", slot.path))
}

/// A text field: strings as sent, numbers in their decimal form; empty is absent.
fn text<'a>(slot: &mut Slot<'a>) -> Result<Option<Text<'a>>, Rejection> {
    match slot.value.take() {
        None | Some(Field::Scalar(Scalar::Null)) => Ok(None),
        Some(Field::Scalar(Scalar::Str(s))) if s.is_empty() => Ok(None),
        Some(Field::Scalar(Scalar::Str(s))) => Ok(Some(s)),
        Some(Field::Scalar(Scalar::Int(n))) => Ok(Some(Text::Owned(n.to_string()))),
        Some(Field::Scalar(Scalar::UInt(n))) => Ok(Some(Text::Owned(n.to_string()))),
        Some(Field::Scalar(Scalar::Float(n))) => Ok(Some(Text::Owned(n.to_string()))),
        Some(other) => Err(invalid_type(slot, other.type_name(), "a string")),
    }
}

/// A vocabulary field: parsed leniently; the raw spelling is kept when not canonical.
fn vocabulary<'a, T: Known>(
    slot: &mut Slot<'a>,
    parse: impl Fn(&str) -> Parsed<T>,
    unknown: Anomaly,
    missing: Option<Anomaly>,
    anomalies: &mut Vec<Anomaly>,
) -> Result<(Option<T>, Option<Text<'a>>), Rejection> {
    let path = slot.path;
    let raw = match slot.value.take() {
        None | Some(Field::Scalar(Scalar::Null)) => None,
        Some(Field::Scalar(Scalar::Str(s))) if s.is_empty() => None,
        Some(Field::Scalar(Scalar::Str(s))) => Some(s),
        Some(other) => {
            return Err(Rejection::new(
                ErrorCode::InvalidField,
                format!("`{path}` is {}; expected a string", other.type_name()),
            ));
        }
    };
    let Some(raw) = raw else {
        if let Some(missing) = missing {
            note(anomalies, missing);
        }
        return Ok((None, None));
    };
    let parsed = parse(&raw);
    if !parsed.value.is_known() {
        note(anomalies, unknown);
    }
    let raw = if parsed.canonical { None } else { Some(raw) };
    Ok((Some(parsed.value), raw))
}

/// A number: JSON numbers, or numeric strings; must be finite.
fn number(slot: &mut Slot<'_>) -> Result<Option<f64>, Rejection> {
    let value = match slot.value.take() {
        None | Some(Field::Scalar(Scalar::Null)) => return Ok(None),
        Some(Field::Scalar(Scalar::Int(n))) => n as f64,
        Some(Field::Scalar(Scalar::UInt(n))) => n as f64,
        Some(Field::Scalar(Scalar::Float(n))) => n,
        Some(Field::Scalar(Scalar::Str(s))) if s.trim().is_empty() => return Ok(None),
        Some(Field::Scalar(Scalar::Str(s))) => match s.trim().parse::<f64>() {
            Ok(n) => n,
            Err(_) => {
                return Err(invalid_type(slot, &format!("the string {}", reject::excerpt(&s)), "a number"));
            }
        },
        Some(other) => return Err(invalid_type(slot, other.type_name(), "a number")),
    };
    if value.is_finite() { Ok(Some(value)) } else { Err(invalid_type(slot, "not finite", "a finite number")) }
}

fn non_negative(slot: &mut Slot<'_>) -> Result<Option<f64>, Rejection> {
    let path = slot.path;
    match number(slot)? {
        Some(n) if n < 0.0 => {
            Err(Rejection::new(ErrorCode::InvalidField, format!("`{path}` is negative ({n}); expected 0 or more")))
        }
        other => Ok(other),
    }
}

/// A small count (attempt number): a non-negative integer.
fn count(slot: &mut Slot<'_>) -> Result<Option<u32>, Rejection> {
    let path = slot.path;
    match number(slot)? {
        None => Ok(None),
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => Ok(Some(n as u32)),
        Some(n) => {
            Err(Rejection::new(ErrorCode::InvalidField, format!("`{path}` is {n}; expected a whole number ≥ 0")))
        }
    }
}

/// The reason code: integers and numeric strings are numeric; anything else is kept raw.
fn reason_code<'a>(slot: &mut Slot<'a>) -> Result<ReasonCode<'a>, Rejection> {
    Ok(match slot.value.take() {
        None | Some(Field::Scalar(Scalar::Null)) => ReasonCode::None,
        Some(Field::Scalar(Scalar::Int(n))) => ReasonCode::Numeric(n),
        Some(Field::Scalar(Scalar::UInt(n))) => match i64::try_from(n) {
            Ok(n) => ReasonCode::Numeric(n),
            Err(_) => ReasonCode::Raw(Text::Owned(n.to_string())),
        },
        Some(Field::Scalar(Scalar::Float(n))) if n.fract() == 0.0 && n.abs() < 9.0e15 => ReasonCode::Numeric(n as i64),
        Some(Field::Scalar(Scalar::Float(n))) => ReasonCode::Raw(Text::Owned(n.to_string())),
        Some(Field::Scalar(Scalar::Str(s))) if s.trim().is_empty() => ReasonCode::None,
        Some(Field::Scalar(Scalar::Str(s))) => match s.trim().parse::<i64>() {
            Ok(n) => ReasonCode::Numeric(n),
            // "20060.0": a whole number written as a decimal.
            Err(_) => match s.trim().parse::<f64>() {
                Ok(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => ReasonCode::Numeric(n as i64),
                _ => ReasonCode::Raw(s),
            },
        },
        Some(other) => {
            return Err(invalid_type(slot, other.type_name(), "a number or a string"));
        }
    })
}

/// `last_update_date`: any readable timestamp (no plausibility window: it is informative).
fn last_update(slot: &mut Slot<'_>) -> Result<Option<i64>, Rejection> {
    let path = slot.path;
    match slot.value.take() {
        None | Some(Field::Scalar(Scalar::Null)) => Ok(None),
        Some(Field::Scalar(Scalar::Str(s))) if s.trim().is_empty() => Ok(None),
        Some(field) => time::read_millis(&field)
            .map(Some)
            .map_err(|why| Rejection::new(ErrorCode::InvalidField, format!("`{path}` {why}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Shape;

    const NOW: i64 = 1_767_261_400_000; // 2026-01-01T09:56:40Z
    const DE: &str = "dIresu#d1#h1#acme";

    fn decoder() -> Decoder {
        Decoder { max_event_bytes: 4096, tenants: TenantPolicy::new(11, None) }
    }

    fn source() -> Source {
        Source { topic: Arc::from("raw"), partition: 0, offset: 7 }
    }

    fn decode(json: &str) -> Result<Event<'static>, Rejection> {
        decoder().decode(json.as_bytes(), &source(), NOW).map(Event::into_owned)
    }

    fn code(json: &str) -> ErrorCode {
        match decode(json) {
            Ok(event) => panic!("{json}: expected a rejection, got {event:?}"),
            Err(rejection) => rejection.code,
        }
    }

    #[test]
    fn each_check_names_its_code() {
        use ErrorCode::*;
        let long =
            format!(r#"{{"deliveryExecutionId":"{DE}","incidentTime":1767261300,"name":"{}"}}"#, "x".repeat(5000));
        let cases: Vec<(&str, ErrorCode)> = vec![
            (long.as_str(), TooLarge),
            ("{", MalformedJson),
            ("", MalformedJson),
            ("[]", NotAnObject),
            (r#"{"incidentTime":1767261300}"#, MissingDeliveryExecutionId),
            (r#"{"deliveryExecutionId":"","incidentTime":1767261300}"#, MissingDeliveryExecutionId),
            (r#"{"deliveryExecutionId":"  ","incidentTime":1767261300}"#, MissingDeliveryExecutionId),
            (r#"{"deliveryExecutionId":42,"incidentTime":1767261300}"#, MissingDeliveryExecutionId),
            (r#"{"deliveryExecutionId":"plain-id","incidentTime":1767261300}"#, MissingTenant),
            (r#"{"deliveryExecutionId":"plain-id","tenantId":"","incidentTime":1767261300}"#, MissingTenant),
            (r#"{"deliveryExecutionId":"plain-id","tenantId":"a/b","incidentTime":1767261300}"#, InvalidTenant),
            (r#"{"deliveryExecutionId":"plain-id","tenantId":7,"incidentTime":1767261300}"#, InvalidTenant),
            (r#"{"deliveryExecutionId":"u#d#h#a b","incidentTime":1767261300}"#, InvalidTenant),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","tenantId":"other","incidentTime":1767261300}"#,
                TenantMismatch,
            ),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","tenantId":"ACME","incidentTime":1767261300}"#,
                TenantMismatch,
            ),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","_id":"u#d#h#evil","incidentTime":1767261300}"#,
                TenantMismatch,
            ),
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme"}"#, InvalidTime),
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","last_update_date":1767261300}"#, InvalidTime),
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":"soon"}"#, InvalidTime),
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":0}"#, InvalidTime),
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":99999999999999}"#, InvalidTime),
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","timestamp":1767261300123}"#, InvalidTime),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300,"actor":{"role":"x"}}"#,
                InvalidField,
            ),
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300,"name":true}"#, InvalidField),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300,"extraTime":"ten"}"#,
                InvalidField,
            ),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300,"reasonCode":[20060]}"#,
                InvalidField,
            ),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300,"last_update_date":"x"}"#,
                InvalidField,
            ),
            (
                r#"{"actorIdentity":"bob","timestamp":1767261300123,"deliveryExecution":{"id":"dIresu#d1#h1#acme"}}"#,
                InvalidField,
            ),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","acsControl":{"incident_time":"2026-01-01T09:00:00Z","extra_time":-5}}"#,
                InvalidField,
            ),
            (
                r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","acsControl":{"incident_time":"2026-01-01T09:00:00Z","attempt_number":1.5}}"#,
                InvalidField,
            ),
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","acsControl":"pause"}"#, InvalidTime),
        ];
        for (json, expected) in cases {
            assert_eq!(code(json), expected, "{json}");
        }
        assert_eq!(decoder().decode(b"{\"a\":\"\xff\"}", &source(), NOW).unwrap_err().code, InvalidUtf8);
    }

    #[test]
    fn the_first_failing_check_wins() {
        use ErrorCode::*;
        let cases = [
            // A NUL escape is JSON, an unescaped NUL is not.
            ("{\"a\":\"\u{0}\"}", MalformedJson),
            // Identity before time and fields: no id, bad time, bad field.
            (r#"{"incidentTime":"x","name":true}"#, MissingDeliveryExecutionId),
            // Delivery execution id before tenant.
            (r#"{"tenantId":"a b","incidentTime":1767261300}"#, MissingDeliveryExecutionId),
            // Tenant before time.
            (r#"{"deliveryExecutionId":"plain","incidentTime":"x"}"#, MissingTenant),
            // Time before fields.
            (r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":"x","name":true}"#, InvalidTime),
        ];
        for (json, expected) in cases {
            assert_eq!(code(json), expected, "{json}");
        }
        let mut big = vec![0xffu8];
        big.extend(std::iter::repeat_n(b' ', 5000));
        assert_eq!(decoder().decode(&big, &source(), NOW).unwrap_err().code, InvalidUtf8);
    }

    #[test]
    fn the_allow_list_applies_after_syntax() {
        let decoder = Decoder {
            max_event_bytes: 4096,
            tenants: TenantPolicy::new(11, Some(["acme".to_owned()].into_iter().collect())),
        };
        let decode = |json: &'static str| decoder.decode(json.as_bytes(), &source(), NOW);
        assert!(decode(r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300}"#).is_ok());
        let other = decode(r#"{"deliveryExecutionId":"u#d#h#globex","incidentTime":1767261300}"#);
        assert_eq!(other.unwrap_err().code, ErrorCode::UnknownTenant);
        let bad = decode(r#"{"deliveryExecutionId":"u#d#h#glo bex","incidentTime":1767261300}"#);
        assert_eq!(bad.unwrap_err().code, ErrorCode::InvalidTenant);
    }

    #[test]
    fn a_broken_tao_id_cannot_let_tenant_id_pick_the_tenant() {
        for id in ["u#d##acme", "u#d#h#acme#", "#u#d#h#acme", "u##d#h#acme"] {
            let json = format!(r#"{{"deliveryExecutionId":"{id}","tenantId":"globex","incidentTime":1767261300}}"#);
            assert_eq!(code(&json), ErrorCode::InvalidDeliveryExecutionId, "{id}");
        }
        let other = r#"{"deliveryExecutionId":"u#d#h#acme","_id":"u#d##globex","incidentTime":1767261300}"#;
        assert_eq!(code(other), ErrorCode::InvalidDeliveryExecutionId);
        // A URI with one `#` is another form, kept as sent; `tenantId` names the tenant.
        let uri = r#"{"deliveryExecutionId":"http://x.org/tao.rdf#i1","tenantId":"globex","incidentTime":1767261300}"#;
        assert_eq!(decode(uri).unwrap().tenant_id, "globex");
    }

    #[test]
    fn identity_and_time_details_never_quote_the_user_id() {
        let user = "jdoe@school.org";
        let cases = [
            format!(r#"{{"deliveryExecutionId":"{user}","incidentTime":1767261300}}"#),
            format!(r#"{{"deliveryExecutionId":"{user}#d#h#","incidentTime":1767261300}}"#),
            format!(r#"{{"deliveryExecutionId":"{user}#d#h#acme","tenantId":"globex","incidentTime":1767261300}}"#),
            format!(r#"{{"deliveryExecutionId":"{user}#d#h#acme","incidentTime":"never"}}"#),
            format!(r#"{{"deliveryExecutionId":"{user}#d#h#acme","incidentTime":1}}"#),
        ];
        for json in cases {
            let rejection = decode(&json).unwrap_err();
            assert!(!rejection.detail.contains("jdoe"), "{}: {}", rejection.code, rejection.detail);
        }
    }

    #[test]
    fn details_name_the_field_without_personal_data() {
        let rejection =
            decode(r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300,"userAgent":{"ua":"Mozilla secret"}}"#)
                .unwrap_err();
        assert_eq!(rejection.detail, "`userAgent` is an object; expected a string");
        let rejection = decode(
            r#"{"actorIdentity":{"role":"proctor"},"timestamp":"never","deliveryExecution":{"id":"u#d#h#acme"}}"#,
        )
        .unwrap_err();
        assert!(rejection.detail.starts_with("`timestamp` "), "{}", rejection.detail);
        let rejection = decode(r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","acsControl":"pause"}"#).unwrap_err();
        assert!(rejection.detail.contains("`acsControl` is a string"), "{}", rejection.detail);
    }

    #[test]
    fn the_tenant_comes_from_the_id_when_absent_and_is_kept_as_sent() {
        let event =
            decode(r#"{"deliveryExecutionId":"review#dIresu#d1#h1#Acme-EU.1","incidentTime":1767261300}"#).unwrap();
        assert_eq!(event.tenant_id, "Acme-EU.1");
        assert_eq!(event.delivery_execution_id, "review#dIresu#d1#h1#Acme-EU.1");
        assert_eq!(event.delivery_id.as_deref(), Some("d1"));
        let event =
            decode(r#"{"deliveryExecutionId":"opaque-id","tenantId":"acme","incidentTime":1767261300}"#).unwrap();
        assert_eq!((event.tenant_id.as_ref(), event.delivery_id), ("acme", None));
    }

    #[test]
    fn disagreeing_ids_of_one_tenant_are_an_anomaly() {
        let event =
            decode(r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","_id":"x#d2#h2#acme","deliveryId":"d9","incidentTime":1767261300}"#)
                .unwrap();
        assert_eq!(event.anomalies, vec![Anomaly::IdMismatch, Anomaly::MissingActor, Anomaly::MissingAction]);
        assert_eq!(event.delivery_id.as_deref(), Some("d9"));
    }

    #[test]
    fn flat_records_are_typed_leniently() {
        let event = decode(
            r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":"1767261300.5","actor":"Test-Taker","action":"move",
                "actionStatus":"succeeded","status":"http://www.tao.lu/Ontologies/TAODelivery.rdf#DeliveryExecutionStatusPaused",
                "reasonCode":" 20060 ","extraTime":"15","itemId":42,"messageId":"m1","last_update_date":"2026-01-01T09:55:00Z"}"#,
        )
        .unwrap();
        assert_eq!(event.shape, Shape::Flat);
        assert_eq!(event.incident_time, 1_767_261_300_500);
        assert_eq!((event.actor, event.actor_raw.as_deref()), (Some(Actor::TestTaker), Some("Test-Taker")));
        assert_eq!((event.action, event.action_raw.as_deref()), (Some(Action::Navigation), Some("move")));
        assert_eq!(event.status, Some(Status::Suspended));
        assert!(event.status_raw.as_deref().unwrap().ends_with("StatusPaused"));
        assert_eq!(event.reason_code, ReasonCode::Numeric(20060));
        assert_eq!(event.extra_time, Some(15.0));
        assert_eq!(event.item_id.as_deref(), Some("42"));
        assert_eq!(event.last_update, Some(1_767_261_300_000));
        assert_eq!((event.message_id.as_ref(), event.message_id_generated), ("m1", false));
        assert!(event.anomalies.is_empty(), "{:?}", event.anomalies);
    }

    #[test]
    fn unknown_vocabulary_is_kept_as_other_with_an_anomaly() {
        let event = decode(
            r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300,"actor":"robot","action":"dance",
                "actionStatus":"maybe","status":"sleeping"}"#,
        )
        .unwrap();
        assert_eq!((event.actor, event.actor_raw.as_deref()), (Some(Actor::Other), Some("robot")));
        assert_eq!((event.action, event.action_raw.as_deref()), (Some(Action::Other), Some("dance")));
        assert_eq!(event.action_status, Some(ActionStatus::Other));
        assert_eq!((event.status, event.status_raw.as_deref()), (Some(Status::Other), Some("sleeping")));
        assert_eq!(
            event.anomalies,
            vec![Anomaly::UnknownActor, Anomaly::UnknownAction, Anomaly::UnknownActionStatus, Anomaly::UnknownStatus]
        );
        let bare = decode(r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300}"#).unwrap();
        assert_eq!(bare.anomalies, vec![Anomaly::MissingActor, Anomaly::MissingAction]);
    }

    #[test]
    fn control_and_log_messages_map_to_the_canonical_fields() {
        let event = decode(
            r#"{"actorIdentity":{"id":"u-1","name":"","role":"test-taker","userAgent":"UA","ip":"1.2.3.4"},
                "action":{"type":"pause","status":"succeeded"},"timestamp":1767261300123,
                "deliveryExecution":{"id":"dIresu#d1#h1#acme","status":"suspended"},"resourceLink":{"identifier":""},
                "itemId":"item-1","reason":{"code":20060,"message":"[Full Screen] x"},"testOutcomes":[]}"#,
        )
        .unwrap();
        assert_eq!(event.shape, Shape::Control);
        assert_eq!(event.incident_time, 1_767_261_300_123);
        assert_eq!(event.actor, Some(Actor::TestTaker));
        assert_eq!((event.actor_id.as_deref(), event.test_taker.as_deref()), (Some("u-1"), Some("u-1")));
        assert_eq!((event.user_agent.as_deref(), event.ip.as_deref()), (Some("UA"), Some("1.2.3.4")));
        assert_eq!((event.name, event.resource_link), (None, None));
        assert_eq!(event.status, Some(Status::Suspended));
        assert_eq!(event.reason_code, ReasonCode::Numeric(20060));
        assert!(event.message_id_generated);

        let log = decode(
            r#"{"actorIdentity":{"id":"u-1","role":"deliver-fe"},"action":{"type":"log","status":"interacting"},
                "timestamp":1767261300123,"deliveryExecution":{"id":"dIresu#d1#h1#acme","status":"interacting"},
                "reason":{"code":40999,"message":"[deliver-fe] boom"}}"#,
        )
        .unwrap();
        assert_eq!(log.shape, Shape::Log);
        assert_eq!(log.action, Some(Action::Log));
        assert_eq!(log.action_status, Some(ActionStatus::Session(Status::Interacting)));
    }

    #[test]
    fn acs_messages_are_proctor_actions_with_mapped_status() {
        let cases = [
            ("running", Some(Status::Interacting), false),
            ("paused", Some(Status::Suspended), false),
            ("terminated", Some(Status::Terminated), false),
            ("complete", Some(Status::Closed), false),
            ("none", None, false),
            ("exploded", None, true),
        ];
        for (acs, status, anomaly) in cases {
            let event = decode(&format!(
                r#"{{"deliveryExecutionId":"{DE}","status":"{acs}","acsControl":{{"action":"terminate","incident_time":"2026-01-01T09:00:00+00:00","reason_code":"30030","extra_time":12.5}}}}"#
            ))
            .unwrap();
            assert_eq!(event.shape, Shape::Acs);
            assert_eq!((event.actor, event.action_status), (Some(Actor::Proctor), Some(ActionStatus::Succeeded)));
            assert_eq!(event.status, status, "{acs}");
            assert_eq!(event.acs_status.as_deref(), Some(acs));
            assert_eq!(event.anomalies.contains(&Anomaly::UnknownAcsStatus), anomaly, "{acs}");
            assert_eq!((event.extra_time, event.extra_time_total), (None, Some(12.5)));
            assert_eq!(event.reason_code, ReasonCode::Numeric(30030));
        }
        let reset = decode(&format!(
            r#"{{"deliveryExecutionId":"{DE}","status":"none","acsControl":{{"userIdentifier":"u-9","resourceLink":{{"identifier":"rl"}},"action":"reset","attemptNumber":2,"incidentTime":"2026-01-01T09:00:00+00:00","reasonCode":"999","reasonMessage":""}}}}"#
        ))
        .unwrap();
        assert_eq!(reset.action, Some(Action::Reset));
        assert_eq!((reset.test_taker.as_deref(), reset.resource_link.as_deref()), (Some("u-9"), Some("rl")));
        assert_eq!((reset.attempt_number, reset.reason_message), (Some(2), None));
        assert_eq!(reset.reason_code, ReasonCode::Numeric(999));
    }

    #[test]
    fn generated_message_ids_follow_the_bytes() {
        let json = r#"{"deliveryExecutionId":"dIresu#d1#h1#acme","incidentTime":1767261300,"action":"pause"}"#;
        let a = decode(json).unwrap();
        let again = decode(json).unwrap();
        let other = decode(&json.replace("1767261300", "1767261301")).unwrap();
        let given = decode(&json.replace("{", r#"{"messageId":"m-1","#)).unwrap();
        assert!(a.message_id_generated && !given.message_id_generated);
        assert_eq!(a.message_id, again.message_id, "a re-delivery keeps its id");
        assert_ne!(a.message_id, other.message_id);
        assert_eq!(a.message_id, message_id::generate(json.as_bytes()));
        assert_eq!(given.message_id, "m-1");
    }
}
