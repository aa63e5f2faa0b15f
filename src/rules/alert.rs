//! The alert a rule fires: its facts (rule, severity, scope, counts, window, evidence) and
//! its deterministic id. Plain data: its records, `acs.v1.Alert` and the JSON contract, are
//! written by [`crate::encode::alert`]. The JSON contract is the `Serialize` derive below
//! (camelCase, epoch milliseconds, `null` for what a tenant-scoped alert has not).

use std::sync::Arc;

use serde::Serialize;
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_128;

use super::config::{RuleMode, Severity};
use crate::model::{Action, Event, ReasonCode};

/// A reason code as evidence: a number, text kept raw, or `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EvidenceCode {
    Numeric(i64),
    Raw(Box<str>),
}

/// One event an alert is about: where it was read, what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub message_id: Box<str>,
    pub action: Option<Action>,
    pub reason_code: Option<EvidenceCode>,
    /// Epoch milliseconds.
    pub incident_time: i64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// An [`Evidence`], borrowed (from an evidence held, or from the event itself): what the
/// encodings are written from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceRef<'a> {
    pub message_id: &'a str,
    pub action: Option<Action>,
    pub reason_code: Option<EvidenceCodeRef<'a>>,
    /// Epoch milliseconds.
    pub incident_time: i64,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// An [`EvidenceCode`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EvidenceCodeRef<'a> {
    Numeric(i64),
    Raw(&'a str),
}

/// The JSON contract: the same document as its [`EvidenceRef`]'s.
impl Serialize for Evidence {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.borrowed().serialize(serializer)
    }
}

impl<'a> EvidenceRef<'a> {
    /// The evidence `event` is.
    pub fn of(event: &'a Event<'_>) -> EvidenceRef<'a> {
        EvidenceRef {
            message_id: &event.message_id,
            action: event.action,
            reason_code: match &event.reason_code {
                ReasonCode::None => None,
                ReasonCode::Numeric(code) => Some(EvidenceCodeRef::Numeric(*code)),
                ReasonCode::Raw(raw) => Some(EvidenceCodeRef::Raw(raw)),
            },
            incident_time: event.incident_time,
            topic: &event.source.topic,
            partition: event.source.partition,
            offset: event.source.offset,
        }
    }

    /// An owned copy.
    pub fn to_evidence(&self) -> Evidence {
        self.owned_with(Arc::from(self.topic))
    }

    /// An owned copy, its topic name `topic` (shared).
    fn owned_with(&self, topic: Arc<str>) -> Evidence {
        Evidence {
            message_id: Box::from(self.message_id),
            action: self.action,
            reason_code: self.reason_code.map(|code| match code {
                EvidenceCodeRef::Numeric(code) => EvidenceCode::Numeric(code),
                EvidenceCodeRef::Raw(raw) => EvidenceCode::Raw(Box::from(raw)),
            }),
            incident_time: self.incident_time,
            topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

impl Evidence {
    /// Borrowed.
    pub fn borrowed(&self) -> EvidenceRef<'_> {
        EvidenceRef {
            message_id: &self.message_id,
            action: self.action,
            reason_code: self.reason_code.as_ref().map(|code| match code {
                EvidenceCode::Numeric(code) => EvidenceCodeRef::Numeric(*code),
                EvidenceCode::Raw(raw) => EvidenceCodeRef::Raw(raw),
            }),
            incident_time: self.incident_time,
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// The evidence `event` is (sharing the event's topic name).
    pub fn of(event: &Event<'_>) -> Evidence {
        EvidenceRef::of(event).owned_with(event.source.topic.clone())
    }
}

/// A fired rule. Everything in it is a function of the input events (no processing
/// time), so that a replay yields the same alerts, byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Deterministic: see [`alert_id`].
    pub alert_id: String,
    pub rule_id: Arc<str>,
    pub severity: Severity,
    pub tenant_id: Arc<str>,
    /// The session; `null` for a tenant-scoped rule.
    pub delivery_execution_id: Option<String>,
    /// The session's test taker; `null` for a tenant-scoped rule or when not sent.
    pub test_taker: Option<String>,
    pub title: Arc<str>,
    pub summary: String,
    /// Events counted (the evidence's length).
    pub count: u32,
    /// Incident times of the first and the last evidence, epoch milliseconds.
    pub window_start: i64,
    pub window_end: i64,
    /// Incident time of the event that made the rule fire, epoch milliseconds.
    pub fired_at: i64,
    /// The events counted, by incident time.
    pub evidence: Vec<Evidence>,
    /// The rule's mode: a shadow rule's alerts go to the shadow alerts topic only.
    pub mode: RuleMode,
}

/// An alert's fields, borrowed: what the engine fires without copying them, and what an
/// [`Alert`] lends. Both encodings (JSON and `acs.v1.Alert`) are written from it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertView<'a> {
    pub alert_id: &'a str,
    /// The rule's id, shared (an owned copy, [`Alert`], shares it).
    pub rule_id: &'a Arc<str>,
    pub severity: Severity,
    pub tenant_id: &'a str,
    pub delivery_execution_id: Option<&'a str>,
    pub test_taker: Option<&'a str>,
    pub title: &'a str,
    pub summary: &'a str,
    pub count: u32,
    pub window_start: i64,
    pub window_end: i64,
    pub fired_at: i64,
    pub evidence: &'a [EvidenceRef<'a>],
    /// Written (`"mode": "shadow"`) only for a shadow rule's alert.
    #[serde(skip_serializing_if = "RuleMode::is_live")]
    pub mode: RuleMode,
}

