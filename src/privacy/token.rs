//! Pseudonyms: keyed HMAC-SHA-256 tokens, with a secret per tenant derived from one key, and
//! the reductions that may stand in for a token (an IP's network, a user agent's browser).
//!
//! A token is `ps_` and 16 hex digits (64 bits of `HMAC(tenant secret, kind ‖ value)`): the
//! same value gets the same token in every event of a tenant, across restarts, and another
//! token in another tenant. The key never leaves this module: it is not `Debug`, and only
//! its id (`HMAC(key, "acs-stream/key-id")`, 8 hex digits) is shown.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "ps_";

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Hex digits of a token after its prefix.
const TOKEN_DIGITS: usize = 16;

/// The one key every tenant's secret is derived from (`privacy.key_file` or
/// `ACS_STREAM__PRIVACY__KEY`).
#[derive(Clone)]
pub struct Key {
    mac: HmacSha256,
    id: String,
}

/// Never the key itself.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is {0} bytes long; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -base64 48`)")]
    TooShort(usize),
}

impl Key {
    /// The key from its bytes (surrounding whitespace, such as a file's final newline, is not
    /// part of it).
    pub fn new(bytes: &[u8]) -> Result<Key, KeyError> {
        let bytes = bytes.trim_ascii();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(bytes.len()));
        }
        let mac = HmacSha256::new_from_slice(bytes).expect("HMAC takes a key of any length");
        let id = hex(&sign(&mac, &[b"acs-stream/key-id"]), 8);
        Ok(Key { mac, id })
    }

    /// Its id, stamped on outputs (8 hex digits; tells keys apart, says nothing of them).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret of `tenant`'s tokens.
    pub fn tenant(&self, tenant: &str) -> TenantKey {
        let secret = sign(&self.mac, &[b"acs-stream/tenant/", tenant.as_bytes()]);
        TenantKey { mac: HmacSha256::new_from_slice(&secret).expect("HMAC takes a key of any length") }
    }
}

/// What a token stands for: values of different kinds never share a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A user id: login, test taker, actor id, the user segment of a delivery execution id.
    User,
    Name,
    Ip,
    UserAgent,
}

impl Kind {
    fn domain(self) -> &'static [u8] {
        match self {
            Kind::User => b"user\0",
            Kind::Name => b"name\0",
            Kind::Ip => b"ip\0",
            Kind::UserAgent => b"user-agent\0",
        }
    }
}

/// One tenant's secret.
#[derive(Clone)]
pub struct TenantKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantKey(..)")
    }
}

impl TenantKey {
    /// The token of `value`, a `kind`.
    pub fn token(&self, kind: Kind, value: &str) -> String {
        let mut token = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_DIGITS);
        token.push_str(TOKEN_PREFIX);
        token.push_str(&hex(&sign(&self.mac, &[kind.domain(), value.as_bytes()]), TOKEN_DIGITS));
        token
    }
}

fn sign(mac: &HmacSha256, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = mac.clone();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The first `digits` hex digits of `bytes`.
fn hex(bytes: &[u8], digits: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(digits);
    for byte in bytes.iter().take(digits.div_ceil(2)) {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out.truncate(digits);
    out
}

/// An IP's network: `/24` for IPv4, `/48` for IPv6 (`10.1.2.0/24`, `2001:db8:1::/48`);
/// `None` when `ip` is not an address.
pub fn network(ip: &str) -> Option<String> {
    match ip.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(format!("{a}.{b}.{c}.0/24"))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            Some(format!("{net}/48"))
        }
    }
}

/// A user agent's browser family and major version (`Chrome 120`, `Firefox 128`,
/// `Safari 17`, `Edge 120`, `Opera 105`, `SEB 3`); `Other` for anything else.
pub fn browser(user_agent: &str) -> String {
    // Most specific first: Edge and Opera also say Chrome, Chrome also says Safari.
    const FAMILIES: [(&str, &str); 6] = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("SEB/", "SEB"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Version/", "Safari"),
    ];
    for (marker, family) in FAMILIES {
        if family == "Safari" && !user_agent.contains("Safari/") {
            continue;
        }
        if let Some(at) = user_agent.find(marker) {
            let major: String =
                user_agent[at + marker.len()..].chars().take_while(char::is_ascii_digit).take(6).collect();
            return if major.is_empty() { family.to_owned() } else { format!("{family} {major}") };
        }
    }
    "Other".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_are_stable_per_tenant_and_kind_and_differ_across_them() {
        let key = Key::new(KEY).unwrap();
        let acme = key.tenant("acme");
        let token = acme.token(Kind::User, "jdoe");
        assert!(token.starts_with("ps_") && token.len() == 19, "{token}");
        assert_eq!(token, Key::new(KEY).unwrap().tenant("acme").token(Kind::User, "jdoe"), "stable across keys made");
        assert_ne!(token, key.tenant("globex").token(Kind::User, "jdoe"), "another tenant");
        assert_ne!(token, acme.token(Kind::Name, "jdoe"), "another kind");
        assert_ne!(token, acme.token(Kind::User, "jdoe2"));
        let other = Key::new(b"another key, at least thirty-two bytes").unwrap();
        assert_ne!(token, other.tenant("acme").token(Kind::User, "jdoe"), "another key");
        assert_ne!(key.id(), other.id());
        assert_eq!(key.id().len(), 8);
    }

    #[test]
    fn short_keys_are_refused_and_never_shown() {
        assert_eq!(Key::new(b"short").unwrap_err(), KeyError::TooShort(5));
        assert_eq!(Key::new(&[b' '; 40]).unwrap_err(), KeyError::TooShort(0));
        assert_eq!(Key::new(b"0123456789abcdef0123456789abcdef\n").unwrap().id(), Key::new(KEY).unwrap().id());
        let shown = format!("{:?} {:?}", Key::new(KEY).unwrap(), Key::new(KEY).unwrap().tenant("acme"));
        assert!(!shown.contains("0123456789"), "{shown}");
    }

    #[test]
    fn networks_and_browsers() {
        assert_eq!(network("10.1.2.3").as_deref(), Some("10.1.2.0/24"));
        assert_eq!(network("2001:db8:1:2::5").as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(network("not an ip"), None);
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Safari/537.36",
                "Chrome 120",
            ),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox 128"),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
                "Safari 17",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0.2210",
                "Edge 120",
            ),
            ("curl/8.5.0", "Other"),
        ];
        for (agent, family) in cases {
            assert_eq!(browser(agent), family, "{agent}");
        }
    }
}
