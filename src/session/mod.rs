//! Session status (DESIGN.md §5): a state machine per delivery execution, applied to every
//! event; the event carries the status before and after it, whether the transition was
//! allowed, and the session's counters.
//!
//! - [`machine`]: the transition table (pure function of status, action, outcome, actor).
//! - [`store`]: the sessions of one input partition: apply an event, expire, restore.
//! - [`changelog`]: a session's state as a changelog record (protobuf) and back.
//! - [`alerts`]: what is kept of the rules beside a session's state ([`SessionRules`]).

pub mod alerts;
pub mod changelog;
pub mod machine;
pub mod store;

pub use alerts::{Fired, SessionRules};
pub use store::{SessionLimits, SessionState, Sessions};

#[cfg(test)]
mod tests;