/// The JSON contract: the same document as its [`AlertView`]'s.
impl Serialize for Alert {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_view(|view| view.serialize(serializer))
    }
}

impl Alert {
    /// `f` of its fields, borrowed.
    pub fn with_view<R>(&self, f: impl FnOnce(&AlertView<'_>) -> R) -> R {
        let evidence: SmallVec<[EvidenceRef<'_>; 4]> = self.evidence.iter().map(Evidence::borrowed).collect();
        f(&AlertView {
            alert_id: &self.alert_id,
            rule_id: &self.rule_id,
            severity: self.severity,
            tenant_id: &self.tenant_id,
            delivery_execution_id: self.delivery_execution_id.as_deref(),
            test_taker: self.test_taker.as_deref(),
            title: &self.title,
            summary: &self.summary,
            count: self.count,
            window_start: self.window_start,
            window_end: self.window_end,
            fired_at: self.fired_at,
            evidence: &evidence,
            mode: self.mode,
        })
    }
}

impl<'a> AlertView<'a> {
    /// An owned copy.
    pub fn to_alert(&self) -> Alert {
        Alert {
            alert_id: self.alert_id.to_owned(),
            rule_id: self.rule_id.clone(),
            severity: self.severity,
            tenant_id: Arc::from(self.tenant_id),
            delivery_execution_id: self.delivery_execution_id.map(str::to_owned),
            test_taker: self.test_taker.map(str::to_owned),
            title: Arc::from(self.title),
            summary: self.summary.to_owned(),
            count: self.count,
            window_start: self.window_start,
            window_end: self.window_end,
            fired_at: self.fired_at,
            evidence: self.evidence.iter().map(EvidenceRef::to_evidence).collect(),
            mode: self.mode,
        }
    }
}

/// A UUID v8 holding the XXH3-128 of the rule id, the scope key (delivery execution or
/// tenant id), the group (e.g. the signal kind; empty without one), and the first
/// evidence's message id and incident time: the same input yields the same id.
pub fn alert_id(rule: &str, scope_key: &str, group: &str, first: &Evidence) -> String {
    alert_id_in(&mut [0; ALERT_ID_LEN], rule, scope_key, group, &first.borrowed()).to_owned()
}

/// The length of an alert id (a hyphenated UUID).
pub(crate) const ALERT_ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// [`alert_id`], written in `text`.
pub(crate) fn alert_id_in<'t>(
    text: &'t mut [u8; ALERT_ID_LEN],
    rule: &str,
    scope_key: &str,
    group: &str,
    first: &EvidenceRef<'_>,
) -> &'t str {
    let parts = [rule, scope_key, group, first.message_id];
    let len = parts.iter().map(|part| part.len() + 1).sum::<usize>() + 8;
    let fill = |bytes: &mut [u8]| {
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
            bytes[at + part.len()] = 0;
            at += part.len() + 1;
        }
        bytes[at..].copy_from_slice(&first.incident_time.to_be_bytes());
    };
    // On the stack when it fits (ids are short); the same bytes either way.
    let mut stack = [0u8; 256];
    let hash = if len <= stack.len() {
        fill(&mut stack[..len]);
        xxh3_128(&stack[..len])
    } else {
        let mut bytes = vec![0; len];
        fill(&mut bytes);
        xxh3_128(&bytes)
    };
    uuid::Uuid::new_v8(hash.to_be_bytes()).hyphenated().encode_lower(text)
}

/// A pause's evidence, for tests: `message_id` at `at` (epoch ms), offset `offset` of
/// `acs.raw` partition 3, reason code 20010.
#[cfg(test)]
pub(crate) fn evidence_sample(message_id: &str, at: i64, offset: i64) -> Evidence {
    Evidence {
        message_id: Box::from(message_id),
        action: Some(Action::Pause),
        reason_code: Some(EvidenceCode::Numeric(20010)),
        incident_time: at,
        topic: Arc::from("acs.raw"),
        partition: 3,
        offset,
    }
}

#[cfg(test)]
mod tests {
    use super::evidence_sample as evidence;
    use super::*;

    #[test]
    fn alert_ids_are_deterministic_uuid_v8() {
        let first = evidence("m1", 1_767_261_000_000, 41);
        let id = alert_id("r", "s", "", &first);
        assert_eq!(id, alert_id("r", "s", "", &evidence("m1", 1_767_261_000_000, 99)), "offsets do not matter");
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
        let others = [
            alert_id("r2", "s", "", &first),
            alert_id("r", "s2", "", &first),
            alert_id("r", "s", "flag", &first),
            alert_id("r", "s", "", &evidence("m2", 1_767_261_000_000, 41)),
            alert_id("r", "s", "", &evidence("m1", 1_767_261_000_001, 41)),
            // Parts are separated: moving a character across a boundary changes the id.
            alert_id("rs", "", "", &first),
        ];
        for other in others {
            assert_ne!(other, id);
        }
    }
}
