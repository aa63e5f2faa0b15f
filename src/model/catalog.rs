//! The reason catalog: cause and reason codes of the spec (proctoring-acs-log.txt,
//! "Cause and Reason Codes"), built in, extendable and overridable from a TOML file.
//!
//! Category by range: 10000–19999 Environment, 20000–29999 Examinee, 30000–39999
//! Proctor/Staff, 40000–49999 Technical. A code in a range but not in the table gets the
//! range's category with cause `OTHER`. 999 is upstream's "anything else" fallback.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::event::{Anomaly, ReasonCode};

/// Upstream's fallback code for "anything else": no category.
pub const FALLBACK_CODE: i64 = 999;

/// A reason category (the spec's "Cause category").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    Environment,
    Examinee,
    ProctorStaff,
    Technical,
}

impl Category {
    pub const ALL: [Category; 4] =
        [Category::Environment, Category::Examinee, Category::ProctorStaff, Category::Technical];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Environment => "ENVIRONMENT",
            Category::Examinee => "EXAMINEE",
            Category::ProctorStaff => "PROCTOR_STAFF",
            Category::Technical => "TECHNICAL",
        }
    }

    /// Position in [`Category::ALL`].
    pub fn index(self) -> usize {
        match self {
            Category::Environment => 0,
            Category::Examinee => 1,
            Category::ProctorStaff => 2,
            Category::Technical => 3,
        }
    }

    /// The category whose range holds `code`, if any.
    pub fn of_range(code: i64) -> Option<Category> {
        match code {
            10_000..=19_999 => Some(Category::Environment),
            20_000..=29_999 => Some(Category::Examinee),
            30_000..=39_999 => Some(Category::ProctorStaff),
            40_000..=49_999 => Some(Category::Technical),
            _ => None,
        }
    }
}

/// What the catalog says about one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonInfo {
    pub category: Category,
    /// The spec's "Exact Cause" (`NAVIGATION`, `OTHER`, ...).
    pub cause: Arc<str>,
    /// The spec's description; `None` where the spec says N/A.
    pub description: Option<Arc<str>>,
}

/// The outcome of looking a reason code up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Null or absent reason: no category, no anomaly.
    NoReason,
    Known(Arc<ReasonInfo>),
    /// 999, non-numeric, or outside every range: no category, this anomaly.
    Unclassified(Anomaly),
}

/// The spec's table: (code, category, cause, description).
const BUILTIN: &[(i64, Category, &str, Option<&str>)] = &[
    (10010, Category::Environment, "COMFORT", None),
    (10020, Category::Environment, "DISTURBANCE", None),
    (10030, Category::Environment, "NOISE", None),
    (10040, Category::Environment, "POWER OUTAGE", None),
    (10050, Category::Environment, "WEATHER", None),
    (10999, Category::Environment, "OTHER", None),
    (20010, Category::Examinee, "BEHAVIOUR", None),
    (20020, Category::Examinee, "COMPLAINT", None),
    (20030, Category::Examinee, "ID/AUTHORIZATION", None),
    (20040, Category::Examinee, "ILLNESS", None),
    (20050, Category::Examinee, "LATE", None),
    (20060, Category::Examinee, "NAVIGATION", Some("Events related to full-screen mode or tab changes.")),
    (20999, Category::Examinee, "OTHER", Some("e.g., keyboard shortcuts or forbidden actions.")),
    (30010, Category::ProctorStaff, "BEHAVIOUR", None),
    (30020, Category::ProctorStaff, "COMPLIANCE", None),
    (30030, Category::ProctorStaff, "ERROR", None),
    (30040, Category::ProctorStaff, "LATE", None),
    (30999, Category::ProctorStaff, "OTHER", None),
    (40010, Category::Technical, "FREEZING", None),
    (40020, Category::Technical, "LAUNCHING", None),
    (40030, Category::Technical, "NETWORK", None),
    (40040, Category::Technical, "PRINTING", None),
    (40050, Category::Technical, "TESTING WORKSTATION", None),
    (40999, Category::Technical, "OTHER", Some("May contain structured XML describing navigation events.")),
];

