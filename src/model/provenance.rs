//! Provenance: which configuration produced an output (DESIGN.md §7), stamped on every
//! event, alert and dead letter, so that an output can be traced to the rules and the reason
//! catalog in force, and a rotation of the privacy key is visible.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Hex digits of a content version's hash.
const HASH_DIGITS: usize = 12;

/// The configuration in force when an output was made: the versions of the rules and of the
/// reason catalog (see [`content_version`]). Swapped whole on a reload (SIGHUP). The default
/// has empty versions: nothing is stamped (tests of encodings alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub rules_version: Arc<str>,
    pub catalog_version: Arc<str>,
}

impl Stamp {
    /// The versions of `rules` and `catalog`.
    pub fn of(rules: &crate::rules::RuleSet, catalog: &super::ReasonCatalog) -> Stamp {
        Stamp { rules_version: rules.version.clone(), catalog_version: catalog.version().clone() }
    }
}

/// How a tenant's personal data was protected on an output (absent for a tenant whose data
/// is kept as sent): the mode and the id of the key its pseudonyms were derived with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyMark {
    /// `pseudonymize` or `drop`.
    pub mode: &'static str,
    /// The key's id (see `privacy::Key`): a rotation changes it.
    pub key_id: Arc<str>,
}

/// A file's version: the first 12 hex digits of the SHA-256 of its bytes (what
/// `sha256sum FILE | cut -c1-12` prints), after `name@` when the file names itself.
pub fn content_version(name: Option<&str>, bytes: &[u8]) -> Arc<str> {
    let digest = Sha256::digest(bytes);
    let mut hash = String::with_capacity(HASH_DIGITS);
    for byte in digest.iter().take(HASH_DIGITS / 2) {
        hash.push_str(&format!("{byte:02x}"));
    }
    match name.map(str::trim).filter(|name| !name.is_empty()) {
        Some(name) => Arc::from(format!("{name}@{hash}")),
        None => Arc::from(hash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_the_start_of_the_files_sha256_after_its_name() {
        // printf 'abc' | sha256sum: ba7816bf8f01cfea...
        assert_eq!(&*content_version(None, b"abc"), "ba7816bf8f01");
        assert_eq!(&*content_version(Some("eu-strict"), b"abc"), "eu-strict@ba7816bf8f01");
        assert_eq!(&*content_version(Some("  "), b"abc"), "ba7816bf8f01", "a blank name is no name");
        assert_ne!(content_version(None, b"abc"), content_version(None, b"abd"));
    }
}
