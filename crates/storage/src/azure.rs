//! Azure service SAS, signed here with the account key (object_store signs
//! only single blobs; a share needs a container SAS that can list).
//!
//! The string to sign is the one for service SAS versions 2020-12-06 and
//! later (reference: deid-landscape.md §4.1): permissions, start, expiry,
//! the canonical resource, identifier, IP range, protocol, version,
//! resource type, snapshot time, encryption scope and the five response
//! header overrides, one per line; the signature is HMAC-SHA256 with the
//! base64-decoded account key.
//!
//! Each share's SAS refers to a **stored access policy** on its container
//! (`si`) that holds the permissions and the expiry, so deleting the policy
//! revokes that share's SAS and no other (a container holds at most five
//! policies). The policy is named `<share id>.<expiry>`, so that `veil
//! fetch` can tell from a link when it expires (the SAS itself carries no
//! `se`: Azurite, at least, ignores one beside a policy). The policies are read and written with
//! the Set/Get Container ACL operations, authorized with Shared Key.

use hmac::Mac as _;

use crate::StorageError;
use crate::share::Cidr;

/// The storage service version Veil signs for.
pub const SAS_VERSION: &str = "2022-11-02";

/// Azurite's well-known development account (public, in Microsoft's docs).
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Whether `AZURE_STORAGE_USE_EMULATOR` asks for Azurite.
pub fn use_emulator() -> bool {
    std::env::var("AZURE_STORAGE_USE_EMULATOR")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// A storage account that can sign: its name, key and blob endpoint.
pub struct Account {
    name: String,
    key: Vec<u8>,
    endpoint: String,
}

impl Account {
    /// The account of the environment: Azurite's when
    /// `AZURE_STORAGE_USE_EMULATOR=true` (at `AZURITE_BLOB_STORAGE_URL`, by
    /// default http://127.0.0.1:10000), else `AZURE_STORAGE_ACCOUNT_NAME`
    /// and `AZURE_STORAGE_ACCOUNT_KEY`.
    pub fn from_env() -> Result<Account, StorageError> {
        let var = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()));
        if use_emulator() {
            let base = var(&["AZURITE_BLOB_STORAGE_URL"]).unwrap_or_else(|| "http://127.0.0.1:10000".into());
            let name = var(&["AZURE_STORAGE_ACCOUNT_NAME"]).unwrap_or_else(|| EMULATOR_ACCOUNT.into());
            let key = var(&["AZURE_STORAGE_ACCOUNT_KEY"]).unwrap_or_else(|| EMULATOR_KEY.into());
            return Account::new(&name, &key, &format!("{}/{name}", base.trim_end_matches('/')));
        }
        let (Some(name), Some(key)) = (
            var(&["AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"]),
            var(&["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_KEY"]),
        ) else {
            return Err(StorageError::Unsupported(
                "an Azure SAS is signed with the storage account key: set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY".into(),
            ));
        };
        Account::new(&name, &key, &format!("https://{name}.blob.core.windows.net"))
    }

    /// An account from its name, base64 key and blob endpoint URL.
    pub fn new(name: &str, key: &str, endpoint: &str) -> Result<Account, StorageError> {
        let key = veil_util::base64::decode(key.trim(), veil_util::base64::STANDARD)
            .ok_or_else(|| StorageError::Location("the Azure storage account key is not base64".into()))?;
        Ok(Account { name: name.into(), key, endpoint: endpoint.trim_end_matches('/').into() })
    }

    /// The URL of a container.
    pub fn container_url(&self, container: &str) -> String {
        format!("{}/{}", self.endpoint, encode_path(container))
    }

    /// A URL that lists and reads every blob of `container` (and writes
    /// nothing) as the container's stored access policy `policy` allows,
    /// until its expiry.
    pub fn container_sas_url(&self, container: &str, policy: &AccessPolicy, ip: Option<&Cidr>) -> String {
        let query = self.sign(Grant::Policy(policy), &format!("/blob/{}/{container}", self.name), "c", ip);
        format!("{}?{query}", self.container_url(container))
    }

    /// A URL that reads one blob as the stored access policy `policy`
    /// allows, until its expiry.
    pub fn blob_sas_url(&self, container: &str, blob: &str, policy: &AccessPolicy, ip: Option<&Cidr>) -> String {
        let query = self.sign(Grant::Policy(policy), &format!("/blob/{}/{container}/{blob}", self.name), "b", ip);
        format!("{}/{}?{query}", self.container_url(container), encode_path(blob))
    }

    /// The SAS query string.
    fn sign(&self, grant: Grant<'_>, resource: &str, kind: &str, ip: Option<&Cidr>) -> String {
        let (permissions, expiry, identifier) = match grant {
            Grant::Policy(p) => (String::new(), String::new(), p.id.clone()),
            #[cfg(test)]
            Grant::AdHoc(permissions, expiry) => {
                (permissions.to_string(), veil_util::clock::iso(expiry), String::new())
            }
        };
        let ip = ip.map(Cidr::azure_range).unwrap_or_default();
        // https only, but for an emulator on plain http (Azurite in tests).
        let protocol = if self.endpoint.starts_with("https://") { "https" } else { "https,http" };
        let to_sign = [
            &permissions,
            "",
            &expiry,
            resource,
            &identifier,
            &ip,
            protocol,
            SAS_VERSION,
            kind,
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let signature = veil_util::base64::encode(&self.hmac(&to_sign), veil_util::base64::STANDARD);
        let mut query = format!("sv={SAS_VERSION}&sr={kind}");
        for (name, value) in [("si", &identifier), ("sp", &permissions), ("se", &expiry)] {
            if !value.is_empty() {
                query.push_str(&format!("&{name}={}", encode_query(value)));
            }
        }
        query.push_str(&format!("&spr={}", encode_query(protocol)));
        if !ip.is_empty() {
            query.push_str(&format!("&sip={ip}"));
        }
        query.push_str(&format!("&sig={}", encode_query(&signature)));
        query
    }

    fn hmac(&self, text: &str) -> Vec<u8> {
        crate::hmac_sha256(&self.key, text).finalize().into_bytes().to_vec()
    }

    /// The stored access policies of `container`.
    pub fn access_policies(&self, container: &str) -> Result<Vec<AccessPolicy>, StorageError> {
        let text = self.container_acl(container, None)?;
        let doc = roxmltree::Document::parse(&text).map_err(|_| {
            StorageError::Location(format!("az://{container}: the container's access policies are not XML"))
        })?;
        let child = |n: roxmltree::Node<'_, '_>, tag: &str| {
            n.descendants().find(|c| c.has_tag_name(tag)).and_then(|c| c.text()).unwrap_or_default().to_string()
        };
        Ok(doc
            .descendants()
            .filter(|n| n.has_tag_name("SignedIdentifier"))
            .map(|n| {
                let id = child(n, "Id");
                let expiry = veil_util::clock::parse_iso(&child(n, "Expiry"))
                    .or_else(|| id.rsplit_once('.')?.1.parse().ok())
                    .unwrap_or(0);
                AccessPolicy { id, expiry, permissions: child(n, "Permission") }
            })
            .collect())
    }

    /// Replaces the stored access policies of `container` (at most five).
    pub fn set_access_policies(&self, container: &str, policies: &[AccessPolicy]) -> Result<(), StorageError> {
        let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><SignedIdentifiers>"#);
        for p in policies {
            xml.push_str(&format!(
                "<SignedIdentifier><Id>{}</Id><AccessPolicy><Expiry>{}</Expiry><Permission>{}</Permission></AccessPolicy></SignedIdentifier>",
                p.id,
                veil_util::clock::iso(p.expiry),
                p.permissions
            ));
        }
        xml.push_str("</SignedIdentifiers>");
        self.container_acl(container, Some(xml)).map(|_| ())
    }

    /// Get (`None`) or Set Container ACL, authorized with Shared Key.
    fn container_acl(&self, container: &str, body: Option<String>) -> Result<String, StorageError> {
        let failed = |message: String| StorageError::Store { location: format!("az://{container}"), message };
        let url = reqwest::Url::parse(&format!("{}?restype=container&comp=acl", self.container_url(container)))
            .map_err(|e| failed(e.to_string()))?;
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let (method, length, content_type) = match &body {
            Some(b) => ("PUT", b.len().to_string(), "application/xml"),
            None => ("GET", String::new(), ""),
        };
        // Shared Key: the verb, the standard headers (only length and type
        // are sent), the x-ms- headers and the resource, one per line.
        let headers = format!("x-ms-date:{date}\nx-ms-version:{SAS_VERSION}\n");
        let resource = format!("/{}{}\ncomp:acl\nrestype:container", self.name, url.path());
        let to_sign = format!("{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n{headers}{resource}");
        let authorization = format!(
            "SharedKey {}:{}",
            self.name,
            veil_util::base64::encode(&self.hmac(&to_sign), veil_util::base64::STANDARD)
        );
        let client = reqwest::blocking::Client::new();
        let mut request = if body.is_some() { client.put(url) } else { client.get(url) };
        request = request
            .header("x-ms-date", date)
            .header("x-ms-version", SAS_VERSION)
            .header("Authorization", authorization);
        if let Some(body) = body {
            request = request.header("Content-Type", content_type).body(body);
        }
        let response = request.send().map_err(|e| failed(e.without_url().to_string()))?;
        let status = response.status();
        let text = response.text().map_err(|e| failed(e.without_url().to_string()))?;
        if !status.is_success() {
            let code = crate::xml_text(&text, "Code").unwrap_or_default();
            return Err(failed(format!("{status}: {code}")));
        }
        Ok(text)
    }
}

