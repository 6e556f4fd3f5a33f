//! Secrets: sites' ids and API keys are made here, shown once, and kept
//! only as salted HMAC-SHA256 digests; upload policies are signed with a
//! key kept in the database.

use hmac::{KeyInit as _, Mac as _};
use veil_util::base64;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// `n` random bytes from the operating system.
pub(crate) fn random(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
}

/// A new secret: 32 random bytes, base64url (43 characters).
pub(crate) fn new_secret() -> String {
    base64::encode(&random(32), base64::URL_SAFE).trim_end_matches('=').to_string()
}

/// HMAC-SHA256 of `message` under `key`.
pub(crate) fn mac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `secret` is the one whose digest under `salt` is `digest`, in
/// time that does not depend on where they differ.
pub(crate) fn matches(secret: &str, salt: &[u8], digest: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(secret.as_bytes());
    mac.verify_slice(digest).is_ok()
}

/// `Authorization: Basic base64(user:password)`, split.
pub(crate) fn basic(header: &str) -> Option<(String, String)> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64::decode(token.trim(), base64::STANDARD)?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_only_its_digest() {
        let salt = random(16);
        let secret = new_secret();
        assert_eq!(secret.len(), 43);
        let digest = mac(&salt, secret.as_bytes());
        assert!(matches(&secret, &salt, &digest));
        assert!(!matches(&new_secret(), &salt, &digest));
        assert!(!matches(&secret, &random(16), &digest));
    }

    #[test]
    fn basic_credentials_are_parsed() {
        let header = format!("Basic {}", base64::encode(b"alice:s3:cret", base64::STANDARD));
        assert_eq!(basic(&header), Some(("alice".into(), "s3:cret".into())));
        assert_eq!(basic("Bearer abc"), None);
        assert_eq!(basic("Basic !!!"), None);
    }
}
