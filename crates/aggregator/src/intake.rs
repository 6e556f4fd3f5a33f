//! One upload, whichever way it arrived (posted to this server's
//! `/upload`, or posted by the site straight to S3 and found there by
//! [`crate::staging`]): checked, archived and merged, then the site's lock
//! freed.

use sha2::Digest as _;
use veil_storage::Storage;

use crate::http::Config;
use crate::ledger::{Arrival, FORM_GONE, LockState, Outcome, version_key};
use crate::package::{self, Refusal, is_identifier};

/// Where uploads wait in S3 until they are checked.
pub(crate) const STAGING: &str = "upload_staging";

/// What a handshake permitted: who sends which study, under which
/// transaction. It is signed into the upload's policy, and for S3 spelled
/// out in the object's key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Upload {
    pub transaction: String,
    pub site: String,
    pub study: String,
    pub version: i64,
}

impl Upload {
    /// `upload_staging/<study>/<site>/<NNN>/<transaction>/<filename>`: the
    /// one key a site may upload to (the policy pins it).
    pub(crate) fn staging_key(&self, filename: &str) -> String {
        format!("{STAGING}/{}/{}/{}/{}/{filename}", self.study, self.site, version_key(self.version), self.transaction)
    }

    /// Reads a staging key back; `None` for anything this server would not
    /// have signed.
    pub(crate) fn from_staging_key(key: &str) -> Option<Upload> {
        let parts: Vec<&str> = key.split('/').collect();
        let [STAGING, study, site, version, transaction, filename] = parts[..] else {
            return None;
        };
        let plain = |s: &str| is_identifier(s);
        let version = version.parse::<i64>().ok().filter(|v| version_key(*v) == version)?;
        let hex = transaction.len() == 32 && transaction.bytes().all(|b| b.is_ascii_hexdigit());
        (plain(study) && plain(site) && hex && is_file_name(filename)).then(|| Upload {
            transaction: transaction.to_string(),
            site: site.to_string(),
            study: study.to_string(),
            version,
        })
    }

    fn arrival<'a>(&'a self, sha256: &'a str, bytes: usize) -> Arrival<'a> {
        Arrival {
            id: &self.transaction,
            site: &self.site,
            study: &self.study,
            version: self.version,
            sha256,
            bytes: bytes as i64,
        }
    }
}

/// A file name a site may give its zip: letters, digits, `.`, `_`, `-`,
/// not starting with a dot.
pub(crate) fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Why an upload was not kept.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Checked and refused, with the reason (recorded).
    Refused(Refusal),
    /// Another handshake for the site's study took the lock since.
    Busy,
    /// The database or the storage failed (logged, without data).
    Internal,
}

/// Checks, archives and merges one upload, consuming its form (the lock
/// its handshake took): a form is good for one upload, and only while the
/// credentials it was issued under stand.
pub(crate) fn ingest(config: &Config, upload: &Upload, zip: &[u8]) -> Result<Outcome, Failure> {
    let ledger = &config.ledger;
    let sha256 = veil_util::hex::encode(&sha2::Sha256::digest(zip));
    let arrival = upload.arrival(&sha256, zip.len());
    match ledger.lock_state(&upload.site, &upload.study, &upload.transaction).map_err(|_| Failure::Internal)? {
        LockState::Held => {}
        LockState::TakenOver => return Err(Failure::Busy),
        // Recorded already: the same S3 object again after a crash.
        LockState::Gone
            if ledger.recorded(&upload.site, &upload.transaction, &sha256).map_err(|_| Failure::Internal)? =>
        {
            ledger.repeated(&arrival).map_err(|_| Failure::Internal)?;
            return Ok(Outcome::Unchanged);
        }
        LockState::Gone => {
            let refusal = Refusal(FORM_GONE.into());
            ledger.refuse(&arrival, &refusal).map_err(|_| Failure::Internal)?;
            let refused = Err(Failure::Refused(refusal));
            log(config, upload, &refused);
            return refused;
        }
    }
    let result = match package::read(zip, &upload.study, upload.version, config.min_cell, &config.limits) {
        Err(refusal) => {
            ledger.refuse(&arrival, &refusal).map_err(|_| Failure::Internal)?;
            Err(Failure::Refused(refusal))
        }
        Ok(package) => {
            let archived = archive(&config.storage, upload, &sha256, zip).map_err(|e| {
                eprintln!("veil aggregator: cannot archive an upload of {} from {}: {e}", upload.study, upload.site);
                Failure::Internal
            })?;
            let accepted = ledger.accept(&arrival, &package).map_err(|_| Failure::Internal)?;
            if accepted.is_err() {
                let _ = config.storage.delete(&archived);
            }
            accepted.map_err(Failure::Refused)
        }
    };
    // Recording consumed the lock; after a failure, free it all the same.
    let _ = ledger.unlock(&upload.site, &upload.study, &upload.transaction);
    log(config, upload, &result);
    result
}

