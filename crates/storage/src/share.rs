//! Share links: read-only, expiring access to exactly one export.
//!
//! * **Veil links** (`veil`): `https://veil.example/share/<token>/`, served
//!   by `veil serve`. The token is `v1.<share id>.<expiry>.<HMAC-SHA256>`,
//!   signed with a key kept in Veil's store; the server checks the
//!   signature, the expiry, that the share is not revoked and the client's
//!   address, and serves only the files the export's manifest names.
//!   Revocation is immediate.
//! * **Azure** (`azure-sas`): for an export that is a whole container, a
//!   service SAS on the container with read and list permissions only,
//!   https only; for an export below a prefix, a read-only SAS per blob,
//!   listed in a share manifest (a container SAS would open the other
//!   exports beside it). Either names a stored access policy made for the
//!   share, so revoking it is immediate too.
//! * **S3 and GCS** (`s3-presigned`, `gcs-presigned`): a presigned GET per
//!   file, listed in a share manifest that is itself uploaded and presigned;
//!   the link is that manifest's URL.
//!
//! Cloud links expire after at most [`MAX_CLOUD_LIFETIME`] (Azure's cap for
//! delegated SAS, and S3 SigV4's own).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use hmac::Mac as _;
use serde::{Deserialize, Serialize};

use crate::{Location, Manifest, Storage, StorageError};

/// The longest a cloud link may live: 7 days.
pub const MAX_CLOUD_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// The longest a Veil link may live: 30 days (it can be revoked at once).
pub const MAX_VEIL_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// The store's name for the key Veil links are signed with.
pub const SIGNING_KEY_NAME: &str = "share-signing-key";

/// How a share's link works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareKind {
    /// Served by `veil serve`, signed by Veil.
    Veil,
    /// An Azure service SAS.
    AzureSas,
    /// S3 presigned URLs.
    S3Presigned,
    /// GCS V4 signed URLs.
    GcsPresigned,
}

impl ShareKind {
    /// Read back from the store (an unknown kind is a Veil link, the one
    /// kind Veil serves itself).
    pub fn parse(text: &str) -> ShareKind {
        [ShareKind::AzureSas, ShareKind::S3Presigned, ShareKind::GcsPresigned]
            .into_iter()
            .find(|k| k.as_str() == text)
            .unwrap_or(ShareKind::Veil)
    }

    /// As the store keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareKind::Veil => "veil",
            ShareKind::AzureSas => "azure-sas",
            ShareKind::S3Presigned => "s3-presigned",
            ShareKind::GcsPresigned => "gcs-presigned",
        }
    }

    /// The kind of link a location gets.
    pub fn for_location(location: &Location) -> ShareKind {
        match location {
            Location::Local(_) => ShareKind::Veil,
            Location::Azure { .. } => ShareKind::AzureSas,
            Location::S3 { .. } => ShareKind::S3Presigned,
            Location::Gcs { .. } => ShareKind::GcsPresigned,
        }
    }

    /// What `veil share revoke` can do about a link of this kind, in
    /// words for the person revoking.
    pub fn revocation(self) -> &'static str {
        match self {
            ShareKind::Veil => "the link stopped working now: veil serve refuses it from this moment.",
            ShareKind::AzureSas => {
                "the share's stored access policy was deleted from its container, so every SAS of this share stops working \
                 (at once on Azurite; Azure says within 30 seconds). A SAS Veil made before it used policies keeps working until \
                 it expires unless the storage account key is rotated."
            }
            ShareKind::S3Presigned => {
                "Veil recorded the revocation, but presigned S3 URLs cannot be withdrawn one by one: they keep working until they \
                 expire unless you deactivate or rotate the access key that signed them (this ends every URL it signed), deny \
                 access with a bucket policy, or delete the shared objects."
            }
            ShareKind::GcsPresigned => {
                "Veil recorded the revocation, but GCS signed URLs cannot be withdrawn one by one: they keep working until they \
                 expire unless you delete the service account key that signed them or delete the shared objects."
            }
        }
    }
}

/// A new share id: `sh_` and 16 random hex digits.
pub fn new_share_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system gives random bytes");
    format!("sh_{}", veil_util::hex::encode(&bytes))
}

/// A new signing key for Veil links: 32 random bytes, hex.
pub fn new_signing_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system gives random bytes");
    veil_util::hex::encode(&bytes)
}

fn mac(key: &[u8], id: &str, expires: u64) -> hmac::Hmac<sha2::Sha256> {
    crate::hmac_sha256(key, &format!("veil-share/v1\n{id}\n{expires}"))
}

