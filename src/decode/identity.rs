//! Identity: the delivery execution id's parts, and the tenant policy.
//!
//! A delivery execution id has the form
//! `[review#|unlisted_review#]<reversed, url-encoded user id>#<deliveryId>#<attempt hash>#<tenantId>`;
//! the tenant and delivery id are its last segments. Ids of another form (a URI, a UUID)
//! are kept as they are and yield no tenant.

use std::collections::HashSet;

use super::reject::{ErrorCode, Rejection, excerpt};

/// Kafka's limit on a topic name's length.
pub const MAX_TOPIC_LEN: usize = 249;

/// The parts of a delivery execution id of TAO's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutionIdParts<'a> {
    /// `review` / `unlisted_review` or any other leading segments, when present.
    pub prefix: Option<&'a str>,
    pub user: &'a str,
    pub delivery: &'a str,
    pub attempt: &'a str,
    pub tenant: &'a str,
}

/// What a delivery execution id looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm<'a> {
    /// TAO's form: at least four `#`-separated segments, none empty.
    Tao(ExecutionIdParts<'a>),
    /// Another form (a URI, a UUID: fewer than three `#`): kept as sent, no tenant in it.
    Opaque,
    /// Three or more `#` but an empty segment: it claims TAO's form and breaks it, so its
    /// tenant cannot be checked against `tenantId` (refused, never routed).
    Malformed,
}

/// Classifies a delivery execution id.
pub fn classify_execution_id(id: &str) -> IdForm<'_> {
    // Positions of the last four `#`, from the right.
    let mut hashes = [0usize; 4];
    let mut found = 0;
    for (at, byte) in id.bytes().enumerate().rev() {
        if byte == b'#' {
            hashes[found] = at;
            found += 1;
            if found == 4 {
                break;
            }
        }
    }
    if found < 3 {
        return IdForm::Opaque;
    }
    let tenant = &id[hashes[0] + 1..];
    let attempt = &id[hashes[1] + 1..hashes[0]];
    let delivery = &id[hashes[2] + 1..hashes[1]];
    let (user, prefix) = match found {
        3 => (&id[..hashes[2]], None),
        _ => (&id[hashes[3] + 1..hashes[2]], Some(&id[..hashes[3]])),
    };
    let segments = [tenant, attempt, delivery, user];
    if segments.iter().any(|segment| segment.is_empty()) || prefix.is_some_and(|p| p.split('#').any(str::is_empty)) {
        return IdForm::Malformed;
    }
    IdForm::Tao(ExecutionIdParts { prefix, user, delivery, attempt, tenant })
}

/// The parts of a delivery execution id of TAO's form; `None` for any other form.
pub fn split_execution_id(id: &str) -> Option<ExecutionIdParts<'_>> {
    match classify_execution_id(id) {
        IdForm::Tao(parts) => Some(parts),
        IdForm::Opaque | IdForm::Malformed => None,
    }
}

/// Which tenants are acceptable: topic-name syntax, length, and an optional allow-list.
#[derive(Debug, Clone)]
pub struct TenantPolicy {
    /// The longest tenant id that keeps every output topic within Kafka's 249 characters.
    max_len: usize,
    /// When set, only these tenants are accepted.
    allow: Option<HashSet<String>>,
}

impl TenantPolicy {
    /// `fixed_topic_len` is the longest topic template without its `{tenant}` placeholder.
    pub fn new(fixed_topic_len: usize, allow: Option<HashSet<String>>) -> TenantPolicy {
        TenantPolicy { max_len: MAX_TOPIC_LEN.saturating_sub(fixed_topic_len), allow }
    }

    /// The longest tenant id accepted.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Checks a tenant's syntax and length (`invalid_tenant`).
    /// `source` names where the tenant came from, for the error detail (formatted only on error).
    pub fn check_syntax(&self, tenant: &str, source: &dyn std::fmt::Display) -> Result<(), Rejection> {
        let invalid = |why: String| Rejection::new(ErrorCode::InvalidTenant, format!("{source} {why}"));
        // One pass over the bytes: the alphabet is ASCII, so any other byte is refused.
        let mut alphanumeric = false;
        for byte in tenant.bytes() {
            if byte.is_ascii_alphanumeric() {
                alphanumeric = true;
            } else if !matches!(byte, b'.' | b'_' | b'-') {
                let bad = tenant.chars().find(|c| !is_topic_char(*c)).unwrap_or('?');
                return Err(invalid(format!(
                    "{} has the character {bad:?}; a tenant id may only use A-Z a-z 0-9 . _ -",
                    excerpt(tenant)
                )));
            }
        }
        if !alphanumeric {
            return Err(invalid(format!("{} has no letter or digit", excerpt(tenant))));
        }
        let len = tenant.len();
        if len > self.max_len {
            return Err(invalid(format!(
                "is {len} characters; at most {} keep every output topic name within {MAX_TOPIC_LEN}",
                self.max_len
            )));
        }
        Ok(())
    }

