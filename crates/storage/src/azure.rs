//! Azure service SAS, signed here with the account key (object_store signs
//! only single blobs; a share needs a container SAS that can list).
//!
//! The string to sign is the one for service SAS versions 2020-12-06 and
//! later (reference: deid-landscape.md §4.1): permissions, start, expiry,
//! the canonical resource, identifier, IP range, protocol, version,
//! resource type, snapshot time, encryption scope and the five response
//! header overrides, one per line; the signature is HMAC-SHA256 with the
//! base64-decoded account key.

use hmac::{KeyInit as _, Mac as _};

use crate::StorageError;
use crate::share::Cidr;

/// The storage service version Veil signs for.
pub const SAS_VERSION: &str = "2022-11-02";

/// Azurite's well-known development account (public, in Microsoft's docs).
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Whether `AZURE_STORAGE_USE_EMULATOR` asks for Azurite.
pub fn use_emulator() -> bool {
    std::env::var("AZURE_STORAGE_USE_EMULATOR").is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
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
        let key = veil_fhir::base64::decode(key.trim(), veil_fhir::base64::STANDARD)
            .ok_or_else(|| StorageError::Location("the Azure storage account key is not base64".into()))?;
        Ok(Account { name: name.into(), key, endpoint: endpoint.trim_end_matches('/').into() })
    }

    /// The URL of a container.
    pub fn container_url(&self, container: &str) -> String {
        format!("{}/{}", self.endpoint, encode_path(container))
    }

    /// A URL that lists and reads every blob of `container` (and writes
    /// nothing) until `expiry` (seconds since the epoch).
    pub fn container_sas_url(&self, container: &str, expiry: u64, ip: Option<&Cidr>) -> String {
        let query = self.sign("rl", &format!("/blob/{}/{container}", self.name), "c", expiry, ip);
        format!("{}?{query}", self.container_url(container))
    }

    /// A URL that reads one blob until `expiry`.
    pub fn blob_sas_url(&self, container: &str, blob: &str, expiry: u64, ip: Option<&Cidr>) -> String {
        let query = self.sign("r", &format!("/blob/{}/{container}/{blob}", self.name), "b", expiry, ip);
        format!("{}/{}?{query}", self.container_url(container), encode_path(blob))
    }

    /// The SAS query string.
    fn sign(&self, permissions: &str, resource: &str, kind: &str, expiry: u64, ip: Option<&Cidr>) -> String {
        let expiry = crate::time::iso(expiry);
        let ip = ip.map(Cidr::azure_range).unwrap_or_default();
        // https only, but for an emulator on plain http (Azurite in tests).
        let protocol = if self.endpoint.starts_with("https://") { "https" } else { "https,http" };
        let to_sign = [permissions, "", &expiry, resource, "", &ip, protocol, SAS_VERSION, kind, "", "", "", "", "", "", ""].join("\n");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(to_sign.as_bytes());
        let signature = veil_fhir::base64::encode(&mac.finalize().into_bytes(), veil_fhir::base64::STANDARD);
        let mut query = format!("sv={SAS_VERSION}&sr={kind}&sp={permissions}&se={}&spr={}", encode_query(&expiry), encode_query(protocol));
        if !ip.is_empty() {
            query.push_str(&format!("&sip={ip}"));
        }
        query.push_str(&format!("&sig={}", encode_query(&signature)));
        query
    }
}

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
    fn a_container_sas_reads_and_lists_only_and_is_https_only() {
        let account = Account::new("acct", EMULATOR_KEY, "https://acct.blob.core.windows.net").unwrap();
        let url = account.container_sas_url("exports", 1_795_000_000, None);
        assert!(url.starts_with("https://acct.blob.core.windows.net/exports?sv=2022-11-02&sr=c&sp=rl&se=2026-11-18T"), "{url}");
        assert!(url.contains("&spr=https&sig="), "{url}");
        // The signature covers the expiry: another expiry, another signature.
        let sig = |u: &str| u.split("&sig=").nth(1).unwrap().to_string();
        assert_ne!(sig(&url), sig(&account.container_sas_url("exports", 1_795_000_001, None)));
        let cidr: Cidr = "10.1.2.0/24".parse().unwrap();
        assert!(account.container_sas_url("exports", 1_795_000_000, Some(&cidr)).contains("&sip=10.1.2.0-10.1.2.255&"));
    }
}