/// The token of a Veil link for share `id`, valid until `expires` (seconds
/// since the epoch).
pub fn sign_token(key: &[u8], id: &str, expires: u64) -> String {
    format!("v1.{id}.{expires}.{}", veil_util::hex::encode(&mac(key, id, expires).finalize().into_bytes()))
}

/// Why a Veil token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token, or its signature does not match (tampered with).
    Invalid,
    /// Genuine, but past its expiry (seconds since the epoch).
    Expired(u64),
}

/// Checks a Veil token's signature (in constant time) and expiry against
/// `now`; gives the share id.
pub fn verify_token(key: &[u8], token: &str, now: u64) -> Result<String, TokenError> {
    let mut parts = token.split('.');
    let (Some("v1"), Some(id), Some(expires), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid);
    };
    let expires: u64 = expires.parse().map_err(|_| TokenError::Invalid)?;
    let signature = veil_util::hex::decode(signature).ok_or(TokenError::Invalid)?;
    mac(key, id, expires).verify_slice(&signature).map_err(|_| TokenError::Invalid)?;
    if now >= expires {
        return Err(TokenError::Expired(expires));
    }
    Ok(id.to_string())
}

/// A network clients may come from, written as a CIDR (`10.0.0.0/8`,
/// `2001:db8::/32`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Whether `addr` is in this network (an IPv4 address mapped into IPv6
    /// counts as the IPv4 address).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask32(u32::from(a), self.bits) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask128(u128::from(a), self.bits) == u128::from(n),
            _ => false,
        }
    }

    /// As Azure's `sip` wants it: `first-last` (or one address).
    pub fn azure_range(&self) -> String {
        match self.network {
            IpAddr::V4(n) if self.bits == 32 => n.to_string(),
            IpAddr::V4(n) => {
                let last = u32::from(n) | (u32::MAX.checked_shr(u32::from(self.bits)).unwrap_or(0));
                format!("{n}-{}", std::net::Ipv4Addr::from(last))
            }
            IpAddr::V6(n) if self.bits == 128 => n.to_string(),
            IpAddr::V6(n) => {
                let last = u128::from(n) | (u128::MAX.checked_shr(u32::from(self.bits)).unwrap_or(0));
                format!("{n}-{}", std::net::Ipv6Addr::from(last))
            }
        }
    }
}

fn mask32(v: u32, bits: u8) -> u32 {
    if bits == 0 { 0 } else { v & (u32::MAX << (32 - u32::from(bits))) }
}

fn mask128(v: u128, bits: u8) -> u128 {
    if bits == 0 { 0 } else { v & (u128::MAX << (128 - u32::from(bits))) }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || format!("'{text}' is not an address range: write it as a CIDR (203.0.113.0/24) or one address");
        let (addr, bits) = text.split_once('/').map_or((text, None), |(a, b)| (a, Some(b)));
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits: u8 = match bits {
            Some(b) => b.trim().parse().ok().filter(|b| *b <= max).ok_or_else(bad)?,
            None => max,
        };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(mask32(u32::from(a), bits).into()),
            IpAddr::V6(a) => IpAddr::V6(mask128(u128::from(a), bits).into()),
        };
        Ok(Cidr { network, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.bits)
    }
}

/// What a share link leads to: every file with its checksum and where to
/// get it. `veil serve` answers a Veil link with one (URLs relative to the
/// link); S3, GCS and per-blob Azure shares upload one (URLs presigned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareManifest {
    /// `veil-share/1`.
    pub format: String,
    /// The share's id.
    pub share: String,
    /// When the links stop working.
    pub expires: String,
    /// The files.
    pub files: Vec<SharedFile>,
}

/// One shared file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    /// Its name in the export.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Where to download it: absolute, or relative to the link.
    pub url: String,
}

impl ShareManifest {
    /// The share manifest for `manifest`'s files, each at `url(path)`.
    pub fn new(
        share: &str,
        expires: u64,
        manifest: &Manifest,
        url: impl Fn(&str) -> Result<String, StorageError>,
    ) -> Result<ShareManifest, StorageError> {
        let files = manifest
            .files
            .iter()
            .map(|f| {
                Ok(SharedFile { path: f.path.clone(), size: f.size, sha256: f.sha256.clone(), url: url(&f.path)? })
            })
            .collect::<Result<_, StorageError>>()?;
        Ok(ShareManifest {
            format: "veil-share/1".into(),
            share: share.into(),
            expires: veil_util::clock::iso(expires),
            files,
        })
    }
}

/// A cloud share made by [`create_cloud_share`].
pub struct CloudShare {
    /// The link to hand over (it carries the signature: treat it as a
    /// secret, never log it).
    pub link: String,
    /// What it opens, in words.
    pub scope: String,
}

