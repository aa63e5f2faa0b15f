//! What an event says of its session once the session state has seen it (DESIGN.md §5).

use serde::Serialize;

use super::Status;

/// The session (delivery execution) around one event: its status before and after the event,
/// whether the transition was allowed, and the session's counters after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// Tracked status before the event; `None` for the first event of a session.
    pub status_before: Option<Status>,
    /// Tracked status after the event: its declared status when it has one, otherwise the
    /// state machine's target for the action, otherwise unchanged.
    pub status_after: Option<Status>,
    /// False when the action was not allowed from `status_before`, or came after the end.
    pub transition_valid: bool,
    /// Position of the event in the session (1 for the first; a duplicate does not advance it).
    pub sequence: u64,
    /// Succeeded pauses in the current attempt.
    pub pause_count: u32,
    /// Succeeded `flag` actions in the current attempt.
    pub security_flag_count: u32,
    /// Extra time granted in the current attempt, in minutes.
    pub extra_time_minutes: f64,
    /// Earliest incident time seen in the session, epoch milliseconds.
    pub first_seen: i64,
    /// Latest incident time seen in the session, epoch milliseconds.
    pub last_seen: i64,
    /// The event's message id was already seen in this session: published, marked, and not
    /// counted again.
    pub duplicate: bool,
}
