//! The canonical event: every input shape becomes one of these (DESIGN.md §2).
//!
//! Plain data, no behaviour beyond small accessors. Enumerations are closed vocabularies
//! with an `Other` value; the raw spelling is kept in a `*_raw` field whenever the input
//! did not use the canonical spelling, so nothing upstream sent is lost.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use super::catalog::ReasonInfo;
use super::vocab::vocabulary;

vocabulary! {
    /// Who performed the action (the spec's four plus upstream's `security-plugin`, `realtime`).
    pub enum Actor {
        TestTaker = "test-taker" | "test_taker" | "testtaker",
        Proctor = "proctor",
        System = "system",
        DeliverFe = "deliver-fe" | "deliver_fe",
        SecurityPlugin = "security-plugin" | "security_plugin",
        Realtime = "realtime",
    }
}

impl Actor {
    /// Test-taker side actors: the test taker, their browser front-end and its security plugin.
    pub fn is_test_taker_side(self) -> bool {
        matches!(self, Actor::TestTaker | Actor::DeliverFe | Actor::SecurityPlugin)
    }
}

vocabulary! {
    /// What happened.
    pub enum Action {
        Start = "start",
        Pause = "pause",
        Resume = "resume",
        Terminate = "terminate",
        Termination = "termination",
        Reset = "reset",
        Submission = "submission",
        Update = "update",
        Flag = "flag",
        Log = "log",
        /// `move` is an alias.
        Navigation = "navigation" | "move",
    }
}

vocabulary! {
    /// Delivery execution (session) status, with classic TAO's legacy spellings mapped.
    pub enum Status {
        Initial = "initial" | "awaiting",
        Authorized = "authorized",
        Interacting = "interacting" | "active",
        Suspended = "suspended" | "paused",
        Terminated = "terminated",
        Closed = "closed" | "finished",
        Canceled = "canceled" | "cancelled",
    }
}

impl Status {
    /// Parses a status, also accepting TAO ontology URIs such as
    /// `http://www.tao.lu/Ontologies/TAODelivery.rdf#DeliveryExecutionStatusPaused`.
    pub fn parse_lenient(raw: &str) -> super::vocab::Parsed<Status> {
        const URI_MARKER: &str = "#DeliveryExecutionStatus";
        // Cheap test first: plain spellings have no `#`.
        let uri = raw.len() > URI_MARKER.len() && raw.as_bytes().contains(&b'#');
        match uri.then(|| raw.rfind(URI_MARKER)).flatten() {
            Some(at) => {
                super::vocab::Parsed { value: Status::parse(&raw[at + URI_MARKER.len()..]).value, canonical: false }
            }
            None => Status::parse(raw),
        }
    }
}

vocabulary! {
    /// The proctor ACS vocabulary of `DeliveryExecutionAcsLogMessage.status`.
    pub enum AcsStatus {
        None = "none",
        Running = "running",
        Paused = "paused",
        Terminated = "terminated",
        Complete = "complete",
    }
}

impl AcsStatus {
    /// The session status an ACS status stands for (upstream-envelopes.md §4).
    pub fn session_status(self) -> Option<Status> {
        match self {
            AcsStatus::Running => Some(Status::Interacting),
            AcsStatus::Paused => Some(Status::Suspended),
            AcsStatus::Terminated => Some(Status::Terminated),
            AcsStatus::Complete => Some(Status::Closed),
            AcsStatus::None | AcsStatus::Other => None,
        }
    }
}

/// Outcome of the action: `succeeded`/`failed`, or for `log` actions the session status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionStatus {
    Succeeded,
    Failed,
    Session(Status),
    Other,
}

impl ActionStatus {
    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
            ActionStatus::Session(status) => status.as_str(),
            ActionStatus::Other => "other",
        }
    }

    /// Parses leniently (`succeeded`, `failed`, or any status spelling).
    pub fn parse(raw: &str) -> super::vocab::Parsed<ActionStatus> {
        use super::vocab::Parsed;
        match raw {
            "succeeded" => Parsed { value: ActionStatus::Succeeded, canonical: true },
            "failed" => Parsed { value: ActionStatus::Failed, canonical: true },
            _ if raw.eq_ignore_ascii_case("succeeded") => Parsed { value: ActionStatus::Succeeded, canonical: false },
            _ if raw.eq_ignore_ascii_case("failed") => Parsed { value: ActionStatus::Failed, canonical: false },
            _ => {
                let status = Status::parse_lenient(raw);
                match status.value {
                    Status::Other => Parsed { value: ActionStatus::Other, canonical: false },
                    value => Parsed { value: ActionStatus::Session(value), canonical: status.canonical },
                }
            }
        }
    }
}

