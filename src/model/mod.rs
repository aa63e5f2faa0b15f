//! Plain data: the canonical event, its vocabularies, and the reason catalog.

pub mod catalog;
pub mod event;
pub mod provenance;
pub mod session;
pub mod vocab;

pub use catalog::{Category, Lookup, ReasonCatalog, ReasonInfo};
pub use event::{
    AcsStatus, Action, ActionStatus, Actor, Anomaly, DataFormat, Event, JsonText, LockdownIssue, PauseAbout,
    ReasonCode, Shape, Signal, SignalKind, Source, Status, Text,
};
pub use provenance::{PrivacyMark, Stamp};
pub use session::SessionView;
