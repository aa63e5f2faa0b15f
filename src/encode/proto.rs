//! Protobuf encoding (schemas in `proto/acs/v1/`, compiled by prost in `build.rs`).
//!
//! Events are encoded straight from the borrowed [`Event`] in one pass over an exactly
//! sized buffer: no intermediate message, no copy of every string into it. The field
//! numbers below are those of `proto/acs/v1/event.proto`; the test
//! `direct_encoding_equals_prost` decodes the output with the prost-generated types and
//! compares it with [`to_message`], the plain conversion, for a large synthetic corpus, so
//! the two cannot drift apart.

use prost::encoding::encoded_len_varint;

use crate::model::{self, Event, ReasonCode};

/// Generated types of package `acs.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/acs.v1.rs"));
}

/// The fully qualified message name, for the `acs-schema` header.
pub const EVENT_SCHEMA: &str = "acs.v1.EnrichedEvent";

fn actor(actor: model::Actor) -> pb::Actor {
    match actor {
        model::Actor::TestTaker => pb::Actor::TestTaker,
        model::Actor::Proctor => pb::Actor::Proctor,
        model::Actor::System => pb::Actor::System,
        model::Actor::DeliverFe => pb::Actor::DeliverFe,
        model::Actor::SecurityPlugin => pb::Actor::SecurityPlugin,
        model::Actor::Realtime => pb::Actor::Realtime,
        model::Actor::Other => pb::Actor::Other,
    }
}

pub(crate) fn action(action: model::Action) -> pb::Action {
    match action {
        model::Action::Start => pb::Action::Start,
        model::Action::Pause => pb::Action::Pause,
        model::Action::Resume => pb::Action::Resume,
        model::Action::Terminate => pb::Action::Terminate,
        model::Action::Termination => pb::Action::Termination,
        model::Action::Reset => pb::Action::Reset,
        model::Action::Submission => pb::Action::Submission,
        model::Action::Update => pb::Action::Update,
        model::Action::Flag => pb::Action::Flag,
        model::Action::Log => pb::Action::Log,
        model::Action::Navigation => pb::Action::Navigation,
        model::Action::Other => pb::Action::Other,
    }
}

fn status(status: model::Status) -> pb::Status {
    match status {
        model::Status::Initial => pb::Status::Initial,
        model::Status::Authorized => pb::Status::Authorized,
        model::Status::Interacting => pb::Status::Interacting,
        model::Status::Suspended => pb::Status::Suspended,
        model::Status::Terminated => pb::Status::Terminated,
        model::Status::Closed => pb::Status::Closed,
        model::Status::Canceled => pb::Status::Canceled,
        model::Status::Other => pb::Status::Other,
    }
}

fn shape(shape: model::Shape) -> pb::Shape {
    match shape {
        model::Shape::Flat => pb::Shape::Flat,
        model::Shape::Control => pb::Shape::Control,
        model::Shape::Log => pb::Shape::Log,
        model::Shape::Acs => pb::Shape::Acs,
    }
}

fn category(category: model::Category) -> pb::ReasonCategory {
    match category {
        model::Category::Environment => pb::ReasonCategory::Environment,
        model::Category::Examinee => pb::ReasonCategory::Examinee,
        model::Category::ProctorStaff => pb::ReasonCategory::ProctorStaff,
        model::Category::Technical => pb::ReasonCategory::Technical,
    }
}

fn signal_kind(kind: model::SignalKind) -> pb::SignalKind {
    use model::SignalKind as K;
    match kind {
        K::PauseOnBlur => pb::SignalKind::PauseOnBlur,
        K::FullScreen => pb::SignalKind::FullScreen,
        K::DisableRightClick => pb::SignalKind::DisableRightClick,
        K::DisableCommands => pb::SignalKind::DisableCommands,
        K::PreventScreenshot => pb::SignalKind::PreventScreenshot,
        K::LockdownBrowser => pb::SignalKind::LockdownBrowser,
        K::SecurityPlugin => pb::SignalKind::SecurityPlugin,
        K::IpChange => pb::SignalKind::IpChange,
        K::DeliverFe => pb::SignalKind::DeliverFe,
        K::Realtime => pb::SignalKind::Realtime,
        K::ProctorComment => pb::SignalKind::ProctorComment,
        K::StructuredData => pb::SignalKind::StructuredData,
    }
}

