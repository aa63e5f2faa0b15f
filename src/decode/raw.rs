//! The raw record as parsed: one borrowed, lenient struct covering the keys of all four
//! upstream shapes.
//!
//! Every field accepts any JSON type ([`Field`]), so parsing fails only on JSON syntax or a
//! duplicate key; wrong types are judged afterwards, in the documented check order, by
//! the code that reads each field. Strings borrow from the input unless they hold escapes.
//! Unknown keys are skipped without being materialized.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A JSON value that is not an object (objects become [`Field::Object`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An array (its content is skipped).
    Array,
}

/// One field of any JSON type; objects are parsed as `T`.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a, T = Skip> {
    Scalar(Scalar<'a>),
    Object(T),
}

impl<T> Field<'_, T> {
    /// The JSON type's name, for error details.
    pub fn type_name(&self) -> &'static str {
        match self {
            Field::Object(_) => "an object",
            Field::Scalar(Scalar::Null) => "null",
            Field::Scalar(Scalar::Bool(_)) => "a boolean",
            Field::Scalar(Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_)) => "a number",
            Field::Scalar(Scalar::Str(_)) => "a string",
            Field::Scalar(Scalar::Array) => "an array",
        }
    }
}

/// An object whose content is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Skip)
    }
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for Field<'a, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<'a, T>(PhantomData<(&'a (), T)>);

impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for FieldVisitor<'a, T> {
    type Value = Field<'a, T>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::Float(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::Str(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::Str(Cow::Owned(v))))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::Null))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Scalar(Scalar::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Scalar(Scalar::Array))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Field::Object)
    }
}

/// An optional field: absent and `null` are both `None`.
///
/// Deserialized in one step (any JSON value, `null` mapped to `None`), without serde's
/// separate option layer; absent fields take the default through `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Opt<'a, T = Skip>(pub Option<Field<'a, T>>);

impl<T> Default for Opt<'_, T> {
    fn default() -> Self {
        Opt(None)
    }
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for Opt<'a, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(FieldVisitor(PhantomData))? {
            Field::Scalar(Scalar::Null) => Ok(Opt(None)),
            field => Ok(Opt(Some(field))),
        }
    }
}

impl<'a, T> Opt<'a, T> {
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

/// The union of the four shapes' top-level keys.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<'a> {
    // Flat Insights record (the spec's API column).
    #[serde(borrow)]
    pub delivery_id: Opt<'a>,
    #[serde(borrow)]
    pub delivery_execution_id: Opt<'a>,
    #[serde(borrow)]
    pub test_taker: Opt<'a>,
    #[serde(borrow)]
    pub login: Opt<'a>,
    #[serde(borrow)]
    pub name: Opt<'a>,
    #[serde(borrow)]
    pub actor: Opt<'a>,
    /// A string in the flat record, `{type, status}` in control and log messages.
    #[serde(borrow)]
    pub action: Opt<'a, ActionObject<'a>>,
    #[serde(borrow)]
    pub action_status: Opt<'a>,
    #[serde(borrow)]
    pub reason_code: Opt<'a>,
    #[serde(borrow)]
    pub reason_message: Opt<'a>,
    #[serde(borrow)]
    pub extra_time: Opt<'a>,
    #[serde(borrow)]
    pub incident_time: Opt<'a>,
    #[serde(borrow, rename = "last_update_date")]
    pub last_update_date: Opt<'a>,
    #[serde(borrow)]
    pub item_id: Opt<'a>,
    /// A string in the flat record, `{identifier}` in control messages.
    #[serde(borrow)]
    pub resource_link: Opt<'a, ResourceLinkObject<'a>>,
    /// Session status (flat), or the ACS vocabulary (proctor ACS message).
    #[serde(borrow)]
    pub status: Opt<'a>,
    #[serde(borrow)]
    pub tenant_id: Opt<'a>,
    #[serde(borrow)]
    pub user_agent: Opt<'a>,
    #[serde(borrow)]
    pub ip: Opt<'a>,
    #[serde(borrow)]
    pub message_id: Opt<'a>,
    #[serde(borrow, rename = "_id")]
    pub id: Opt<'a>,