/// What a SAS grants: a stored access policy's permissions until the
/// policy's expiry (what Veil issues), or its own (tests of the signature).
enum Grant<'a> {
    Policy(&'a AccessPolicy),
    #[cfg(test)]
    AdHoc(&'a str, u64),
}

/// A stored access policy: an id the SAS names, the expiry and the
/// permissions it grants. Veil's ids are `<share id>.<expiry>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Its id.
    pub id: String,
    /// When the share's SAS stop working (seconds since the epoch).
    pub expiry: u64,
    /// `rl` (read, list) or `r`.
    pub permissions: String,
}

impl AccessPolicy {
    /// The policy of share `share` until `expiry`.
    pub fn for_share(share: &str, expiry: u64, permissions: &str) -> AccessPolicy {
        AccessPolicy { id: format!("{share}.{expiry}"), expiry, permissions: permissions.into() }
    }

    /// Whether it is share `share`'s.
    pub fn is_for(&self, share: &str) -> bool {
        self.id.split_once('.').map_or(self.id.as_str(), |(s, _)| s) == share
    }
}

/// A container holds at most this many stored access policies.
pub const MAX_POLICIES: usize = 5;

/// Percent-encodes a query value.
fn encode_query(value: &str) -> String {
    encode(value, |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// Percent-encodes a path, keeping its `/`.
pub(crate) fn encode_path(value: &str) -> String {
    encode(value, |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/'))
}

fn encode(value: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sas_names_its_policy_and_is_https_only() {
        let account = Account::new("acct", EMULATOR_KEY, "https://acct.blob.core.windows.net").unwrap();
        let policy = AccessPolicy::for_share("sh_1", 1_795_000_000, "rl");
        assert!(policy.is_for("sh_1") && !policy.is_for("sh_10"));
        let url = account.container_sas_url("exports", &policy, None);
        assert_eq!(
            url.split("&sig=").next().unwrap(),
            "https://acct.blob.core.windows.net/exports?sv=2022-11-02&sr=c&si=sh_1.1795000000&spr=https"
        );
        // The signature covers the policy, the resource and the range.
        let sig = |u: &str| u.split("&sig=").nth(1).unwrap().to_string();
        assert_ne!(
            sig(&url),
            sig(&account.container_sas_url("exports", &AccessPolicy::for_share("sh_2", 1_795_000_000, "rl"), None))
        );
        assert_ne!(
            sig(&url),
            sig(&account.container_sas_url("exports", &AccessPolicy::for_share("sh_1", 1_795_000_001, "rl"), None))
        );
        assert_ne!(sig(&url), sig(&account.container_sas_url("other", &policy, None)));
        let cidr: Cidr = "10.1.2.0/24".parse().unwrap();
        assert!(account.container_sas_url("exports", &policy, Some(&cidr)).contains("&sip=10.1.2.0-10.1.2.255&"));
        let blob = account.blob_sas_url("exports", "2026/a b.ndjson", &policy, None);
        assert!(blob.starts_with("https://acct.blob.core.windows.net/exports/2026/a%20b.ndjson?sv=2022-11-02&sr=b&si=sh_1.1795000000&spr=https&sig="), "{blob}");
    }

    /// The example of Microsoft's "Create a service SAS" page is not
    /// reproducible offline, so the signature is checked against Azurite
    /// (tests/python/test_share.py); here, its form with its own grant.
    #[test]
    fn an_ad_hoc_grant_carries_permissions_and_expiry() {
        let account = Account::new("acct", EMULATOR_KEY, "http://127.0.0.1:10000/acct").unwrap();
        let query = account.sign(Grant::AdHoc("r", 1_795_000_000), "/blob/acct/c/b", "b", None);
        assert!(query.starts_with("sv=2022-11-02&sr=b&sp=r&se=2026-11-18T"), "{query}");
        assert!(query.contains("&spr=https%2Chttp&sig="), "an http endpoint is the emulator: {query}");
    }
}
