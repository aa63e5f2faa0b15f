//! Topic routing: `acs.{tenant}.events`-style templates.

use crate::decode::identity::{MAX_TOPIC_LEN, is_topic_char};

/// The placeholder a per-tenant template must hold exactly once.
pub const TENANT_PLACEHOLDER: &str = "{tenant}";

/// A topic name template with one `{tenant}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    prefix: String,
    suffix: String,
}

/// Why a template or topic name is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("must contain `{{tenant}}` exactly once")]
    Placeholder,
    #[error("has the character {0:?}; topic names may only use A-Z a-z 0-9 . _ -")]
    Character(char),
    #[error("leaves no room for a tenant id within Kafka's {MAX_TOPIC_LEN} characters")]
    TooLong,
    #[error("must not be empty, `.` or `..`")]
    Empty,
}

impl TopicTemplate {
    pub fn parse(template: &str) -> Result<TopicTemplate, TopicError> {
        let mut pieces = template.split(TENANT_PLACEHOLDER);
        let (Some(prefix), Some(suffix), None) = (pieces.next(), pieces.next(), pieces.next()) else {
            return Err(TopicError::Placeholder);
        };
        if let Some(bad) = prefix.chars().chain(suffix.chars()).find(|c| !is_topic_char(*c)) {
            return Err(TopicError::Character(bad));
        }
        if prefix.len() + suffix.len() >= MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        Ok(TopicTemplate { prefix: prefix.to_owned(), suffix: suffix.to_owned() })
    }

    /// Characters the template adds around the tenant id.
    pub fn fixed_len(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }

    /// The topic for a tenant (the tenant is already validated).
    pub fn render(&self, tenant: &str) -> String {
        let mut topic = String::with_capacity(self.fixed_len() + tenant.len());
        self.pieces(tenant).iter().for_each(|piece| topic.push_str(piece));
        topic
    }

    /// [`TopicTemplate::render`], written at the start of `out` (as bytes: an alert record's
    /// start), which must be at least `fixed_len() + tenant.len()` long.
    pub fn write_to(&self, out: &mut [u8], tenant: &str) {
        let mut at = 0;
        for piece in self.pieces(tenant) {
            out[at..at + piece.len()].copy_from_slice(piece.as_bytes());
            at += piece.len();
        }
    }

    /// The topic for a tenant, in the three pieces it is made of.
    fn pieces<'a>(&'a self, tenant: &'a str) -> [&'a str; 3] {
        [&self.prefix, tenant, &self.suffix]
    }
}

impl TopicTemplate {
    /// True when some tenant's topic from `self` could equal some tenant's topic from
    /// `other`: their prefixes are compatible (one starts the other) and so are their
    /// suffixes (one ends the other). `acs.{tenant}` and `acs.{tenant}.alerts` collide
    /// (tenant `x.alerts`); `acs.{tenant}.events` and `acs.{tenant}.alerts` cannot.
    pub fn may_collide(&self, other: &TopicTemplate) -> bool {
        let prefixes = self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix);
        let suffixes = self.suffix.ends_with(&other.suffix) || other.suffix.ends_with(&self.suffix);
        prefixes && suffixes
    }

    /// True when some tenant id renders to exactly `topic`.
    pub fn can_render(&self, topic: &str) -> bool {
        topic.len() > self.fixed_len() && topic.starts_with(&self.prefix) && topic.ends_with(&self.suffix)
    }
}

/// Checks a fixed topic name (such as the dead-letter topic).
pub fn check_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(TopicError::Empty);
    }
    if let Some(bad) = name.chars().find(|c| !is_topic_char(*c)) {
        return Err(TopicError::Character(bad));
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_refuse_what_kafka_would() {
        let template = TopicTemplate::parse("acs.{tenant}.events").unwrap();
        assert_eq!(template.render("acme"), "acs.acme.events");
        assert_eq!(template.fixed_len(), 11);
        assert_eq!(TopicTemplate::parse("{tenant}").unwrap().render("x"), "x");
        assert_eq!(TopicTemplate::parse("acs.events"), Err(TopicError::Placeholder));
        assert_eq!(TopicTemplate::parse("{tenant}.{tenant}"), Err(TopicError::Placeholder));
        assert_eq!(TopicTemplate::parse("acs/{tenant}"), Err(TopicError::Character('/')));
        assert_eq!(TopicTemplate::parse(&format!("{}{{tenant}}", "a".repeat(249))), Err(TopicError::TooLong));
        assert_eq!(check_topic_name("acs.dlq"), Ok(()));
    }

    #[test]
    fn colliding_templates_are_detected() {
        let t = |text: &str| TopicTemplate::parse(text).unwrap();
        let cases = [
            ("acs.{tenant}.events", "acs.{tenant}.alerts", false),
            ("acs.{tenant}", "acs.{tenant}.alerts", true),
            ("{tenant}", "acs.{tenant}.alerts", true),
            ("events.{tenant}", "alerts.{tenant}", false),
            ("a.{tenant}.x", "a.b.{tenant}.x", true),
            ("acs.{tenant}.events", "acs.{tenant}.events", true),
        ];
        for (a, b, collide) in cases {
            assert_eq!(t(a).may_collide(&t(b)), collide, "{a} / {b}");
            assert_eq!(t(b).may_collide(&t(a)), collide, "{b} / {a}");
        }
        assert!(t("{tenant}").can_render("acs.dlq"));
        assert!(t("acs.{tenant}").can_render("acs.dlq"));
        assert!(!t("acs.{tenant}.events").can_render("acs.dlq"));
        assert!(!t("acs.{tenant}.events").can_render("acs..events"), "the tenant cannot be empty");
        assert_eq!(check_topic_name(".."), Err(TopicError::Empty));
        assert_eq!(check_topic_name("a b"), Err(TopicError::Character(' ')));
    }
}