    /// Checks the allow-list (`unknown_tenant`); always passes when none is configured.
    pub fn check_allowed(&self, tenant: &str) -> Result<(), Rejection> {
        match &self.allow {
            Some(allow) if !allow.contains(tenant) => Err(Rejection::new(
                ErrorCode::UnknownTenant,
                format!("tenant {} is not on the allow-list (tenants.allow)", excerpt(tenant)),
            )),
            _ => Ok(()),
        }
    }
}

/// Kafka's topic-name alphabet.
pub fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_split_from_the_right() {
        let cases = [
            (
                "dIresu#deliveryId#resultIdHash#tenantId",
                Some((None, "dIresu", "deliveryId", "resultIdHash", "tenantId")),
            ),
            ("review#dIresu#d1#h1#acme", Some((Some("review"), "dIresu", "d1", "h1", "acme"))),
            ("unlisted_review#u#d#h#t", Some((Some("unlisted_review"), "u", "d", "h", "t"))),
            ("a#b#u#d#h#t", Some((Some("a#b"), "u", "d", "h", "t"))),
            ("u#d#h", None),
            ("u#d##t", None),
            ("u#d#h#acme#", None),
            ("x##u#d#h#t", None),
            ("#d#h#t", None),
            ("u#d#h#", None),
            ("#u#d#h#t", None),
            ("http://www.tao.lu/Ontologies/TAODelivery.rdf#i1234", None),
            ("5f1c0a2e-3b6d-4b8e-9d61-0c1a2b3c4d5e", None),
            ("", None),
        ];
        for (id, expected) in cases {
            let got = split_execution_id(id).map(|p| (p.prefix, p.user, p.delivery, p.attempt, p.tenant));
            assert_eq!(got, expected, "{id:?}");
        }
    }

    #[test]
    fn ids_that_claim_tao_form_and_break_it_are_malformed() {
        let cases = [
            ("u#d#h#acme", true, false),
            ("review#u#d#h#acme", true, false),
            ("http://www.tao.lu/Ontologies/TAODelivery.rdf#i1234", false, false),
            ("a#b#c", false, false),
            ("opaque", false, false),
            ("u#d##acme", false, true),
            ("u#d#h#acme#", false, true),
            ("#u#d#h#t", false, true),
            ("x##u#d#h#t", false, true),
            ("###", false, true),
        ];
        for (id, tao, malformed) in cases {
            let form = classify_execution_id(id);
            assert_eq!(matches!(form, IdForm::Tao(_)), tao, "{id}");
            assert_eq!(form == IdForm::Malformed, malformed, "{id}");
        }
    }

    #[test]
    fn tenant_syntax_follows_kafka_topic_names() {
        let policy = TenantPolicy::new("acs..events".len(), None);
        assert_eq!(policy.max_len(), 249 - 11);
        for ok in ["acme", "ACME-eu_1.prod", "a", "0", "a..b", "_x_"] {
            assert_eq!(policy.check_syntax(ok, &"tenantId"), Ok(()), "{ok}");
        }
        let long = "a".repeat(policy.max_len() + 1);
        let exact = "a".repeat(policy.max_len());
        assert_eq!(policy.check_syntax(&exact, &"tenantId"), Ok(()));
        for bad in
            ["ac me", "acme/other", "../acme", "..", ".", "-", "acmé", "a\u{0}b", " acme", "acme\n", long.as_str()]
        {
            let error = policy.check_syntax(bad, &"tenantId").expect_err(bad);
            assert_eq!(error.code, ErrorCode::InvalidTenant, "{bad}");
            assert!(error.detail.starts_with("tenantId "), "{}", error.detail);
        }
    }

    #[test]
    fn the_allow_list_is_exact() {
        let policy = TenantPolicy::new(11, Some(["acme".to_owned()].into_iter().collect()));
        assert_eq!(policy.check_allowed("acme"), Ok(()));
        for other in ["ACME", "acme2", "acm"] {
            assert_eq!(policy.check_allowed(other).unwrap_err().code, ErrorCode::UnknownTenant);
        }
        assert_eq!(TenantPolicy::new(11, None).check_allowed("anyone"), Ok(()));
    }
}
