//! The anonymizer's `cryptoHash` (reference: ms-anonymizer.md §5.3):
//! lowercase-hex HMAC-SHA256 of the UTF-8 value, and for references only
//! their id part, so that hashed references still point at hashed ids.

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use regex::Regex;
use sha2::Sha256;

/// HMAC-SHA256 with its key prepared once: the keyed inner and outer
/// states are computed at construction and cloned per value, which halves
/// the work for the short values (ids, references) hashed most.
#[derive(Clone)]
pub(crate) struct Hasher(Hmac<Sha256>);

impl Hasher {
    pub fn new(key: &[u8]) -> Hasher {
        Hasher(<Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length"))
    }

    /// `hex(HMAC-SHA256(key, value))`; the empty string stays empty.
    pub fn hash(&self, value: &str) -> String {
        if value.is_empty() {
            return String::new();
        }
        let mut mac = self.0.clone();
        mac.update(value.as_bytes());
        veil_util::hex::encode(&mac.finalize().into_bytes())
    }
}

/// `hex(HMAC-SHA256(key, value))`; the empty string stays empty.
#[cfg(test)]
pub(crate) fn hash(key: &[u8], value: &str) -> String {
    Hasher::new(key).hash(value)
}

/// AES-CBC with PKCS7 padding and a fresh random IV; base64 of `IV || ciphertext` (§5.4).
pub(crate) fn encrypt(key: &[u8], plain: &str) -> String {
    use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
    let mut iv = [0u8; 16];
    getrandom::fill(&mut iv).expect("the operating system's random source");
    let ct = match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
            .map(|c| c.encrypt_padded_vec::<Pkcs7>(plain.as_bytes())),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, &iv)
            .map(|c| c.encrypt_padded_vec::<Pkcs7>(plain.as_bytes())),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map(|c| c.encrypt_padded_vec::<Pkcs7>(plain.as_bytes())),
    }
    .expect("key sizes are validated with the configuration");
    let mut out = iv.to_vec();
    out.extend(ct);
    veil_util::base64::encode(&out, veil_util::base64::STANDARD)
}

/// The inverse of [`encrypt`]; `None` for text that is not base64 of an IV and whole blocks.
#[cfg(test)]
pub(crate) fn decrypt(key: &[u8], text: &str) -> Option<String> {
    use aes::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
    let bytes = veil_util::base64::decode(text, veil_util::base64::STANDARD)?;
    if bytes.len() < 32 {
        return None;
    }
    let (iv, ct) = bytes.split_at(16);
    let plain = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv).ok()?.decrypt_padded_vec::<Pkcs7>(ct).ok()?,
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv).ok()?.decrypt_padded_vec::<Pkcs7>(ct).ok()?,
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv).ok()?.decrypt_padded_vec::<Pkcs7>(ct).ok()?,
        _ => return None,
    };
    String::from_utf8(plain).ok()
}

fn uuid_pattern() -> &'static Regex {
    static P: OnceLock<Regex> = OnceLock::new();
    P.get_or_init(|| {
        Regex::new(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$").expect("valid")
    })
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_oid(s: &str) -> bool {
    // [0-2](\.(0|[1-9][0-9]*))+
    let mut parts = s.split('.');
    let first_ok = parts.next().is_some_and(|p| matches!(p, "0" | "1" | "2"));
    let mut n = 0;
    let rest_ok = parts.all(|p| {
        n += 1;
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    });
    first_ok && n > 0 && rest_ok
}

/// Splits a literal reference `[http(s)://host/path/]Type/id[/_history/v]`
/// into (prefix up to and including `Type/`, id, suffix), with the
/// anonymizer's character classes: the URL part allows `A-Za-z0-9/.:%$` only
/// (no `-`, `_` or `~`), and the type must be an R4 resource type.
fn split_literal(reference: &str) -> Option<(&str, &str, &str)> {
    let (body, suffix) = match reference.rfind("/_history/") {
        Some(at) if is_id(&reference[at + 10..]) => (&reference[..at], &reference[at..]),
        _ => (reference, ""),
    };
    let slash = body.rfind('/')?;
    let (head, id) = (&body[..slash], &body[slash + 1..]);
    if !is_id(id) {
        return None;
    }
    let type_start = head.rfind('/').map_or(0, |i| i + 1);
    let ty = &head[type_start..];
    let model = veil_fhir::r4();
    if !model.is_resource_type(ty) || matches!(ty, "Resource" | "DomainResource") {
        return None;
    }
    let base = &head[..type_start];
    let base_ok = base.is_empty()
        || ["http://", "https://"].iter().any(|scheme| {
            base.strip_prefix(scheme)
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"/.:%$".contains(&b)))
        });
    base_ok.then(|| (&reference[..slash + 1], id, suffix))
}