fn log(config: &Config, upload: &Upload, result: &Result<Outcome, Failure>) {
    if let Some(log) = &config.access_log {
        let (outcome, why) = match result {
            Ok(o) => (o.as_str(), None),
            Err(Failure::Refused(r)) => ("refused", Some(r.to_string())),
            Err(_) => ("failed", None),
        };
        let mut fields = vec![
            ("site", upload.site.as_str().into()),
            ("study", upload.study.as_str().into()),
            ("version", version_key(upload.version).into()),
        ];
        fields.extend(why.map(|why| ("why", why.into())));
        log.event(&format!("upload {outcome}"), &fields);
    }
}

/// Records that a staged upload lost its lock to a newer handshake, so
/// that the site asking after it learns why it was not merged.
pub(crate) fn superseded(config: &Config, upload: &Upload, zip: &[u8]) -> Result<(), Failure> {
    let sha256 = veil_util::hex::encode(&sha2::Sha256::digest(zip));
    let why = Refusal("superseded: the site asked to upload this study again before this upload was checked".into());
    config.ledger.refuse(&upload.arrival(&sha256, zip.len()), &why).map_err(|_| Failure::Internal)
}

/// Keeps the zip as it arrived, at `archive/<study>/<site>/<NNN>/<sha256>.zip`,
/// written whole; its name.
fn archive(storage: &Storage, upload: &Upload, sha256: &str, zip: &[u8]) -> Result<String, veil_storage::StorageError> {
    let name = format!("archive/{}/{}/{}/{sha256}.zip", upload.study, upload.site, version_key(upload.version));
    storage.put_bytes(&name, zip.to_vec())?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_keys_read_back_and_nothing_else_does() {
        let upload = Upload {
            transaction: "0123456789abcdef0123456789abcdef".into(),
            site: "site_a".into(),
            study: "flu".into(),
            version: 7,
        };
        let key = upload.staging_key("site_a_flu.zip");
        assert_eq!(key, "upload_staging/flu/site_a/007/0123456789abcdef0123456789abcdef/site_a_flu.zip");
        assert_eq!(Upload::from_staging_key(&key), Some(upload));
        for bad in [
            "upload_staging/flu/site_a/007/0123456789abcdef0123456789abcdef",
            "upload_staging/flu/site_a/7/0123456789abcdef0123456789abcdef/x.zip",
            "upload_staging/flu/site_a/007/not-hex/x.zip",
            "upload_staging/flu/../007/0123456789abcdef0123456789abcdef/x.zip",
            "upload_staging/flu/site_a/007/0123456789abcdef0123456789abcdef/.x.zip",
            "archive/flu/site_a/007/0123456789abcdef0123456789abcdef/x.zip",
            "upload_staging/flu/site_a/007/0123456789abcdef0123456789abcdef/x.zip/more",
        ] {
            assert_eq!(Upload::from_staging_key(bad), None, "{bad}");
        }
    }
}
