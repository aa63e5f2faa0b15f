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
    let recognized = signal::recognize(event.reason_message.as_deref(), event.actor, event.reason_code.numeric());
    event.signal = recognized.signal;
    if let Some(anomaly) = recognized.anomaly {
        event.flag(anomaly);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::decode::{Decoder, TenantPolicy};
    use crate::model::{Anomaly, Category, ReasonCatalog, SignalKind, Source};

    fn enriched(json: &str) -> crate::model::Event<'static> {
        let decoder = Decoder { max_event_bytes: 1 << 20, tenants: TenantPolicy::new(11, None) };
        let source = Source { topic: Arc::from("raw"), partition: 0, offset: 0 };
        let mut event = decoder.decode(json.as_bytes(), &source, 1_767_261_400_000).unwrap().into_owned();
        super::enrich(&mut event, &ReasonCatalog::builtin());
        event
    }

    #[test]
    fn reason_and_signal_are_added_with_their_anomalies() {
        let base =
            r#""deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"actor":"test-taker","action":"flag""#;
        // (fields, expected category, expected signal, expected anomalies)
        type Case = (&'static str, Option<Category>, Option<SignalKind>, Vec<Anomaly>);
        let cases: [Case; 5] = [
            (
                r#""reasonCode":20999,"reasonMessage":"[Prevent Screenshot] x""#,
                Some(Category::Examinee),
                Some(SignalKind::PreventScreenshot),
                vec![],
            ),
            (r#""reasonCode":999,"reasonMessage":null"#, None, None, vec![Anomaly::FallbackReasonCode]),
            (
                r#""reasonCode":"N52","reasonMessage":"[Nope] x""#,
                None,
                None,
                vec![Anomaly::NonNumericReasonCode, Anomaly::UnknownMessageTag],
            ),
            (r#""reasonCode":77777"#, None, None, vec![Anomaly::UnknownReasonCode]),
            (r#""reasonCode":null"#, None, None, vec![]),
        ];
        for (fields, category, signal, anomalies) in cases {
            let event = enriched(&format!("{{{base},{fields}}}"));
            assert_eq!(event.reason.as_ref().map(|r| r.category), category, "{fields}");
            assert_eq!(event.signal.as_ref().map(|s| s.kind), signal, "{fields}");
            assert_eq!(event.anomalies, anomalies, "{fields}");
        }
    }
}