    // deliver-be control / log message.
    #[serde(borrow)]
    pub actor_identity: Opt<'a, ActorIdentity<'a>>,
    #[serde(borrow)]
    pub timestamp: Opt<'a>,
    #[serde(borrow)]
    pub delivery_execution: Opt<'a, DeliveryExecution<'a>>,
    #[serde(borrow)]
    pub reason: Opt<'a, ReasonObject<'a>>,

    // Proctor ACS message.
    /// Boxed: it is large and only proctor ACS messages carry it; every other record
    /// would otherwise move its space around.
    #[serde(borrow)]
    pub acs_control: Opt<'a, Box<AcsControl<'a>>>,
}

/// Control message `action`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ActionObject<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Opt<'a>,
    #[serde(borrow)]
    pub status: Opt<'a>,
}

/// Control message `resourceLink` (and ACS reset `resourceLink`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ResourceLinkObject<'a> {
    #[serde(borrow)]
    pub identifier: Opt<'a>,
}

/// Control message `actorIdentity`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct ActorIdentity<'a> {
    #[serde(borrow)]
    pub id: Opt<'a>,
    #[serde(borrow)]
    pub name: Opt<'a>,
    #[serde(borrow)]
    pub role: Opt<'a>,
    #[serde(borrow)]
    pub user_agent: Opt<'a>,
    #[serde(borrow)]
    pub ip: Opt<'a>,
}

/// Control message `deliveryExecution`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct DeliveryExecution<'a> {
    #[serde(borrow)]
    pub id: Opt<'a>,
    #[serde(borrow)]
    pub status: Opt<'a>,
}

/// Control message `reason`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ReasonObject<'a> {
    #[serde(borrow)]
    pub code: Opt<'a>,
    #[serde(borrow)]
    pub message: Opt<'a>,
}

/// ACS `acsControl`, both spellings: LTI Proctoring snake_case and the reset's camelCase.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct AcsControl<'a> {
    #[serde(borrow)]
    pub user: Opt<'a, AcsUser<'a>>,
    #[serde(borrow)]
    pub resource_link: Opt<'a, AcsResourceLink<'a>>,
    #[serde(borrow)]
    pub attempt_number: Opt<'a>,
    #[serde(borrow)]
    pub action: Opt<'a>,
    #[serde(borrow)]
    pub extra_time: Opt<'a>,
    #[serde(borrow)]
    pub incident_time: Opt<'a>,
    #[serde(borrow)]
    pub incident_severity: Opt<'a>,
    #[serde(borrow)]
    pub reason_code: Opt<'a>,
    #[serde(borrow)]
    pub reason_message: Opt<'a>,

    #[serde(borrow, rename = "userIdentifier")]
    pub user_identifier: Opt<'a>,
    #[serde(borrow, rename = "resourceLink")]
    pub resource_link_camel: Opt<'a, ResourceLinkObject<'a>>,
    #[serde(borrow, rename = "attemptNumber")]
    pub attempt_number_camel: Opt<'a>,
    #[serde(borrow, rename = "incidentTime")]
    pub incident_time_camel: Opt<'a>,
    #[serde(borrow, rename = "reasonCode")]
    pub reason_code_camel: Opt<'a>,
    #[serde(borrow, rename = "reasonMessage")]
    pub reason_message_camel: Opt<'a>,
}

/// ACS `acsControl.user`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct AcsUser<'a> {
    #[serde(borrow)]
    pub iss: Opt<'a>,
    #[serde(borrow)]
    pub sub: Opt<'a>,
}

/// ACS `acsControl.resource_link`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct AcsResourceLink<'a> {
    #[serde(borrow)]
    pub id: Opt<'a>,
}

/// Why the bytes could not be read as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Malformed(String),
    NotAnObject(&'static str),
}

