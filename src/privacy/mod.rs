//! Personal data per tenant (DESIGN.md §6c): kept as sent (`keep`, the default),
//! pseudonymized, or dropped.
//!
//! [`Privacy::protect`] runs on each event right after enrichment, before the session state
//! and the rules: everything after it (session state, changelog, rule state, alerts and their
//! titles, summaries and evidence, the session view, the encoded outputs) only ever sees what
//! the tenant's mode leaves, and the rules work on consistent values (a pseudonym is the same
//! for the same value, so distinct IPs and user agents are still counted). Pure and
//! synchronous: the key is given, the tokens are keyed HMACs ([`token`]).
//!
//! Protected: login, name, test-taker id, actor id, IP, user agent, and the user segment of a
//! delivery execution id of TAO's form (`<reversed user id>#<delivery>#<attempt>#<tenant>`),
//! which is always replaced by the user's token (the id is the output key: it cannot be
//! dropped). Free text (the reason message, a signal's tags, process list and structured
//! data) is searched for each hidden value (3 characters or more, ASCII case ignored), which
//! is replaced by what replaced the field (`[hidden]` in `drop` mode).

pub mod token;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

pub use token::{Key, KeyError, Kind, TenantKey};

use crate::model::{Event, JsonText, PrivacyMark};

/// What happens to a tenant's personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// As sent.
    #[default]
    Keep,
    /// Replaced by stable keyed tokens (or, as configured, an IP's network and a user agent's
    /// browser).
    Pseudonymize,
    /// Removed (the delivery execution id's user segment still becomes a token).
    Drop,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Keep => "keep",
            Mode::Pseudonymize => "pseudonymize",
            Mode::Drop => "drop",
        }
    }
}

/// What stands for an IP in `pseudonymize` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpForm {
    /// A token.
    #[default]
    Token,
    /// Its network: `/24` for IPv4, `/48` for IPv6 (a value that is no address: a token).
    Network,
}

/// What stands for a user agent in `pseudonymize` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserAgentForm {
    /// A token.
    #[default]
    Token,
    /// Its browser family and major version (`Chrome 120`, `Other`).
    Browser,
}

/// Whether the dead letters of a protected tenant carry the original record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterValue {
    /// The original key and value (nothing is lost; the topic's readers see personal data).
    #[default]
    Keep,
    /// Neither: the headers say what was refused and where it is in the input.
    Omit,
}

/// Why a protected tenant's dead letter has no value (`acs.value.omitted`).
pub const OMITTED: &str = "privacy: the tenant's personal data is protected (privacy.dead_letter_value = \"omit\"); \
                           the record is in the input at the source offset";

/// Tenants whose secret is kept once derived (beyond: derived for each event).
const CACHED_TENANTS: usize = 10_000;

/// Tokens remembered (about 100 bytes each); when full, the memory starts over.
const CACHED_TOKENS: usize = 100_000;

/// Values shorter than this are hidden in their field but not searched for in free text.
const MIN_SEARCHED: usize = 3;

/// What replaces a hidden value in free text in `drop` mode.
const HIDDEN: &str = "[hidden]";

/// The configured protection of every tenant.
#[derive(Debug)]
pub struct Privacy {
    default: Mode,
    tenants: HashMap<Box<str>, Mode>,
    ip: IpForm,
    user_agent: UserAgentForm,
    dead_letter_value: DeadLetterValue,
    key: Option<Key>,
    /// The marks stamped on outputs, one per protecting mode.
    pseudonymized: Option<Arc<PrivacyMark>>,
    dropped: Option<Arc<PrivacyMark>>,
    /// Tenant secrets derived so far.
    secrets: RwLock<HashMap<Box<str>, TenantKey>>,
    /// Tokens made so far, by a 128-bit hash of tenant, kind and value.
    tokens: RwLock<HashMap<u128, Box<str>>>,
}

impl Default for Privacy {
    /// Every tenant kept as sent.
    fn default() -> Privacy {
        Privacy::new(Mode::Keep, HashMap::new(), IpForm::Token, UserAgentForm::Token, DeadLetterValue::Keep, None)
            .expect("keeping everything needs no key")
    }
}

/// A privacy configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivacyError {
    #[error("tenant {0:?} is in {1} mode, which needs a key: set privacy.key_file or ACS_STREAM__PRIVACY__KEY")]
    NoKey(String, &'static str),
}