impl super::vocab::Known for ActionStatus {
    fn is_known(self) -> bool {
        self != ActionStatus::Other
    }
}

impl Serialize for ActionStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The upstream envelope an event was decoded from (upstream-envelopes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// The spec's flat Insights record.
    Flat,
    /// deliver-be `ExecutionControlMessage`.
    Control,
    /// deliver-be `ExecutionLogMessage` (a control envelope with action `log`).
    Log,
    /// deliver-be `DeliveryExecutionAcsLogMessage` (proctor ACS control).
    Acs,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Flat => "flat",
            Shape::Control => "control",
            Shape::Log => "log",
            Shape::Acs => "acs",
        }
    }
}

/// Text borrowed from the input record where it can be (no escapes), owned otherwise.
pub type Text<'a> = Cow<'a, str>;

/// The reason code as sent: numeric (int or numeric string) or kept raw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum ReasonCode<'a> {
    /// Null or absent: "no reason".
    #[default]
    None,
    Numeric(i64),
    /// Not a number (third-party proctoring tools send codes like `N52`).
    Raw(Text<'a>),
}

impl ReasonCode<'_> {
    pub fn numeric(&self) -> Option<i64> {
        match self {
            ReasonCode::Numeric(code) => Some(*code),
            _ => None,
        }
    }
}

/// Something unusual about an event. Anomalies never block an event; they travel with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// The actor is outside the vocabulary (kept as `other` with the raw spelling).
    UnknownActor,
    UnknownAction,
    UnknownActionStatus,
    UnknownStatus,
    UnknownAcsStatus,
    /// No actor: a flat record without `actor`, a control message without
    /// `actorIdentity.role`.
    MissingActor,
    /// A record without an action.
    MissingAction,
    /// Reason code 999: upstream's "anything else" fallback.
    FallbackReasonCode,
    /// A reason code that is not a number (kept raw).
    NonNumericReasonCode,
    /// A number outside every category range.
    UnknownReasonCode,
    /// A reason message with a bracket tag we do not know.
    UnknownMessageTag,
    /// Two identity fields that should agree do not (`_id` vs `deliveryExecutionId`,
    /// `deliveryId` vs the delivery execution id's delivery segment).
    IdMismatch,
    /// Session state: the action is not allowed from the status before it (e.g. navigation
    /// while suspended).
    IllegalTransition,
    /// Session state: an event after the session ended (terminated, closed, canceled) other
    /// than a reset or a proctor reopening a closed session.
    EventAfterFinal,
    /// Session state: the declared status differs from the state machine's target.
    StatusMismatch,
    /// Session state: the incident time is before the latest one already seen in the session.
    OutOfOrderTime,
    /// Session state: the message id was already seen in this session (an upstream retry).
    Duplicate,
}

impl Anomaly {
    /// Every kind (the metrics' label values).
    pub const ALL: [Anomaly; 17] = [
        Anomaly::UnknownActor,
        Anomaly::UnknownAction,
        Anomaly::UnknownActionStatus,
        Anomaly::UnknownStatus,
        Anomaly::UnknownAcsStatus,
        Anomaly::MissingActor,
        Anomaly::MissingAction,
        Anomaly::FallbackReasonCode,
        Anomaly::NonNumericReasonCode,
        Anomaly::UnknownReasonCode,
        Anomaly::UnknownMessageTag,
        Anomaly::IdMismatch,
        Anomaly::IllegalTransition,
        Anomaly::EventAfterFinal,
        Anomaly::StatusMismatch,
        Anomaly::OutOfOrderTime,
        Anomaly::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::UnknownActor => "unknown_actor",
            Anomaly::UnknownAction => "unknown_action",
            Anomaly::UnknownActionStatus => "unknown_action_status",
            Anomaly::UnknownStatus => "unknown_status",
            Anomaly::UnknownAcsStatus => "unknown_acs_status",
            Anomaly::MissingActor => "missing_actor",
            Anomaly::MissingAction => "missing_action",
            Anomaly::FallbackReasonCode => "fallback_reason_code",
            Anomaly::NonNumericReasonCode => "non_numeric_reason_code",
            Anomaly::UnknownReasonCode => "unknown_reason_code",
            Anomaly::UnknownMessageTag => "unknown_message_tag",
            Anomaly::IdMismatch => "id_mismatch",
            Anomaly::IllegalTransition => "illegal_transition",
            Anomaly::EventAfterFinal => "event_after_final",
            Anomaly::StatusMismatch => "status_mismatch",
            Anomaly::OutOfOrderTime => "out_of_order_time",
            Anomaly::Duplicate => "duplicate",
        }
    }
}

