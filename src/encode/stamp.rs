//! An alert's provenance, written after its own fields: the processor and the configuration
//! that fired it, and how its tenant's personal data was protected (issue 21). Events carry
//! theirs in their own encodings (`processor`, `privacy`); an alert's is appended by the
//! encoder, so that the rule engine's view of an alert stays what the rule made.

use serde::Serialize;

use super::json::PrivacyJson;
use super::proto::pb;

/// What an alert is stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertStamp<'s> {
    pub processor_version: &'s str,
    pub rules_version: &'s str,
    pub catalog_version: &'s str,
    /// `(mode, key id)` for a protected tenant.
    pub privacy: Option<(&'s str, &'s str)>,
}

impl<'s> AlertStamp<'s> {
    /// The stamp an `acs.v1.Alert` carries; `None` when it has none (written before stamps).
    pub fn of(alert: &'s pb::Alert) -> Option<AlertStamp<'s>> {
        (!alert.processor_version.is_empty()).then(|| AlertStamp {
            processor_version: &alert.processor_version,
            rules_version: &alert.rules_version,
            catalog_version: &alert.catalog_version,
            privacy: alert.privacy.as_ref().map(|p| (p.mode.as_str(), p.key_id.as_str())),
        })
    }

    /// A copy of `alert`'s stamp fields alone (to read [`AlertStamp::of`] once the alert is
    /// consumed).
    pub fn fields(alert: &pb::Alert) -> pb::Alert {
        pb::Alert {
            processor_version: alert.processor_version.clone(),
            rules_version: alert.rules_version.clone(),
            catalog_version: alert.catalog_version.clone(),
            privacy: alert.privacy.clone(),
            ..pb::Alert::default()
        }
    }

    /// Its protobuf fields (`acs.v1.Alert` 15 to 18), to append to the alert's own: the
    /// encoding prost would write for the whole message.
    pub fn to_proto(&self) -> Vec<u8> {
        use prost::Message as _;
        let message = pb::Alert {
            processor_version: self.processor_version.to_owned(),
            rules_version: self.rules_version.to_owned(),
            catalog_version: self.catalog_version.to_owned(),
            privacy: self
                .privacy
                .map(|(mode, key_id)| pb::Privacy { mode: mode.to_owned(), key_id: key_id.to_owned() }),
            ..pb::Alert::default()
        };
        message.encode_to_vec()
    }

    /// Appends its members (`"processor": {...}`, and `"privacy": {...}` for a protected
    /// tenant) to an alert's JSON document, which ends with `}`.
    pub fn put_json(&self, json: &mut Vec<u8>) {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Processor<'a> {
            version: &'a str,
            rules_version: &'a str,
            catalog_version: &'a str,
        }
        if json.last() != Some(&b'}') {
            return;
        }
        json.pop();
        let processor = Processor {
            version: self.processor_version,
            rules_version: self.rules_version,
            catalog_version: self.catalog_version,
        };
        // Plain strings into memory: serializing cannot fail.
        json.extend_from_slice(b",\"processor\":");
        let _ = serde_json::to_writer(&mut *json, &processor);
        if let Some((mode, key_id)) = self.privacy {
            json.extend_from_slice(b",\"privacy\":");
            let _ = serde_json::to_writer(&mut *json, &PrivacyJson { mode, key_id });
        }
        json.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn the_stamp_round_trips_and_appends_to_both_encodings() {
        let stamp = AlertStamp {
            processor_version: "0.1.0",
            rules_version: "builtin@0123456789ab",
            catalog_version: "2026-03@ba7816bf8f01",
            privacy: Some(("pseudonymize", "1a2b3c4d")),
        };
        let mut bytes = pb::Alert { rule_id: "r".into(), ..pb::Alert::default() }.encode_to_vec();
        bytes.extend(stamp.to_proto());
        let decoded = pb::Alert::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.rule_id, "r");
        assert_eq!(AlertStamp::of(&decoded), Some(stamp));
        let mut json = br#"{"ruleId":"r"}"#.to_vec();
        stamp.put_json(&mut json);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"ruleId":"r","processor":{"version":"0.1.0","rulesVersion":"builtin@0123456789ab","catalogVersion":"2026-03@ba7816bf8f01"},"privacy":{"mode":"pseudonymize","keyId":"1a2b3c4d"}}"#
        );
        assert_eq!(AlertStamp::of(&pb::Alert::default()), None);
    }
}