// The way back, for `tail` (`json::from_proto`): `UNSPECIFIED` is no value.

pub(crate) fn model_actor(actor: pb::Actor) -> Option<model::Actor> {
    match actor {
        pb::Actor::Unspecified => None,
        pb::Actor::TestTaker => Some(model::Actor::TestTaker),
        pb::Actor::Proctor => Some(model::Actor::Proctor),
        pb::Actor::System => Some(model::Actor::System),
        pb::Actor::DeliverFe => Some(model::Actor::DeliverFe),
        pb::Actor::SecurityPlugin => Some(model::Actor::SecurityPlugin),
        pb::Actor::Realtime => Some(model::Actor::Realtime),
        pb::Actor::Other => Some(model::Actor::Other),
    }
}

pub(crate) fn model_action(action: pb::Action) -> Option<model::Action> {
    match action {
        pb::Action::Unspecified => None,
        pb::Action::Start => Some(model::Action::Start),
        pb::Action::Pause => Some(model::Action::Pause),
        pb::Action::Resume => Some(model::Action::Resume),
        pb::Action::Terminate => Some(model::Action::Terminate),
        pb::Action::Termination => Some(model::Action::Termination),
        pb::Action::Reset => Some(model::Action::Reset),
        pb::Action::Submission => Some(model::Action::Submission),
        pb::Action::Update => Some(model::Action::Update),
        pb::Action::Flag => Some(model::Action::Flag),
        pb::Action::Log => Some(model::Action::Log),
        pb::Action::Navigation => Some(model::Action::Navigation),
        pb::Action::Other => Some(model::Action::Other),
    }
}

pub(crate) fn model_status(status: pb::Status) -> Option<model::Status> {
    match status {
        pb::Status::Unspecified => None,
        pb::Status::Initial => Some(model::Status::Initial),
        pb::Status::Authorized => Some(model::Status::Authorized),
        pb::Status::Interacting => Some(model::Status::Interacting),
        pb::Status::Suspended => Some(model::Status::Suspended),
        pb::Status::Terminated => Some(model::Status::Terminated),
        pb::Status::Closed => Some(model::Status::Closed),
        pb::Status::Canceled => Some(model::Status::Canceled),
        pb::Status::Other => Some(model::Status::Other),
    }
}

pub(crate) fn model_shape(shape: pb::Shape) -> Option<model::Shape> {
    match shape {
        pb::Shape::Unspecified => None,
        pb::Shape::Flat => Some(model::Shape::Flat),
        pb::Shape::Control => Some(model::Shape::Control),
        pb::Shape::Log => Some(model::Shape::Log),
        pb::Shape::Acs => Some(model::Shape::Acs),
    }
}

pub(crate) fn model_category(category: pb::ReasonCategory) -> Option<model::Category> {
    match category {
        pb::ReasonCategory::Unspecified => None,
        pb::ReasonCategory::Environment => Some(model::Category::Environment),
        pb::ReasonCategory::Examinee => Some(model::Category::Examinee),
        pb::ReasonCategory::ProctorStaff => Some(model::Category::ProctorStaff),
        pb::ReasonCategory::Technical => Some(model::Category::Technical),
    }
}

pub(crate) fn model_signal_kind(kind: pb::SignalKind) -> Option<model::SignalKind> {
    use model::SignalKind as K;
    match kind {
        pb::SignalKind::Unspecified => None,
        pb::SignalKind::PauseOnBlur => Some(K::PauseOnBlur),
        pb::SignalKind::FullScreen => Some(K::FullScreen),
        pb::SignalKind::DisableRightClick => Some(K::DisableRightClick),
        pb::SignalKind::DisableCommands => Some(K::DisableCommands),
        pb::SignalKind::PreventScreenshot => Some(K::PreventScreenshot),
        pb::SignalKind::LockdownBrowser => Some(K::LockdownBrowser),
        pb::SignalKind::SecurityPlugin => Some(K::SecurityPlugin),
        pb::SignalKind::IpChange => Some(K::IpChange),
        pb::SignalKind::DeliverFe => Some(K::DeliverFe),
        pb::SignalKind::Realtime => Some(K::Realtime),
        pb::SignalKind::ProctorComment => Some(K::ProctorComment),
        pb::SignalKind::StructuredData => Some(K::StructuredData),
    }
}