/// Errors reading a catalog file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog file is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("catalog entry `code = {code}`: {message}")]
    Entry { code: i64, message: String },
}

/// A catalog file: entries that extend or override the built-in table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// A name for this catalog, shown before its content hash in `processor.catalogVersion`
    /// (e.g. `"2026-03"`); optional.
    #[serde(default)]
    pub name: Option<String>,
    /// When true, the built-in table is not used at all: only the file's codes are known
    /// (range fallbacks still apply).
    #[serde(default)]
    pub replace_builtin: bool,
    /// One entry per code.
    #[serde(default, rename = "code")]
    pub codes: Vec<CatalogFileEntry>,
}

/// One `[[code]]` entry of a catalog file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFileEntry {
    pub code: i64,
    pub category: Category,
    pub cause: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// Reason code → category, cause and description.
#[derive(Debug, Clone)]
pub struct ReasonCatalog {
    /// Sorted by code (binary search: a few comparisons, no hashing).
    entries: Vec<(i64, Arc<ReasonInfo>)>,
    /// What codes in a category's range but not in the table get (cause `OTHER`), in
    /// [`Category::ALL`] order.
    other: [Arc<ReasonInfo>; 4],
    /// `builtin@<hash of the built-in table>`, or the file's [`content_version`].
    ///
    /// [`content_version`]: super::provenance::content_version
    version: Arc<str>,
}

impl Default for ReasonCatalog {
    fn default() -> Self {
        Self::builtin()
    }
}

impl ReasonCatalog {
    /// The spec's table.
    pub fn builtin() -> ReasonCatalog {
        let entries = BUILTIN
            .iter()
            .map(|&(code, category, cause, description)| {
                let info = ReasonInfo { category, cause: Arc::from(cause), description: description.map(Arc::from) };
                let info = Arc::new(info);
                (code, info)
            })
            .collect();
        let table = format!("{BUILTIN:?}");
        let version = super::provenance::content_version(Some("builtin"), table.as_bytes());
        let mut catalog = ReasonCatalog { entries, other: Self::range_others(), version };
        catalog.entries.sort_by_key(|(code, _)| *code);
        catalog
    }

    fn range_others() -> [Arc<ReasonInfo>; 4] {
        Category::ALL.map(|category| Arc::new(ReasonInfo { category, cause: Arc::from("OTHER"), description: None }))
    }

    /// The built-in table extended / overridden by a catalog file's text.
    pub fn from_toml(text: &str) -> Result<ReasonCatalog, CatalogError> {
        let file: CatalogFile = toml::from_str(text)?;
        let version = super::provenance::content_version(file.name.as_deref(), text.as_bytes());
        let mut catalog = if file.replace_builtin {
            ReasonCatalog { entries: Vec::new(), other: Self::range_others(), version }
        } else {
            ReasonCatalog { version, ..Self::builtin() }
        };
        let mut seen = std::collections::HashSet::new();
        for entry in file.codes {
            let fail = |message: &str| CatalogError::Entry { code: entry.code, message: message.to_owned() };
            if entry.code <= 0 || entry.code == FALLBACK_CODE {
                return Err(fail("a code must be a positive number other than 999 (upstream's fallback)"));
            }
            if entry.cause.trim().is_empty() {
                return Err(fail("`cause` must not be empty"));
            }
            if !seen.insert(entry.code) {
                return Err(fail("the code is listed twice"));
            }
            let info = ReasonInfo {
                category: entry.category,
                cause: Arc::from(entry.cause.as_str()),
                description: entry.description.filter(|d| !d.trim().is_empty()).map(Arc::from),
            };
            match catalog.entries.binary_search_by_key(&entry.code, |(code, _)| *code) {
                Ok(at) => catalog.entries[at].1 = Arc::new(info),
                Err(at) => catalog.entries.insert(at, (entry.code, Arc::new(info))),
            }
        }
        Ok(catalog)
    }

