//! Where files go, as users write it: a plain path, `file://`, `s3://`,
//! `az://` or `gs://`.

use std::fmt;
use std::path::PathBuf;

use crate::StorageError;

/// A destination: a local folder, or a bucket or container with a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder on this machine.
    Local(PathBuf),
    /// `s3://bucket/prefix`: Amazon S3 or a server that speaks its API.
    S3 { bucket: String, prefix: String },
    /// `az://container/prefix`: Azure Blob Storage (and ADLS Gen2 accounts).
    Azure { container: String, prefix: String },
    /// `gs://bucket/prefix`: Google Cloud Storage.
    Gcs { bucket: String, prefix: String },
}

impl Location {
    /// Reads a destination. A string without a scheme is a local path;
    /// `abfs[s]://container@account.dfs.core.windows.net/prefix` is read as
    /// `az://container/prefix` (the account comes from the environment).
    ///
    /// ```
    /// use veil_storage::Location;
    /// assert_eq!(Location::parse("s3://lake/exports/2026").unwrap(),
    ///            Location::S3 { bucket: "lake".into(), prefix: "exports/2026".into() });
    /// assert_eq!(Location::parse("out").unwrap(), Location::Local("out".into()));
    /// assert!(Location::parse("s3://").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Location, StorageError> {
        let Some((scheme, rest)) = text.split_once("://") else {
            if text.is_empty() {
                return Err(StorageError::Location("an empty destination".into()));
            }
            return Ok(Location::Local(PathBuf::from(text)));
        };
        if scheme == "file" {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket = match scheme {
            "abfs" | "abfss" => bucket.split_once('@').map_or(bucket, |(container, _account)| container),
            _ => bucket,
        };
        let prefix = prefix.trim_matches('/').to_string();
        if bucket.is_empty() || !bucket.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(StorageError::Location(format!("'{text}' does not name a bucket or container")));
        }
        if !prefix.is_empty() && !crate::is_safe_relative_path(&prefix) {
            return Err(StorageError::Location(format!("'{text}': the prefix must be plain names separated by '/'")));
        }
        let bucket = bucket.to_string();
        match scheme {
            "s3" | "s3a" => Ok(Location::S3 { bucket, prefix }),
            "az" | "azure" | "abfs" | "abfss" => Ok(Location::Azure { container: bucket, prefix }),
            "gs" => Ok(Location::Gcs { bucket, prefix }),
            other => Err(StorageError::Location(format!(
                "'{other}://' is not a destination Veil writes to (a path, file://, s3://, az:// or gs://)"
            ))),
        }
    }

    /// The same location, `name` further down.
    pub fn join(&self, name: &str) -> Location {
        let down = |prefix: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::S3 { bucket, prefix } => Location::S3 { bucket: bucket.clone(), prefix: down(prefix) },
            Location::Azure { container, prefix } => {
                Location::Azure { container: container.clone(), prefix: down(prefix) }
            }
            Location::Gcs { bucket, prefix } => Location::Gcs { bucket: bucket.clone(), prefix: down(prefix) },
        }
    }

    /// Whether this is a folder on this machine.
    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, bucket, prefix) = match self {
            Location::Local(p) => return write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => ("s3", bucket, prefix),
            Location::Azure { container, prefix } => ("az", container, prefix),
            Location::Gcs { bucket, prefix } => ("gs", bucket, prefix),
        };
        if prefix.is_empty() { write!(f, "{scheme}://{bucket}") } else { write!(f, "{scheme}://{bucket}/{prefix}") }
    }
}

#[cfg(test)]
mod tests {
    use super::Location;

    #[test]
    fn destinations_read_as_written_and_print_back() {
        for text in ["s3://b/p/q", "az://c", "gs://b/x", "az://c/2026/job-1"] {
            assert_eq!(Location::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Location::parse("file:///tmp/x").unwrap(), Location::Local("/tmp/x".into()));
        assert_eq!(
            Location::parse("abfss://exports@acct.dfs.core.windows.net/a/b/").unwrap(),
            Location::Azure { container: "exports".into(), prefix: "a/b".into() }
        );
        assert_eq!(Location::parse("s3://b").unwrap().join("x").to_string(), "s3://b/x");
        for bad in ["s3://", "ftp://h/x", "s3://b/../x", "az://c/a//b", "s3://b c/x", ""] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