impl Privacy {
    /// The protection of every tenant: `tenants`' own modes, `default` for the others. A
    /// mode other than `keep` needs `key`.
    pub fn new(
        default: Mode,
        tenants: HashMap<Box<str>, Mode>,
        ip: IpForm,
        user_agent: UserAgentForm,
        dead_letter_value: DeadLetterValue,
        key: Option<Key>,
    ) -> Result<Privacy, PrivacyError> {
        let needing = std::iter::once(("(default)", default))
            .chain(tenants.iter().map(|(tenant, mode)| (&**tenant, *mode)))
            .find(|(_, mode)| *mode != Mode::Keep);
        if let (Some((tenant, mode)), None) = (needing, &key) {
            return Err(PrivacyError::NoKey(tenant.to_owned(), mode.as_str()));
        }
        let mark = |mode: Mode| {
            key.as_ref().map(|key| Arc::new(PrivacyMark { mode: mode.as_str(), key_id: Arc::from(key.id()) }))
        };
        let secrets = key.as_ref().map_or_else(HashMap::new, |key| {
            let listed = tenants.iter().filter(|(_, mode)| **mode != Mode::Keep);
            listed.map(|(tenant, _)| (tenant.clone(), key.tenant(tenant))).collect()
        });
        Ok(Privacy {
            default,
            ip,
            user_agent,
            dead_letter_value,
            pseudonymized: mark(Mode::Pseudonymize),
            dropped: mark(Mode::Drop),
            tenants,
            key,
            secrets: RwLock::new(secrets),
            tokens: RwLock::new(HashMap::new()),
        })
    }

    /// `tenant`'s mode.
    pub fn mode(&self, tenant: &str) -> Mode {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }

    /// The mark of `tenant`'s outputs; `None` when its data is kept.
    pub fn mark(&self, tenant: &str) -> Option<&Arc<PrivacyMark>> {
        match self.mode(tenant) {
            Mode::Keep => None,
            Mode::Pseudonymize => self.pseudonymized.as_ref(),
            Mode::Drop => self.dropped.as_ref(),
        }
    }

    /// The key's id, when there is a key.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(Key::id)
    }

    /// Why a dead letter of `tenant` (`None`: its tenant could not be read; the default mode
    /// decides) must go without the original record, if it must.
    pub fn dead_letter_omission(&self, tenant: Option<&str>) -> Option<&'static str> {
        let mode = tenant.map_or(self.default, |tenant| self.mode(tenant));
        (self.dead_letter_value == DeadLetterValue::Omit && mode != Mode::Keep).then_some(OMITTED)
    }

    /// Applies the event's tenant's mode to it (see the module's documentation).
    pub fn protect(&self, event: &mut Event<'_>) {
        let mode = self.mode(&event.tenant_id);
        if mode == Mode::Keep {
            return;
        }
        let Some(secret) = self.secret(&event.tenant_id) else { return };
        event.privacy = self.mark(&event.tenant_id).cloned();
        let tenant: &str = &event.tenant_id;
        let token = |kind: Kind, value: &str| self.token(tenant, &secret, kind, value);
        let mut hidden = Hidden::default();
        let mut replace = |kind: Kind, value: &str, stand_in: Option<String>| {
            let shown = match mode {
                Mode::Drop => None,
                _ => Some(stand_in.unwrap_or_else(|| token(kind, value))),
            };
            hidden.add(value, shown.as_deref().unwrap_or(HIDDEN));
            shown.map(Cow::Owned)
        };
        let login = event.login.take().map(|value| replace(Kind::User, &value, None));
        let test_taker = event.test_taker.take().map(|value| replace(Kind::User, &value, None));
        let actor_id = event.actor_id.take().map(|value| replace(Kind::User, &value, None));
        let name = event.name.take().map(|value| replace(Kind::Name, &value, None));
        let ip = event.ip.take().map(|value| {
            let network = (self.ip == IpForm::Network).then(|| token::network(&value)).flatten();
            replace(Kind::Ip, &value, network)
        });
        let user_agent = event.user_agent.take().map(|value| {
            let browser = (self.user_agent == UserAgentForm::Browser).then(|| token::browser(&value));
            replace(Kind::UserAgent, &value, browser)
        });
        let id = pseudonymous_execution_id(&event.delivery_execution_id, &token, &mut hidden);
        (event.login, event.test_taker, event.actor_id) = (login.flatten(), test_taker.flatten(), actor_id.flatten());
        (event.name, event.ip, event.user_agent) = (name.flatten(), ip.flatten(), user_agent.flatten());
        if let Some(id) = id {
            event.delivery_execution_id = Cow::Owned(id);
        }
        hidden.scrub(event);
    }

    /// The token of `value`, a `kind`, in `tenant` (whose secret is `secret`): remembered for
    /// the next events (a person's values come again and again), up to [`CACHED_TOKENS`].
    fn token(&self, tenant: &str, secret: &TenantKey, kind: Kind, value: &str) -> String {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in [tenant.as_bytes(), &[0, kind as u8], value.as_bytes()] {
            hasher.update(part);
        }
        let key = hasher.digest128();
        // A poisoned lock only means another thread panicked mid-insert: the map is whole.
        if let Some(token) = self.tokens.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return token.to_string();
        }
        let token = secret.token(kind, value);
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= CACHED_TOKENS {
            tokens.clear();
        }
        tokens.insert(key, Box::from(token.as_str()));
        token
    }

    /// `tenant`'s secret, derived once (up to [`CACHED_TENANTS`] tenants).
    fn secret(&self, tenant: &str) -> Option<TenantKey> {
        let key = self.key.as_ref()?;
        // A poisoned lock only means another thread panicked mid-insert: the map is whole.
        if let Some(secret) = self.secrets.read().unwrap_or_else(|e| e.into_inner()).get(tenant) {
            return Some(secret.clone());
        }
        let secret = key.tenant(tenant);
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if secrets.len() < CACHED_TENANTS {
            secrets.insert(Box::from(tenant), secret.clone());
        }
        Some(secret)
    }
}