    /// Its version (`processor.catalogVersion` on outputs).
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// Number of codes in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Classifies a reason code.
    pub fn lookup(&self, code: &ReasonCode) -> Lookup {
        match code {
            ReasonCode::None => Lookup::NoReason,
            // A number that is not a whole number within 64 bits (20060.5, 1e20) is a number
            // outside every range, not a non-numeric code.
            ReasonCode::Raw(raw) if raw.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                Lookup::Unclassified(Anomaly::UnknownReasonCode)
            }
            ReasonCode::Raw(_) => Lookup::Unclassified(Anomaly::NonNumericReasonCode),
            ReasonCode::Numeric(FALLBACK_CODE) => Lookup::Unclassified(Anomaly::FallbackReasonCode),
            ReasonCode::Numeric(code) => match self.entries.binary_search_by_key(code, |(code, _)| *code) {
                Ok(at) => Lookup::Known(self.entries[at].1.clone()),
                Err(_) => match Category::of_range(*code) {
                    Some(category) => Lookup::Known(self.other[category.index()].clone()),
                    None => Lookup::Unclassified(Anomaly::UnknownReasonCode),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(catalog: &ReasonCatalog, code: i64) -> Arc<ReasonInfo> {
        match catalog.lookup(&ReasonCode::Numeric(code)) {
            Lookup::Known(info) => info,
            other => panic!("{code}: expected a known code, got {other:?}"),
        }
    }

    #[test]
    fn every_spec_code_has_its_category_and_cause() {
        let catalog = ReasonCatalog::builtin();
        let table = [
            (10010, Category::Environment, "COMFORT"),
            (10020, Category::Environment, "DISTURBANCE"),
            (10030, Category::Environment, "NOISE"),
            (10040, Category::Environment, "POWER OUTAGE"),
            (10050, Category::Environment, "WEATHER"),
            (10999, Category::Environment, "OTHER"),
            (20010, Category::Examinee, "BEHAVIOUR"),
            (20020, Category::Examinee, "COMPLAINT"),
            (20030, Category::Examinee, "ID/AUTHORIZATION"),
            (20040, Category::Examinee, "ILLNESS"),
            (20050, Category::Examinee, "LATE"),
            (20060, Category::Examinee, "NAVIGATION"),
            (20999, Category::Examinee, "OTHER"),
            (30010, Category::ProctorStaff, "BEHAVIOUR"),
            (30020, Category::ProctorStaff, "COMPLIANCE"),
            (30030, Category::ProctorStaff, "ERROR"),
            (30040, Category::ProctorStaff, "LATE"),
            (30999, Category::ProctorStaff, "OTHER"),
            (40010, Category::Technical, "FREEZING"),
            (40020, Category::Technical, "LAUNCHING"),
            (40030, Category::Technical, "NETWORK"),
            (40040, Category::Technical, "PRINTING"),
            (40050, Category::Technical, "TESTING WORKSTATION"),
            (40999, Category::Technical, "OTHER"),
        ];
        assert_eq!(catalog.len(), table.len());
        for (code, category, cause) in table {
            let info = known(&catalog, code);
            assert_eq!((info.category, &*info.cause), (category, cause), "code {code}");
        }
        assert_eq!(
            known(&catalog, 20060).description.as_deref(),
            Some("Events related to full-screen mode or tab changes.")
        );
        assert_eq!(known(&catalog, 10010).description, None, "N/A is no description");
    }

    #[test]
    fn unlisted_codes_in_a_range_get_the_category_and_cause_other() {
        let catalog = ReasonCatalog::builtin();
        for (code, category) in [
            (10000, Category::Environment),
            (15555, Category::Environment),
            (20070, Category::Examinee),
            (39998, Category::ProctorStaff),
            (49999, Category::Technical),
        ] {
            let info = known(&catalog, code);
            assert_eq!((info.category, &*info.cause, info.description.clone()), (category, "OTHER", None));
        }
    }

    #[test]
    fn codes_outside_the_ranges_are_unclassified_with_their_anomaly() {
        let catalog = ReasonCatalog::builtin();
        let cases = [
            (ReasonCode::None, Lookup::NoReason),
            (ReasonCode::Numeric(999), Lookup::Unclassified(Anomaly::FallbackReasonCode)),
            (ReasonCode::Raw("N52".into()), Lookup::Unclassified(Anomaly::NonNumericReasonCode)),
            (ReasonCode::Raw("20060.5".into()), Lookup::Unclassified(Anomaly::UnknownReasonCode)),
            (ReasonCode::Raw("100000000000000000000".into()), Lookup::Unclassified(Anomaly::UnknownReasonCode)),
            (ReasonCode::Raw("NaN".into()), Lookup::Unclassified(Anomaly::NonNumericReasonCode)),
            (ReasonCode::Numeric(0), Lookup::Unclassified(Anomaly::UnknownReasonCode)),
            (ReasonCode::Numeric(9999), Lookup::Unclassified(Anomaly::UnknownReasonCode)),
            (ReasonCode::Numeric(50000), Lookup::Unclassified(Anomaly::UnknownReasonCode)),
            (ReasonCode::Numeric(-20060), Lookup::Unclassified(Anomaly::UnknownReasonCode)),
        ];
        for (code, expected) in cases {
            assert_eq!(catalog.lookup(&code), expected, "{code:?}");
        }
    }

    #[test]
    fn a_file_extends_and_overrides_the_builtin_table() {
        let catalog = ReasonCatalog::from_toml(
            r#"
            [[code]]
            code = 20070
            category = "EXAMINEE"
            cause = "PHONE"
            description = "Phone in view."

            [[code]]
            code = 10010
            category = "ENVIRONMENT"
            cause = "TEMPERATURE"

            [[code]]
            code = 60010
            category = "TECHNICAL"
            cause = "CAMERA"
            "#,
        )
        .expect("valid catalog");
        assert_eq!(&*known(&catalog, 20070).cause, "PHONE");
        assert_eq!(known(&catalog, 20070).description.as_deref(), Some("Phone in view."));
        assert_eq!(&*known(&catalog, 10010).cause, "TEMPERATURE");
        assert_eq!(known(&catalog, 60010).category, Category::Technical);
        assert_eq!(&*known(&catalog, 30030).cause, "ERROR", "built-ins stay");
    }

    #[test]
    fn replace_builtin_starts_from_an_empty_table() {
        let catalog = ReasonCatalog::from_toml(
            "replace_builtin = true\n[[code]]\ncode = 20060\ncategory = \"EXAMINEE\"\ncause = \"TAB\"\n",
        )
        .expect("valid catalog");
        assert_eq!(catalog.len(), 1);
        assert_eq!(&*known(&catalog, 20030).cause, "OTHER", "only the range rule is left");
    }

    #[test]
    fn bad_catalog_files_are_refused_with_a_message() {
        let cases = [
            ("[[code]]\ncode = 1\ncategory = \"WEATHER\"\ncause = \"X\"\n", "unknown variant"),
            ("[[code]]\ncode = 999\ncategory = \"TECHNICAL\"\ncause = \"X\"\n", "999"),
            ("[[code]]\ncode = 20070\ncategory = \"EXAMINEE\"\ncause = \" \"\n", "cause"),
            ("[[code]]\ncode = 20070\ncategory = \"EXAMINEE\"\ncause = \"X\"\ncolour = 1\n", "unknown field"),
            (
                "[[code]]\ncode = 20070\ncategory = \"EXAMINEE\"\ncause = \"X\"\n[[code]]\ncode = 20070\ncategory = \"EXAMINEE\"\ncause = \"Y\"\n",
                "twice",
            ),
            ("code = [", "TOML"),
        ];
        for (text, needle) in cases {
            let error = ReasonCatalog::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(needle), "{error:?} should mention {needle:?}");
        }
    }
}
