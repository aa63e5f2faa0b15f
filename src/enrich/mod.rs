//! Enrich: what the catalog and the message say about a decoded event (DESIGN.md §4).
//! Pure functions of the event and the catalog.

pub mod payload;
pub mod signal;

use crate::model::{Event, Lookup, ReasonCatalog};

/// Adds the reason category and the security signal, with their anomalies.
pub fn enrich(event: &mut Event, catalog: &ReasonCatalog) {
    match catalog.lookup(&event.reason_code) {
        Lookup::NoReason => {}
        Lookup::Known(info) => event.reason = Some(info),
        Lookup::Unclassified(anomaly) => event.flag(anomaly),
    }
    let recognized = signal::recognize(event.reason_message.as_deref(), event.actor);
    event.signal = recognized.signal;
    if let Some(anomaly) = recognized.anomaly {
        event.flag(anomaly);
    }
}
