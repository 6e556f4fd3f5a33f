//! S3's browser-based upload: a form, signed here with SigV4, that lets
//! whoever holds it POST one object of bounded size to one key until it
//! expires, without credentials of their own (reference: the AWS guide
//! "Authenticating requests in browser-based uploads using POST").
//!
//! The Cumulus aggregator hands sites such a form in its upload handshake;
//! `veil aggregator serve --storage s3://…` does the same, so the zip goes
//! straight to the bucket and never through the aggregator's server.
//! object_store signs presigned GETs and PUTs but not POST policies, hence
//! this module.

use serde_json::json;

/// A signed upload form: POST `url` as `multipart/form-data` with every
/// field of `fields`, then the file last, in a part named `file`.
#[derive(Debug, Clone)]
pub struct PresignedPost {
    /// The bucket's URL.
    pub url: String,
    /// The form fields, in the order they are sent.
    pub fields: Vec<(String, String)>,
}

/// What a POST policy is signed for.
pub(crate) struct PostGrant<'a> {
    pub bucket: &'a str,
    pub region: &'a str,
    /// The object's whole key in the bucket.
    pub key: &'a str,
    /// The largest object accepted, in bytes (S3 refuses larger ones).
    pub max_bytes: u64,
    /// When the form is signed and when it stops working, in seconds since the epoch.
    pub now: u64,
    pub expires: u64,
}

/// The credentials that sign (from object_store's provider, so that
/// environment keys, web identity and instance roles all work).
pub(crate) struct Signer<'a> {
    pub key_id: &'a str,
    pub secret_key: &'a str,
    pub token: Option<&'a str>,
}

/// The form's fields for `grant`, signed by `signer`. The policy pins the
/// bucket, the exact key, the size range and the signing fields; S3 checks
/// every field sent against it, so a holder can change none of them.
pub(crate) fn sign(grant: &PostGrant<'_>, signer: &Signer<'_>) -> Vec<(String, String)> {
    let (date, amz_date) = amz_dates(grant.now);
    let credential = format!("{}/{date}/{}/s3/aws4_request", signer.key_id, grant.region);
    let mut conditions = vec![
        json!({"bucket": grant.bucket}),
        json!({"key": grant.key}),
        json!(["content-length-range", 1, grant.max_bytes]),
        json!({"x-amz-algorithm": "AWS4-HMAC-SHA256"}),
        json!({"x-amz-credential": credential}),
        json!({"x-amz-date": amz_date}),
    ];
    if let Some(token) = signer.token {
        conditions.push(json!({"x-amz-security-token": token}));
    }
    let expiration = format!("{}.000Z", veil_util::clock::iso(grant.expires).trim_end_matches('Z'));
    let policy = json!({"expiration": expiration, "conditions": conditions}).to_string();
    let policy = veil_util::base64::encode(policy.as_bytes(), veil_util::base64::STANDARD);
    let signature = veil_util::hex::encode(&mac(&signing_key(signer.secret_key, &date, grant.region, "s3"), &policy));
    let mut fields = vec![
        ("key".to_string(), grant.key.to_string()),
        ("x-amz-algorithm".to_string(), "AWS4-HMAC-SHA256".to_string()),
        ("x-amz-credential".to_string(), credential),
        ("x-amz-date".to_string(), amz_date),
    ];
    if let Some(token) = signer.token {
        fields.push(("x-amz-security-token".to_string(), token.to_string()));
    }
    fields.push(("policy".to_string(), policy));
    fields.push(("x-amz-signature".to_string(), signature));
    fields
}

/// `20261123` and `20261123T101500Z` for `secs` since the epoch.
fn amz_dates(secs: u64) -> (String, String) {
    let iso = veil_util::clock::iso(secs);
    let compact: String = iso.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    (compact[..8].to_string(), compact)
}

/// SigV4's signing key: the secret HMAC-chained through the date, the
/// region, the service and `aws4_request`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = mac(&key, part);
    }
    key
}

fn mac(key: &[u8], text: &str) -> Vec<u8> {
    use hmac::Mac as _;
    crate::hmac_sha256(key, text).finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_key_is_the_one_aws_documents() {
        // AWS's worked example of deriving a SigV4 signing key.
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
        assert_eq!(veil_util::hex::encode(&key), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    #[test]
    fn the_policy_pins_the_key_the_size_and_the_signing_fields() {
        let grant = PostGrant {
            bucket: "b",
            region: "eu-west-1",
            key: "agg/upload_staging/flu/x.zip",
            max_bytes: 1024,
            now: 1_795_000_000,
            expires: 1_795_003_600,
        };
        let signer = Signer { key_id: "AKID", secret_key: "secret", token: Some("session") };
        let fields = sign(&grant, &signer);
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap();
        let policy: serde_json::Value =
            serde_json::from_slice(&veil_util::base64::decode(get("policy"), veil_util::base64::STANDARD).unwrap())
                .unwrap();
        assert_eq!(
            policy["expiration"],
            format!("{}.000Z", veil_util::clock::iso(1_795_003_600).trim_end_matches('Z'))
        );
        let conditions = policy["conditions"].as_array().unwrap();
        assert!(conditions.contains(&json!({"key": "agg/upload_staging/flu/x.zip"})));
        assert!(conditions.contains(&json!(["content-length-range", 1, 1024])));
        assert!(conditions.contains(&json!({"x-amz-security-token": "session"})));
        // Every field S3 will check against the policy is in it.
        for (name, value) in &fields {
            if !["policy", "x-amz-signature"].contains(&name.as_str()) {
                assert!(conditions.contains(&json!({name.as_str(): value})), "{name} is pinned");
            }
        }
        assert!(get("x-amz-credential").starts_with("AKID/"));
        assert!(get("x-amz-credential").ends_with("/eu-west-1/s3/aws4_request"));
        assert_eq!(get("x-amz-date").len(), 16);
        // The signature covers the policy: another policy, another signature.
        let other = sign(&PostGrant { max_bytes: 2048, ..grant }, &signer);
        assert_ne!(
            other.iter().find(|(n, _)| n == "x-amz-signature"),
            fields.iter().find(|(n, _)| n == "x-amz-signature")
        );
    }
}