/// Where the input record was read (lineage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// A JSON document kept as text (structured payloads): validated or written once, then
/// carried as a string into protobuf and embedded verbatim into JSON output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// Validates `text` as one JSON value.
    pub fn parse(text: &str) -> Option<JsonText> {
        serde_json::from_str::<&serde_json::value::RawValue>(text).ok().map(|raw| JsonText(raw.get().to_owned()))
    }

    /// Text produced by a JSON serializer (valid by construction).
    pub fn written(text: String) -> JsonText {
        JsonText(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document as a value (for tests and tools).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.as_str()).expect("JsonText holds valid JSON")
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Spellings of the small signal enums (the same as their serde names).
macro_rules! spelled {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }
    };
}

spelled!(PauseAbout { TabSwitch => "tab-switch", FullScreen => "full-screen", Other => "other" });
spelled!(LockdownIssue {
    Missing => "missing",
    Version => "version",
    Processes => "processes",
    Breach => "breach",
    Other => "other",
});
spelled!(DataFormat { Json => "json", Xml => "xml" });
spelled!(SignalKind {
    PauseOnBlur => "pause-on-blur",
    FullScreen => "full-screen",
    DisableRightClick => "disable-right-click",
    DisableCommands => "disable-commands",
    PreventScreenshot => "prevent-screenshot",
    LockdownBrowser => "lockdown-browser",
    SecurityPlugin => "security-plugin",
    IpChange => "ip-change",
    DeliverFe => "deliver-fe",
    Realtime => "realtime",
    ProctorComment => "proctor-comment",
    StructuredData => "structured-data",
});

/// What a `[Security Plugin]` pause was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseAbout {
    /// Leaving the tab or app (counts as a tab switch).
    TabSwitch,
    /// Leaving full-screen mode.
    FullScreen,
    Other,
}

/// What a `[Lockdown Browser]` message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockdownIssue {
    Missing,
    Version,
    Processes,
    Breach,
    Other,
}

/// The kind of a recognized reason message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalKind {
    PauseOnBlur,
    FullScreen,
    DisableRightClick,
    DisableCommands,
    PreventScreenshot,
    LockdownBrowser,
    SecurityPlugin,
    IpChange,
    DeliverFe,
    Realtime,
    ProctorComment,
    /// A 40999 payload holding XML or JSON (navigation / interaction data).
    StructuredData,
}

impl SignalKind {
    /// Every kind.
    pub const ALL: [SignalKind; 12] = [
        SignalKind::PauseOnBlur,
        SignalKind::FullScreen,
        SignalKind::DisableRightClick,
        SignalKind::DisableCommands,
        SignalKind::PreventScreenshot,
        SignalKind::LockdownBrowser,
        SignalKind::SecurityPlugin,
        SignalKind::IpChange,
        SignalKind::DeliverFe,
        SignalKind::Realtime,
        SignalKind::ProctorComment,
        SignalKind::StructuredData,
    ];
}

// Every kind is in `ALL`, at the index of its discriminant (rules name kinds from it; their
// prefilter lists are indexed by it): a kind added to the enum fails to compile here until
// it is listed in this match, next to which `ALL` must take it too.
const _: () = match SignalKind::PauseOnBlur {
    SignalKind::PauseOnBlur
    | SignalKind::FullScreen
    | SignalKind::DisableRightClick
    | SignalKind::DisableCommands
    | SignalKind::PreventScreenshot
    | SignalKind::LockdownBrowser
    | SignalKind::SecurityPlugin
    | SignalKind::IpChange
    | SignalKind::DeliverFe
    | SignalKind::Realtime
    | SignalKind::ProctorComment
    | SignalKind::StructuredData => {
        let mut i = 0;
        while i < SignalKind::ALL.len() {
            assert!(SignalKind::ALL[i] as usize == i, "SignalKind::ALL is in declaration order");
            i += 1;
        }
        assert!(SignalKind::StructuredData as usize + 1 == SignalKind::ALL.len(), "SignalKind::ALL has every kind");
    }
};

/// Format a structured payload was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Json,
    Xml,
}

