//! Why a record is dead-lettered: a closed set of error codes (DESIGN.md §3).

use std::fmt;

/// The dead-letter error codes, in the order the checks run (see [`super::Decoder::decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// The value is not UTF-8.
    InvalidUtf8,
    /// The value is larger than `input.max_event_bytes`.
    TooLarge,
    /// Not JSON: a syntax error, trailing data, an empty value, or a duplicate key.
    MalformedJson,
    /// JSON, but not an object (array, string, number, boolean, null).
    NotAnObject,
    /// No delivery execution id (absent, null, empty, or not a string).
    MissingDeliveryExecutionId,
    /// A delivery execution id that claims TAO's `<user>#<delivery>#<attempt>#<tenant>` form
    /// (three or more `#`) with an empty segment: its tenant cannot be checked.
    InvalidDeliveryExecutionId,
    /// No tenant: no `tenantId` and none derivable from the delivery execution id.
    MissingTenant,
    /// The tenant is not usable in a topic name (`[A-Za-z0-9._-]+` with a letter or digit,
    /// whole topic name at most 249 characters) or `tenantId` is not a string.
    InvalidTenant,
    /// The sources of the tenant disagree (`tenantId` vs the delivery execution id's segment).
    TenantMismatch,
    /// A tenant allow-list is configured and the tenant is not on it.
    UnknownTenant,
    /// The shape's time field is absent, unreadable, before 2000 or more than a day ahead.
    InvalidTime,
    /// A field of the wrong JSON type where no lenient reading exists.
    InvalidField,
    /// Kafka runtime only: an output could not be produced (non-retriable error).
    ProduceFailed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidUtf8,
        ErrorCode::TooLarge,
        ErrorCode::MalformedJson,
        ErrorCode::NotAnObject,
        ErrorCode::MissingDeliveryExecutionId,
        ErrorCode::InvalidDeliveryExecutionId,
        ErrorCode::MissingTenant,
        ErrorCode::InvalidTenant,
        ErrorCode::TenantMismatch,
        ErrorCode::UnknownTenant,
        ErrorCode::InvalidTime,
        ErrorCode::InvalidField,
        ErrorCode::ProduceFailed,
    ];

    /// The code's name as it appears in the `acs.error.code` header and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::NotAnObject => "not_an_object",
            ErrorCode::MissingDeliveryExecutionId => "missing_delivery_execution_id",
            ErrorCode::InvalidDeliveryExecutionId => "invalid_delivery_execution_id",
            ErrorCode::MissingTenant => "missing_tenant",
            ErrorCode::InvalidTenant => "invalid_tenant",
            ErrorCode::TenantMismatch => "tenant_mismatch",
            ErrorCode::UnknownTenant => "unknown_tenant",
            ErrorCode::InvalidTime => "invalid_time",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::ProduceFailed => "produce_failed",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A record refused by validation: the code and a human-readable detail.
///
/// The detail names the field and what was wrong with it. It never quotes personal data
/// (login, name, IP, user agent, reason message) and quotes other values only in part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Rejection {
    pub code: ErrorCode,
    pub detail: String,
    /// The record's tenant, when decoding read it before refusing the record (its privacy
    /// mode decides whether the dead letter keeps the value).
    pub tenant: Option<Box<str>>,
    /// Set by the pipeline as the record becomes a dead letter: the configuration that refused
    /// it (`None` for the Kafka runtime's own `produce_failed`).
    pub stamp: Option<std::sync::Arc<crate::model::Stamp>>,
    /// Set by the pipeline when the dead letter must not carry the original value (its
    /// tenant's personal data is protected and `privacy.dead_letter_value = "omit"`): why.
    pub omit_value: Option<&'static str>,
}

impl Rejection {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Rejection {
        Rejection { code, detail: detail.into(), tenant: None, stamp: None, omit_value: None }
    }
}

/// Quotes at most 64 characters of a value for an error detail.
pub(crate) fn excerpt(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} characters)", &value[..cut], value.chars().count()),
    }
}