/// Where encoded bytes go: a buffer, or a counter that sizes the buffer first.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn varint(&mut self, value: u64);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn varint(&mut self, mut value: u64) {
        // The same bytes as `prost::encoding::encode_varint`, without its generic `BufMut`
        // bounds checks per byte (7% of the core's time when measured).
        while value >= 0x80 {
            self.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.push(value as u8);
    }
}

/// Counts the bytes an encoding takes.
struct Len(usize);

impl Sink for Len {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn varint(&mut self, value: u64) {
        self.0 += encoded_len_varint(value);
    }
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

fn key<S: Sink>(s: &mut S, tag: u32, wire: u32) {
    s.varint(u64::from((tag << 3) | wire));
}

/// A string that is always written (`optional` fields that are set, oneof members).
fn string<S: Sink>(s: &mut S, tag: u32, value: &str) {
    key(s, tag, LEN);
    s.varint(value.len() as u64);
    s.put(value.as_bytes());
}

/// A proto3 string: the empty default is not written.
fn string3<S: Sink>(s: &mut S, tag: u32, value: &str) {
    if !value.is_empty() {
        string(s, tag, value);
    }
}

fn opt_string<S: Sink>(s: &mut S, tag: u32, value: Option<&str>) {
    if let Some(value) = value {
        string(s, tag, value);
    }
}

/// An int64/int32/enum/bool as a varint (negative numbers sign-extended, as protobuf does).
fn varint<S: Sink>(s: &mut S, tag: u32, value: i64) {
    key(s, tag, VARINT);
    s.varint(value as u64);
}

/// A proto3 varint: the zero default is not written.
fn varint3<S: Sink>(s: &mut S, tag: u32, value: i64) {
    if value != 0 {
        varint(s, tag, value);
    }
}

fn opt_double<S: Sink>(s: &mut S, tag: u32, value: Option<f64>) {
    if let Some(value) = value {
        key(s, tag, FIXED64);
        s.put(&value.to_bits().to_le_bytes());
    }
}

/// A proto3 double: the zero default is not written.
fn double3<S: Sink>(s: &mut S, tag: u32, value: f64) {
    if value != 0.0 {
        opt_double(s, tag, Some(value));
    }
}

/// Writes a nested message: its exact length first, then its body.
macro_rules! nested {
    ($sink:expr, $tag:expr, $body:ident($($arg:expr),*)) => {{
        let mut len = Len(0);
        $body(&mut len, $($arg),*);
        key($sink, $tag, LEN);
        $sink.varint(len.0 as u64);
        $body($sink, $($arg),*);
    }};
}

fn action_status_body<S: Sink>(s: &mut S, value: model::ActionStatus, raw: Option<&str>) {
    match value {
        model::ActionStatus::Succeeded => varint(s, 1, 1),
        model::ActionStatus::Failed => varint(s, 2, 1),
        model::ActionStatus::Session(session) => varint(s, 3, status(session) as i64),
        model::ActionStatus::Other => string(s, 4, raw.unwrap_or_default()),
    }
}

fn reason_body<S: Sink>(s: &mut S, info: &model::ReasonInfo) {
    varint3(s, 1, category(info.category) as i64);
    string3(s, 2, &info.cause);
    string3(s, 3, info.description.as_deref().unwrap_or_default());
}

fn signal_body<S: Sink>(s: &mut S, signal: &model::Signal) {
    varint3(s, 1, signal_kind(signal.kind) as i64);
    opt_string(s, 3, signal.command.as_deref());
    opt_string(s, 4, signal.about.map(|a| a.as_str()));
    opt_string(s, 5, signal.issue.map(|i| i.as_str()));
    for process in &signal.processes {
        string(s, 6, process);
    }
    for tag in &signal.tags {
        string(s, 7, tag);
    }
    opt_string(s, 8, signal.data.as_ref().map(|d| d.as_str()));
    opt_string(s, 9, signal.data_format.map(|f| f.as_str()));
}

fn session_body<S: Sink>(s: &mut S, session: &model::SessionView) {
    varint3(s, 1, session.status_before.map_or(pb::Status::Unspecified, status) as i64);
    varint3(s, 2, session.status_after.map_or(pb::Status::Unspecified, status) as i64);
    varint3(s, 3, i64::from(session.transition_valid));
    varint3(s, 4, session.sequence as i64);
    varint3(s, 5, i64::from(session.pause_count));
    varint3(s, 6, i64::from(session.security_flag_count));
    double3(s, 7, session.extra_time_minutes);
    varint3(s, 8, session.first_seen);
    varint3(s, 9, session.last_seen);
    varint3(s, 10, i64::from(session.duplicate));
}

fn source_body<S: Sink>(s: &mut S, source: &model::Source) {
    string3(s, 1, &source.topic);
    varint3(s, 2, i64::from(source.partition));
    varint3(s, 3, source.offset);
}

fn event_body<S: Sink>(s: &mut S, e: &Event<'_>) {
    string3(s, 1, &e.tenant_id);
    string3(s, 2, &e.delivery_execution_id);
    opt_string(s, 3, e.delivery_id.as_deref());
    string3(s, 4, &e.message_id);
    varint3(s, 5, i64::from(e.message_id_generated));
    varint3(s, 6, shape(e.shape) as i64);
    varint3(s, 7, e.actor.map_or(pb::Actor::Unspecified, actor) as i64);
    opt_string(s, 8, e.actor_raw.as_deref());
    opt_string(s, 9, e.actor_id.as_deref());
    opt_string(s, 10, e.test_taker.as_deref());
    opt_string(s, 11, e.login.as_deref());
    opt_string(s, 12, e.name.as_deref());
    opt_string(s, 13, e.user_agent.as_deref());
    opt_string(s, 14, e.ip.as_deref());
    varint3(s, 15, e.action.map_or(pb::Action::Unspecified, action) as i64);
    opt_string(s, 16, e.action_raw.as_deref());
    if let Some(value) = e.action_status {
        nested!(s, 17, action_status_body(value, e.action_status_raw.as_deref()));
    }
    opt_string(s, 18, e.action_status_raw.as_deref());
    varint3(s, 19, e.status.map_or(pb::Status::Unspecified, status) as i64);
    opt_string(s, 20, e.status_raw.as_deref());
    opt_string(s, 21, e.acs_status.as_deref());
    match &e.reason_code {
        ReasonCode::None => {}
        ReasonCode::Numeric(code) => varint(s, 22, *code),
        ReasonCode::Raw(raw) => string(s, 23, raw),
    }
    opt_string(s, 24, e.reason_message.as_deref());
    if let Some(info) = &e.reason {
        nested!(s, 25, reason_body(info));
    }
    if let Some(signal) = &e.signal {
        nested!(s, 26, signal_body(signal));
    }
    opt_double(s, 27, e.extra_time);
    opt_double(s, 28, e.extra_time_total);
    varint3(s, 29, e.incident_time);
    if let Some(last_update) = e.last_update {
        varint(s, 30, last_update);
    }
    opt_string(s, 31, e.item_id.as_deref());
    opt_string(s, 32, e.resource_link.as_deref());
    if let Some(attempt) = e.attempt_number {
        varint(s, 33, i64::from(attempt));
    }
    opt_double(s, 34, e.incident_severity);
    for anomaly in &e.anomalies {
        string(s, 35, anomaly.as_str());
    }
    nested!(s, 36, source_body(&e.source));
    string3(s, 37, crate::VERSION);
    varint3(s, 38, e.processed_at);
    if let Some(session) = &e.session {
        nested!(s, 39, session_body(session));
    }
    if let Some(stamp) = &e.stamp {
        string3(s, 40, &stamp.rules_version);
        string3(s, 41, &stamp.catalog_version);
    }
    if let Some(privacy) = &e.privacy {
        nested!(s, 42, privacy_body(privacy));
    }
}

fn privacy_body<S: Sink>(s: &mut S, privacy: &model::PrivacyMark) {
    string3(s, 1, privacy.mode);
    string3(s, 2, &privacy.key_id);
}

/// Encodes an event as `acs.v1.EnrichedEvent` bytes.
///
/// `capacity` sizes the buffer up front: the input record's length plus a margin is a
/// close upper bound (most of an event is text taken from it), and a low guess only costs
/// a reallocation.
pub fn to_vec(event: &Event<'_>, capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity);
    event_body(&mut buf, event);
    buf
}

/// The exact encoded length of an event.
pub fn encoded_len(event: &Event<'_>) -> usize {
    let mut len = Len(0);
    event_body(&mut len, event);
    len.0
}

/// The event as a prost message (the plain conversion; tests use it).
pub fn to_message(event: &Event<'_>) -> pb::EnrichedEvent {
    let owned = |text: &Option<model::Text<'_>>| text.as_deref().map(str::to_owned);
    let (reason_code, reason_code_raw) = match &event.reason_code {
        ReasonCode::None => (None, None),
        ReasonCode::Numeric(code) => (Some(*code), None),
        ReasonCode::Raw(raw) => (None, Some(raw.to_string())),
    };
    let action_status = event.action_status.map(|value| {
        use pb::action_status::Value;
        let value = match value {
            model::ActionStatus::Succeeded => Value::Succeeded(true),
            model::ActionStatus::Failed => Value::Failed(true),
            model::ActionStatus::Session(s) => Value::Session(status(s) as i32),
            model::ActionStatus::Other => Value::Other(owned(&event.action_status_raw).unwrap_or_default()),
        };
        pb::ActionStatus { value: Some(value) }
    });
    pb::EnrichedEvent {
        tenant_id: event.tenant_id.to_string(),
        delivery_execution_id: event.delivery_execution_id.to_string(),
        delivery_id: owned(&event.delivery_id),
        message_id: event.message_id.to_string(),
        message_id_generated: event.message_id_generated,
        shape: shape(event.shape) as i32,
        actor: event.actor.map_or(pb::Actor::Unspecified, actor) as i32,
        actor_raw: owned(&event.actor_raw),
        actor_id: owned(&event.actor_id),
        test_taker: owned(&event.test_taker),
        login: owned(&event.login),
        name: owned(&event.name),
        user_agent: owned(&event.user_agent),
        ip: owned(&event.ip),
        action: event.action.map_or(pb::Action::Unspecified, action) as i32,
        action_raw: owned(&event.action_raw),
        action_status,
        action_status_raw: owned(&event.action_status_raw),
        status: event.status.map_or(pb::Status::Unspecified, status) as i32,
        status_raw: owned(&event.status_raw),
        acs_status: owned(&event.acs_status),
        reason_code,
        reason_code_raw,
        reason_message: owned(&event.reason_message),
        reason: event.reason.as_ref().map(|info| pb::Reason {
            category: category(info.category) as i32,
            cause: info.cause.to_string(),
            description: info.description.as_deref().unwrap_or_default().to_owned(),
        }),
        signal: event.signal.as_ref().map(|signal| pb::Signal {
            kind: signal_kind(signal.kind) as i32,
            command: signal.command.clone(),
            about: signal.about.map(|a| a.as_str().to_owned()),
            issue: signal.issue.map(|i| i.as_str().to_owned()),
            processes: signal.processes.clone(),
            tags: signal.tags.clone(),
            data_json: signal.data.as_ref().map(|d| d.as_str().to_owned()),
            data_format: signal.data_format.map(|f| f.as_str().to_owned()),
        }),
        extra_time: event.extra_time,
        extra_time_total: event.extra_time_total,
        incident_time: event.incident_time,
        last_update: event.last_update,
        item_id: owned(&event.item_id),
        resource_link: owned(&event.resource_link),
        attempt_number: event.attempt_number,
        incident_severity: event.incident_severity,
        anomalies: event.anomalies.iter().map(|a| a.as_str().to_owned()).collect(),
        source: Some(pb::Source {
            topic: event.source.topic.to_string(),
            partition: event.source.partition,
            offset: event.source.offset,
        }),
        processor_version: crate::VERSION.to_owned(),
        processed_at: event.processed_at,
        session: event.session.as_ref().map(|session| pb::Session {
            status_before: session.status_before.map_or(pb::Status::Unspecified, status) as i32,
            status_after: session.status_after.map_or(pb::Status::Unspecified, status) as i32,
            transition_valid: session.transition_valid,
            sequence: session.sequence,
            pause_count: session.pause_count,
            security_flag_count: session.security_flag_count,
            extra_time_minutes: session.extra_time_minutes,
            first_seen: session.first_seen,
            last_seen: session.last_seen,
            duplicate: session.duplicate,
        }),
        rules_version: event.stamp.as_ref().map(|s| s.rules_version.to_string()).unwrap_or_default(),
        catalog_version: event.stamp.as_ref().map(|s| s.catalog_version.to_string()).unwrap_or_default(),
        privacy: event.privacy.as_ref().map(|p| pb::Privacy { mode: p.mode.to_owned(), key_id: p.key_id.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::*;
    use crate::config::Config;
    use crate::model::{ReasonCatalog, Source};
    use crate::pipeline::Pipeline;
    use crate::synth::{Generator, SynthOptions};

    #[test]
    fn direct_encoding_equals_prost() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let options = SynthOptions { stack_trace_ratio: 0.2, ..SynthOptions::stress() };
        let now = options.start_ms + 86_400_000;
        let mut events = 0;
        let mut sessions = pipeline.sessions();
        for (offset, record) in Generator::new(options).take_records(3_000).iter().enumerate() {
            let source = Source { topic: Arc::from("raw"), partition: -1, offset: offset as i64 };
            let Ok(mut event) = pipeline.enrich(&record.value, &source, now) else {
                continue;
            };
            event.session = Some(sessions.apply(&mut event, offset as i64, now));
            let expected = to_message(&event);
            let bytes = to_vec(&event, 0);
            assert_eq!(bytes.len(), encoded_len(&event));
            assert_eq!(bytes, expected.encode_to_vec(), "byte-identical to prost for {expected:?}");
            assert_eq!(pb::EnrichedEvent::decode(bytes.as_slice()).unwrap(), expected);
            events += 1;
        }
        assert!(events > 2_500);
    }

    #[test]
    fn every_enum_value_maps_back_to_itself() {
        use model::SignalKind as K;
        fn others<T: Copy>(all: &[T], other: T) -> Vec<T> {
            all.iter().copied().chain([other]).collect()
        }
        for value in others(model::Actor::ALL, model::Actor::Other) {
            assert_eq!(model_actor(actor(value)), Some(value));
        }
        for value in others(model::Action::ALL, model::Action::Other) {
            assert_eq!(model_action(action(value)), Some(value));
        }
        for value in others(model::Status::ALL, model::Status::Other) {
            assert_eq!(model_status(status(value)), Some(value));
        }
        for value in [model::Shape::Flat, model::Shape::Control, model::Shape::Log, model::Shape::Acs] {
            assert_eq!(model_shape(shape(value)), Some(value));
        }
        for value in model::Category::ALL {
            assert_eq!(model_category(category(value)), Some(value));
        }
        let kinds = [
            K::PauseOnBlur,
            K::FullScreen,
            K::DisableRightClick,
            K::DisableCommands,
            K::PreventScreenshot,
            K::LockdownBrowser,
            K::SecurityPlugin,
            K::IpChange,
            K::DeliverFe,
            K::Realtime,
            K::ProctorComment,
            K::StructuredData,
        ];
        for value in kinds {
            assert_eq!(model_signal_kind(signal_kind(value)), Some(value));
            let serde = serde_json::to_value(value).unwrap();
            assert_eq!(serde.as_str(), Some(value.as_str()), "as_str is the serde spelling");
        }
        assert_eq!(model_actor(pb::Actor::Unspecified), None);
        assert_eq!(model_signal_kind(pb::SignalKind::Unspecified), None);
    }

    #[test]
    fn other_values_and_negative_numbers_round_trip() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let value =
            br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"actor":"robot","actionStatus":"maybe",
            "reasonCode":-5,"extraTime":-2.5,"status":"zzz","itemId":""}"#;
        let source = Source { topic: Arc::from(""), partition: -3, offset: 0 };
        let event = pipeline.enrich(value, &source, 1_767_261_400_000).unwrap();
        let expected = to_message(&event);
        assert_eq!(to_vec(&event, 1024), expected.encode_to_vec());
        let decoded = pb::EnrichedEvent::decode(to_vec(&event, 16).as_slice()).unwrap();
        assert_eq!(decoded.actor(), pb::Actor::Other);
        assert_eq!(decoded.actor_raw.as_deref(), Some("robot"));
        assert_eq!(decoded.reason_code, Some(-5));
        assert_eq!(decoded.source.unwrap().partition, -3);
    }
}