/// The delivery execution id with its user segment replaced by the user's token; `None` for
/// an id of another form (it holds no user id).
fn pseudonymous_execution_id(id: &str, token: &impl Fn(Kind, &str) -> String, hidden: &mut Hidden) -> Option<String> {
    let parts = crate::decode::identity::split_execution_id(id)?;
    // The segment is the user id reversed and URL-encoded.
    let reversed: String = parts.user.chars().rev().collect();
    let user = percent_decode(&reversed).unwrap_or(reversed);
    let token = token(Kind::User, &user);
    hidden.add(parts.user, &token);
    hidden.add(&user, &token);
    let mut out = String::with_capacity(id.len() + token.len());
    if let Some(prefix) = parts.prefix {
        out.push_str(prefix);
        out.push('#');
    }
    for piece in [&*token, "#", parts.delivery, "#", parts.attempt, "#", parts.tenant] {
        out.push_str(piece);
    }
    Some(out)
}

/// `%XX` sequences decoded; `None` when there are none or they do not make UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[at], bytes.get(at + 1).copied().and_then(hex), bytes.get(at + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                at += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The values hidden in an event's fields, with what replaced each: searched for in its free
/// text.
#[derive(Default)]
struct Hidden {
    /// The value (ASCII lowercase) and its replacement.
    pairs: Vec<(String, String)>,
}

impl Hidden {
    fn add(&mut self, value: &str, replacement: &str) {
        let value = value.trim().to_ascii_lowercase();
        if value.len() >= MIN_SEARCHED && !self.pairs.iter().any(|(known, _)| *known == value) {
            self.pairs.push((value, replacement.to_owned()));
        }
    }

    /// Replaces the hidden values in the event's free text.
    fn scrub(mut self, event: &mut Event<'_>) {
        if self.pairs.is_empty() {
            return;
        }
        // Also as written inside JSON strings (structured data, a message quoting JSON).
        let escaped: Vec<(String, String)> = (self.pairs.iter())
            .filter(|(value, _)| value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20))
            .filter_map(|(value, replacement)| {
                let json = serde_json::to_string(value).ok()?;
                let inner = json[1..json.len() - 1].to_owned();
                (inner != *value).then(|| (inner, replacement.clone()))
            })
            .collect();
        self.pairs.extend(escaped);
        // Longest first: a name before the first name it starts with.
        self.pairs.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        if let Some(clean) = event.reason_message.as_deref().and_then(|message| self.replaced(message)) {
            event.reason_message = Some(Cow::Owned(clean));
        }
        let Some(signal) = &mut event.signal else { return };
        for text in signal.tags.iter_mut().chain(signal.processes.iter_mut()) {
            if let Some(clean) = self.replaced(text) {
                *text = clean;
            }
        }
        if let Some(clean) = signal.data.as_ref().and_then(|data| self.replaced(data.as_str())) {
            // A replacement that broke the document (inside an escape): the data goes.
            signal.data = JsonText::parse(&clean);
            if signal.data.is_none() {
                signal.data_format = None;
            }
        }
    }

    /// `text` with every hidden value replaced (ASCII case ignored; a longer value first
    /// where two overlap); `None` when none is in it.
    fn replaced(&self, text: &str) -> Option<String> {
        // Sorted longest first: the last is the shortest.
        let shortest = self.pairs.last().map_or(usize::MAX, |(value, _)| value.len());
        if text.len() < shortest {
            return None;
        }
        // ASCII lowercasing keeps every byte where it was: positions in `lower` hold in
        // `text`, and a match (of a whole UTF-8 needle) starts and ends on char boundaries.
        let lower = text.to_ascii_lowercase();
        let mut found: Vec<(usize, usize, &str)> = Vec::new();
        for (value, replacement) in &self.pairs {
            for start in occurrences(lower.as_bytes(), value.as_bytes()) {
                let end = start + value.len();
                if found.iter().all(|&(s, e, _)| end <= s || start >= e) {
                    found.push((start, end, replacement));
                }
            }
        }
        if found.is_empty() {
            return None;
        }
        found.sort_unstable_by_key(|&(start, _, _)| start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end, replacement) in found {
            out.push_str(&text[at..start]);
            out.push_str(replacement);
            at = end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }
}

/// Where `needle` (not empty) starts in `haystack`, without overlaps: its first byte found,
/// then the rest compared (cheaper than a substring searcher's set-up on the short texts of
/// events).
fn occurrences<'h>(haystack: &'h [u8], needle: &'h [u8]) -> impl Iterator<Item = usize> + 'h {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (&first, _) = needle.split_first()?;
        while let Some(found) = haystack.get(at..)?.iter().position(|&b| b == first) {
            let start = at + found;
            if haystack[start..].starts_with(needle) {
                at = start + needle.len();
                return Some(start);
            }
            at = start + 1;
        }
        None
    })
}

#[cfg(test)]
mod tests;