/// Makes the link for a share of the export at `storage` (a cloud location
/// whose manifest was written), valid until `expires`.
pub fn create_cloud_share(
    storage: &Storage,
    id: &str,
    expires: u64,
    ip: Option<&Cidr>,
) -> Result<CloudShare, StorageError> {
    let manifest = storage.read_manifest()?;
    let lifetime = Duration::from_secs(expires.saturating_sub(veil_util::clock::now_secs()));
    if lifetime > MAX_CLOUD_LIFETIME + Duration::from_secs(60) {
        return Err(StorageError::Unsupported("cloud share links live at most 7 days (--expires 7d)".into()));
    }
    if let Location::Azure { container, prefix } = storage.location() {
        // A stored access policy per share: deleting it revokes the share.
        let account = crate::azure::Account::from_env()?;
        let mut policies = account.access_policies(container)?;
        policies.retain(|p| p.expiry > veil_util::clock::now_secs());
        if policies.len() >= crate::azure::MAX_POLICIES {
            return Err(StorageError::Unsupported(format!(
                "the container {container} already has {} live shares, Azure's limit: revoke one (veil share revoke) or export to another container",
                policies.len()
            )));
        }
        let policy = crate::azure::AccessPolicy::for_share(id, expires, if prefix.is_empty() { "rl" } else { "r" });
        policies.push(policy.clone());
        account.set_access_policies(container, &policies)?;
        if prefix.is_empty() {
            return Ok(CloudShare {
                link: account.container_sas_url(container, &policy, ip),
                scope: format!("read and list the container {container} only ({} files)", manifest.files.len()),
            });
        }
    }
    if ip.is_some() && !matches!(storage.location(), Location::Azure { .. }) {
        return Err(StorageError::Unsupported(
            "S3 and GCS presigned URLs cannot be limited to an address range: leave out --ip, or limit the bucket with a policy (aws:SourceIp)".into(),
        ));
    }
    let policy = crate::azure::AccessPolicy::for_share(id, expires, "r");
    let azure = matches!(storage.location(), Location::Azure { .. });
    let url = |path: &str| {
        if azure { storage.azure_blob_sas(path, &policy, ip) } else { storage.presigned_get(path, lifetime) }
    };
    let share = ShareManifest::new(id, expires, &manifest, url)?;
    let name = format!("veil-share-{id}.json");
    storage.put_bytes(&name, serde_json::to_vec_pretty(&share).unwrap_or_default())?;
    Ok(CloudShare {
        link: url(&name)?,
        scope: format!("read {} files, each by its own signed URL, listed in {name}", manifest.files.len()),
    })
}

/// Revokes an Azure share by deleting its stored access policy from the
/// container at `location`; `false` if there was none (already gone).
pub fn revoke_azure(location: &Location, id: &str) -> Result<bool, StorageError> {
    let Location::Azure { container, .. } = location else {
        return Err(StorageError::Unsupported("not an Azure location".into()));
    };
    let account = crate::azure::Account::from_env()?;
    let mut policies = account.access_policies(container)?;
    let before = policies.len();
    policies.retain(|p| !p.is_for(id));
    if policies.len() == before {
        return Ok(false);
    }
    account.set_access_policies(container, &policies)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_expiry_and_not_after_any_change() {
        let key = b"k".repeat(32);
        let token = sign_token(&key, "sh_0123456789abcdef", 2_000);
        assert_eq!(verify_token(&key, &token, 1_999), Ok("sh_0123456789abcdef".into()));
        assert_eq!(verify_token(&key, &token, 2_000), Err(TokenError::Expired(2_000)));
        assert_eq!(verify_token(b"other key", &token, 1_000), Err(TokenError::Invalid));
        // Moving the expiry, changing the id or a digit of the signature breaks it.
        let later = token.replace(".2000.", ".9000.");
        assert_eq!(verify_token(&key, &later, 1_000), Err(TokenError::Invalid));
        let other = token.replace("sh_0123456789abcdef", "sh_0123456789abcdee");
        assert_eq!(verify_token(&key, &other, 1_000), Err(TokenError::Invalid));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(verify_token(&key, &String::from_utf8(flipped).unwrap(), 1_000), Err(TokenError::Invalid));
        for junk in ["", "v1", "v1.a.b.c", "v2.sh_1.2000.00", &format!("{token}.x")] {
            assert_eq!(verify_token(&key, junk, 1_000), Err(TokenError::Invalid), "{junk}");
        }
    }

    #[test]
    fn address_ranges() {
        let net: Cidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(net.to_string(), "10.1.2.0/24");
        assert!(net.contains("10.1.2.200".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.9".parse().unwrap()));
        assert!(!net.contains("10.1.3.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert_eq!(one.azure_range(), "127.0.0.1");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