/// A typed security signal recognized from the reason message's bracket tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    pub kind: SignalKind,
    /// disable-commands: the forbidden command (`copy`, `cut`, `paste`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// security-plugin: what the pause was about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub about: Option<PauseAbout>,
    /// lockdown-browser: what is reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<LockdownIssue>,
    /// lockdown-browser breach: the process list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
    /// deliver-fe / realtime: trailing tags (`[item-5][recoverable]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Structured payload: 40999 XML/JSON, or a lockdown breach's device info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_format: Option<DataFormat>,
}

impl Signal {
    pub fn new(kind: SignalKind) -> Signal {
        Signal {
            kind,
            command: None,
            about: None,
            issue: None,
            processes: Vec::new(),
            tags: Vec::new(),
            data: None,
            data_format: None,
        }
    }
}

/// One canonical ACS log event, normalized and (after enrichment) enriched.
///
/// Strings borrow from the input record when they can ([`Text`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// Which upstream envelope it came in.
    pub shape: Shape,
    /// The tenant, exactly as sent (field or delivery execution id segment); routes the event.
    pub tenant_id: Text<'a>,
    /// Exactly as sent, `review#` prefix included; the output key.
    pub delivery_execution_id: Text<'a>,
    /// `deliveryId`, or the delivery segment of the delivery execution id.
    pub delivery_id: Option<Text<'a>>,
    /// `messageId`, or generated deterministically from the content.
    pub message_id: Text<'a>,
    pub message_id_generated: bool,

    pub actor: Option<Actor>,
    /// The actor as sent, when not the canonical spelling.
    pub actor_raw: Option<Text<'a>>,
    /// Identity of whoever acted (control messages' `actorIdentity.id`).
    pub actor_id: Option<Text<'a>>,
    /// The test taker's login id.
    pub test_taker: Option<Text<'a>>,
    /// The test taker's id / username.
    pub login: Option<Text<'a>>,
    /// Display name of the actor.
    pub name: Option<Text<'a>>,
    pub user_agent: Option<Text<'a>>,
    pub ip: Option<Text<'a>>,

    pub action: Option<Action>,
    pub action_raw: Option<Text<'a>>,
    pub action_status: Option<ActionStatus>,
    pub action_status_raw: Option<Text<'a>>,
    /// Declared session status (normalized); `status_raw` holds a non-canonical spelling.
    pub status: Option<Status>,
    pub status_raw: Option<Text<'a>>,
    /// Proctor ACS messages: the ACS status as sent.
    pub acs_status: Option<Text<'a>>,

    pub reason_code: ReasonCode<'a>,
    pub reason_message: Option<Text<'a>>,

    /// Minutes added by this event (flat `extraTime` on `update`).
    pub extra_time: Option<f64>,
    /// New absolute extra time in minutes (ACS `extra_time`).
    pub extra_time_total: Option<f64>,

    /// Epoch milliseconds.
    pub incident_time: i64,
    /// Epoch milliseconds (`last_update_date`).
    pub last_update: Option<i64>,

    pub item_id: Option<Text<'a>>,
    pub resource_link: Option<Text<'a>>,
    pub attempt_number: Option<u32>,
    /// ACS `incident_severity` (0..1).
    pub incident_severity: Option<f64>,

    /// Catalog entry of the reason code (enrichment).
    pub reason: Option<Arc<ReasonInfo>>,
    /// Security signal recognized from the reason message (enrichment).
    pub signal: Option<Signal>,
    /// Anomalies, in the order found.
    pub anomalies: Vec<Anomaly>,
    /// The session around the event (set by the session state, after enrichment).
    pub session: Option<super::SessionView>,

    pub source: Source,
    /// Epoch milliseconds at which the record was processed (the clock passed in).
    pub processed_at: i64,
    /// The configuration that processed it (rules and catalog versions), set by the pipeline;
    /// `None` before (then not written).
    pub stamp: Option<Arc<super::Stamp>>,
    /// How its tenant's personal data was protected, set by the privacy step; `None`: kept as
    /// sent.
    pub privacy: Option<Arc<super::PrivacyMark>>,
}