/// Applies `transform` to the id part of a `Reference.reference` value:
/// `#id`, `[base/]Type/id[/_history/v]`, `urn:oid:…`, `urn:uuid:…`; any
/// other form is transformed whole (ms-anonymizer.md §5.3).
pub(crate) fn transform_reference(reference: &str, transform: impl Fn(&str) -> String) -> String {
    if let Some(local) = reference.strip_prefix('#') {
        return format!("#{}", transform(local));
    }
    if let Some((prefix, id, suffix)) = split_literal(reference) {
        return format!("{prefix}{}{suffix}", transform(id));
    }
    if let Some(oid) = reference.strip_prefix("urn:oid:").filter(|o| is_oid(o)) {
        return format!("urn:oid:{}", transform(oid));
    }
    if let Some(uuid) = reference.strip_prefix("urn:uuid:").filter(|u| uuid_pattern().is_match(u)) {
        return format!("urn:uuid:{}", transform(uuid));
    }
    transform(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"123";

    #[test]
    fn hmac_vectors() {
        for (input, want) in [
            ("abc", "8f16771f9f8851b26f4d460fa17de93e2711c7e51337cb8a608a0f81e1c1b6ae"),
            ("&*^%$@()=-,/", "33f6f7d6b3602bf5354dcb4b8d988982602349355f50f86798d8ce1ffd61521b"),
            ("ÆŊŋßſ♫∅", "1a94823f0a0f00a4b1ca771c3446dc5e17958f4dae3588ace2bca8a843eb63d9"),
            (
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ1234567890!@#$%^&*()=-",
                "352b5a4af5adb81fa616c2a5b5c492d0b0b544c188a9aa003767a2b5efbd1478",
            ),
            ("a", "69e99e82127c1f146f50653e02b92c4bb0c3bc182a6165a5bbce5f4f94e1ccb7"),
            (
                "bb6f4872-e456-42d5-a9da-a0d82cb7ea29",
                "73defcb8fcaf4c0c3d5c77f05b479cadbe502db2ef6e9b1523d2bfee31f3b999",
            ),
            ("urn:oid:1.2.3.4.5", "6aa8e3e9af18cae990adc9c26dc006ebf633dd1332886867a691ee2d5247dd15"),
            ("2020-04-12", "1e99c6a8b99d3c8b4906c2e80911ad3b5961fd7498d3bc2b96fb128bc7148f90"),
            ("example", "698d54f0494528a759f19c8e87a9f99e75a5881b9267ee3926bcf62c992d84ba"),
            ("1", "ccc8c71905806db18c0241b58a8e36e949ab8a45961041b4226b2a4284568e69"),
            ("", ""),
        ] {
            assert_eq!(hash(KEY, input), want, "{input}");
        }
    }

    #[test]
    fn decrypt_vectors_and_round_trip() {
        let key = b"704ab12c8e3e46d4bea600ef62a6bec7";
        for (coded, plain) in [
            ("qpxGp6T9DP7wB0EYPQwOYVrScQ/pq3c0D+JQ+hjnfkY=", "abc"),
            ("GI99peR2SpPfcqEgzr7/z7gxYym6qyVPPzvmGc8o8SSwqMpCsW0CRj3v6ZsxFCef", "This is for test"),
            ("JxNRbbxL6pYYpbrtHWZ+1gPTPcIVrLWmrugPiUR9d6k=", "!@)(*&%^!@#$%@"),
            ("nQTtB/efLGpEqzOh/Pt4ZRlqZynO7gjePdu7LbLxH2LoqYJXAq6SQWkFeQ1SiqRM", "ͶΆΈΞξτϡϿῧῄᾴѶѾ"),
            ("zrFYnZ2cIwcfmjCVybP1ZC+LaD7gwGXBHR2bZjuutzA=", "测试"),
        ] {
            assert_eq!(decrypt(key, coded).as_deref(), Some(plain));
        }
        assert_eq!(decrypt(key, "YWJj"), None);
        assert_eq!(decrypt(key, "not base64!"), None);
        for k in [&b"0123456789abcdef"[..], b"0123456789abcdef01234567", key] {
            let once = encrypt(k, "Peter Chalmers");
            assert_ne!(once, encrypt(k, "Peter Chalmers"), "a fresh IV each time");
            assert_eq!(decrypt(k, &once).as_deref(), Some("Peter Chalmers"));
        }
    }

    #[test]
    fn reference_vectors() {
        let h = |s: &str| hash(KEY, s);
        for (input, want) in [
            ("", ""),
            ("#", "#"),
            ("#p1", "#a10e6bee4fbeb6a7804153c25688dd4dd7b9c2a005417136026350fc33ac609f"),
            ("Patient/example", "Patient/698d54f0494528a759f19c8e87a9f99e75a5881b9267ee3926bcf62c992d84ba"),
            (
                "http://fhir.hl7.org/svc/StructureDefinition/c8973a22-2b5b-4e76-9c66-00639c99e61b",
                "http://fhir.hl7.org/svc/StructureDefinition/b0ff9c939b3507a79e2ae3d2d3b595d62819b9b8f6ef10d4099b3058d902642f",
            ),
            (
                "http://example.org/fhir/Observation/apo89654/_history/2",
                "http://example.org/fhir/Observation/b1e85ca33baf76575ad28588af85b8f10c0dd40e9ed8cd57cdb7ae94ccd75695/_history/2",
            ),
            (
                "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
                "urn:uuid:24970eb3f915e516a2b5241c0d6979097a6357a13b89612c6a54b8ab5479df34",
            ),
            ("urn:oid:1.2.3.4.5", "urn:oid:0543fb50485f58a47073f51aad1677607aec031c2c83c25ee7b040ade95cfbcc"),
        ] {
            assert_eq!(transform_reference(input, h), want, "{input}");
        }
        let at = |_: &str| "@ID".to_string();
        for (input, want) in [
            ("#p1", "#@ID"),
            ("Patient/034AB16", "Patient/@ID"),
            ("urn:uuid:C757873D-EC9A-4326-A141-556F43239520", "urn:uuid:@ID"),
            ("034AB16", "@ID"),
            ("Patient/AbcŴΉЙ", "@ID"),
            ("https://my-server/Patient/1", "@ID"),
            ("ftp://example.org/fhir/StructureDefinition/x", "@ID"),
            ("wwurn:uuid:c757873d-ec9a-4326-a141-556f43239520", "@ID"),
            ("urn:oid:1.2.3=4.5", "@ID"),
        ] {
            assert_eq!(transform_reference(input, at), want, "{input}");
        }
    }
}