/// Parses a record that is known to be UTF-8.
pub fn parse(text: &str) -> Result<Envelope<'_>, ParseError> {
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(ParseError::Malformed("the record is empty".into())),
        Some(b'{') => serde_json::from_str::<Envelope>(text).map_err(|error| ParseError::Malformed(error.to_string())),
        Some(_) => match serde_json::from_str::<Field<'_, Skip>>(text) {
            Ok(value) => Err(ParseError::NotAnObject(value.type_name())),
            Err(error) => Err(ParseError::Malformed(error.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_accept_every_json_type() {
        let cases: &[(&str, Field<'_, Skip>)] = &[
            ("true", Field::Scalar(Scalar::Bool(true))),
            ("-3", Field::Scalar(Scalar::Int(-3))),
            ("3", Field::Scalar(Scalar::UInt(3))),
            ("1.5", Field::Scalar(Scalar::Float(1.5))),
            ("\"a\"", Field::Scalar(Scalar::Str(Cow::Borrowed("a")))),
            ("\"a\\nb\"", Field::Scalar(Scalar::Str(Cow::Owned("a\nb".into())))),
            ("[1,[2],{\"x\":3}]", Field::Scalar(Scalar::Array)),
            ("{\"x\":[1]}", Field::Object(Skip)),
            ("null", Field::Scalar(Scalar::Null)),
        ];
        for (json, expected) in cases {
            let field: Field<'_, Skip> = serde_json::from_str(json).expect(json);
            assert_eq!(&field, expected, "{json}");
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let envelope = parse(r#"{"tenantId":"acme","name":"a\"b"}"#).expect("valid");
        assert!(matches!(envelope.tenant_id.0, Some(Field::Scalar(Scalar::Str(Cow::Borrowed("acme"))))));
        assert!(matches!(envelope.name.0, Some(Field::Scalar(Scalar::Str(Cow::Owned(_))))));
    }

    #[test]
    fn wrong_types_parse_and_are_left_for_validation() {
        let envelope = parse(r#"{"actor":{"x":1},"action":7,"actorIdentity":"p","reason":[1]}"#).expect("lenient");
        assert!(matches!(envelope.actor.0, Some(Field::Object(Skip))));
        assert!(matches!(envelope.action.0, Some(Field::Scalar(Scalar::UInt(7)))));
        assert!(matches!(envelope.actor_identity.0, Some(Field::Scalar(Scalar::Str(_)))));
        assert!(matches!(envelope.reason.0, Some(Field::Scalar(Scalar::Array))));
    }

    #[test]
    fn null_is_absent() {
        let envelope = parse(r#"{"itemId":null,"reason":null}"#).expect("valid");
        assert!(envelope.item_id.0.is_none() && envelope.reason.0.is_none());
    }

    #[test]
    fn malformed_and_non_object_records_are_told_apart() {
        let cases: &[(&str, ParseError)] = &[
            ("", ParseError::Malformed(String::new())),
            ("   ", ParseError::Malformed(String::new())),
            ("{", ParseError::Malformed(String::new())),
            ("{\"a\":1", ParseError::Malformed(String::new())),
            ("{\"a\":1}}", ParseError::Malformed(String::new())),
            ("{\"a\":1} {\"a\":2}", ParseError::Malformed(String::new())),
            ("{'a':1}", ParseError::Malformed(String::new())),
            ("nul", ParseError::Malformed(String::new())),
            ("{\"tenantId\":\"a\",\"tenantId\":\"b\"}", ParseError::Malformed(String::new())),
            ("[1,2]", ParseError::NotAnObject("an array")),
            ("\"text\"", ParseError::NotAnObject("a string")),
            ("42", ParseError::NotAnObject("a number")),
            ("null", ParseError::NotAnObject("null")),
            (" true ", ParseError::NotAnObject("a boolean")),
        ];
        for (text, expected) in cases {
            let got = parse(text).expect_err(text);
            match (expected, &got) {
                (ParseError::Malformed(_), ParseError::Malformed(detail)) => {
                    assert!(!detail.is_empty())
                }
                _ => assert_eq!(&got, expected, "{text:?}"),
            }
        }
    }

    #[test]
    fn duplicate_keys_are_malformed() {
        let error = parse(r#"{"tenantId":"a","tenantId":"b"}"#).expect_err("duplicate");
        assert!(matches!(error, ParseError::Malformed(ref d) if d.contains("duplicate field `tenantId`")), "{error:?}");
        let nested = parse(r#"{"acsControl":{"action":"pause","action":"resume"}}"#).expect_err("duplicate");
        assert!(matches!(nested, ParseError::Malformed(ref d) if d.contains("duplicate field")), "{nested:?}");
    }

    #[test]
    fn unknown_keys_are_skipped() {
        let envelope =
            parse(r#"{"testOutcomes":[{"id":"SCORE","value":7}],"x":{"y":[1,2]},"login":"u"}"#).expect("valid");
        assert!(matches!(envelope.login.0, Some(Field::Scalar(Scalar::Str(_)))));
    }
}
