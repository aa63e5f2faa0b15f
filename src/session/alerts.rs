//! What the session store keeps of the rules beside a session's state, in the same
//! changelog record and with the same expiry: the rules' state, the alerts fired by events
//! not known to be committed yet (as published: encoded), and the session's incident. Here,
//! not in `rules/`, which decides alerts and knows nothing of their records.

/// The rules' state of one session (or, on the tenant side, one tenant), kept by the session
/// store beside the session's state, in the same changelog record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionRules {
    pub state: crate::rules::RuleState,
    /// The alerts fired by events not known to be committed yet, with the position of the
    /// event that fired them. An event processed again after a crash finds its session
    /// restored past it and is not counted again; it fires these again instead, since the
    /// crash may have lost them while the state change was already durable. Forgotten once
    /// the input is committed past them.
    pub fired: Vec<Fired>,
    /// The session's incident: its alerts aggregated (session entries only; `None` before the
    /// first alert and before the session ends).
    pub incident: Option<Box<crate::incidents::Incident>>,
}

/// An alert, and the position of the event that fired it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub position: i64,
    /// Its output record, as first published (kept without a copy, published again as is).
    pub alert: crate::encode::Alerted,
}