impl Event<'_> {
    /// The same event owning all its text (to keep it beyond the input record).
    pub fn into_owned(self) -> Event<'static> {
        fn own(text: Text<'_>) -> Text<'static> {
            Cow::Owned(text.into_owned())
        }
        fn own_opt(text: Option<Text<'_>>) -> Option<Text<'static>> {
            text.map(own)
        }
        Event {
            shape: self.shape,
            tenant_id: own(self.tenant_id),
            delivery_execution_id: own(self.delivery_execution_id),
            delivery_id: own_opt(self.delivery_id),
            message_id: own(self.message_id),
            message_id_generated: self.message_id_generated,
            actor: self.actor,
            actor_raw: own_opt(self.actor_raw),
            actor_id: own_opt(self.actor_id),
            test_taker: own_opt(self.test_taker),
            login: own_opt(self.login),
            name: own_opt(self.name),
            user_agent: own_opt(self.user_agent),
            ip: own_opt(self.ip),
            action: self.action,
            action_raw: own_opt(self.action_raw),
            action_status: self.action_status,
            action_status_raw: own_opt(self.action_status_raw),
            status: self.status,
            status_raw: own_opt(self.status_raw),
            acs_status: own_opt(self.acs_status),
            reason_code: match self.reason_code {
                ReasonCode::None => ReasonCode::None,
                ReasonCode::Numeric(code) => ReasonCode::Numeric(code),
                ReasonCode::Raw(raw) => ReasonCode::Raw(own(raw)),
            },
            reason_message: own_opt(self.reason_message),
            extra_time: self.extra_time,
            extra_time_total: self.extra_time_total,
            incident_time: self.incident_time,
            last_update: self.last_update,
            item_id: own_opt(self.item_id),
            resource_link: own_opt(self.resource_link),
            attempt_number: self.attempt_number,
            incident_severity: self.incident_severity,
            reason: self.reason,
            signal: self.signal,
            anomalies: self.anomalies,
            session: self.session,
            source: self.source,
            processed_at: self.processed_at,
            stamp: self.stamp,
            privacy: self.privacy,
        }
    }

    /// Records an anomaly once.
    pub fn flag(&mut self, anomaly: Anomaly) {
        if !self.anomalies.contains(&anomaly) {
            self.anomalies.push(anomaly);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_accept_legacy_spellings_and_tao_uris() {
        let cases = [
            ("suspended", Status::Suspended, true),
            ("paused", Status::Suspended, false),
            ("active", Status::Interacting, false),
            ("finished", Status::Closed, false),
            ("awaiting", Status::Initial, false),
            ("cancelled", Status::Canceled, false),
            ("http://www.tao.lu/Ontologies/TAODelivery.rdf#DeliveryExecutionStatusActive", Status::Interacting, false),
            (
                "http://www.tao.lu/Ontologies/TAODelivery.rdf#DeliveryExecutionStatusTerminated",
                Status::Terminated,
                false,
            ),
            ("http://www.tao.lu/Ontologies/TAODelivery.rdf#DeliveryExecutionStatusBogus", Status::Other, false),
            ("#", Status::Other, false),
            ("sleeping", Status::Other, false),
        ];
        for (raw, value, canonical) in cases {
            let parsed = Status::parse_lenient(raw);
            assert_eq!((parsed.value, parsed.canonical), (value, canonical), "{raw}");
        }
    }

    #[test]
    fn action_status_is_an_outcome_or_a_session_status() {
        let cases = [
            ("succeeded", ActionStatus::Succeeded, true),
            ("FAILED", ActionStatus::Failed, false),
            ("interacting", ActionStatus::Session(Status::Interacting), true),
            ("paused", ActionStatus::Session(Status::Suspended), false),
            ("success", ActionStatus::Other, false),
            ("", ActionStatus::Other, false),
        ];
        for (raw, value, canonical) in cases {
            let parsed = ActionStatus::parse(raw);
            assert_eq!((parsed.value, parsed.canonical), (value, canonical), "{raw}");
        }
        assert_eq!(ActionStatus::Session(Status::Closed).as_str(), "closed");
    }

    #[test]
    fn acs_statuses_map_to_session_statuses() {
        let cases = [
            (AcsStatus::Running, Some(Status::Interacting)),
            (AcsStatus::Paused, Some(Status::Suspended)),
            (AcsStatus::Terminated, Some(Status::Terminated)),
            (AcsStatus::Complete, Some(Status::Closed)),
            (AcsStatus::None, None),
            (AcsStatus::Other, None),
        ];
        for (acs, status) in cases {
            assert_eq!(acs.session_status(), status, "{acs}");
        }
    }

    #[test]
    fn json_text_is_validated_and_embedded_verbatim() {
        assert!(JsonText::parse("{\"a\": [1, 2]}").is_some());
        assert!(JsonText::parse("{\"a\": ").is_none());
        assert!(JsonText::parse("1 2").is_none());
        let text = JsonText::parse("{\"b\":1,\"a\":2}").unwrap();
        assert_eq!(serde_json::to_string(&text).unwrap(), "{\"b\":1,\"a\":2}", "key order kept");
    }
}
