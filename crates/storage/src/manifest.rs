//! The checksummed list of what a destination holds, written after every
//! file it names: a reader that finds it knows the files are all there and
//! can check each one.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's name in a destination.
pub const MANIFEST_NAME: &str = "veil-manifest.json";

/// What a destination holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `veil-manifest/1`.
    pub format: String,
    /// When it was written.
    pub created: String,
    /// Every file but the manifest, by name.
    pub files: Vec<FileEntry>,
    /// How the files were de-identified, when Veil de-identified them;
    /// absent when they were not, or nobody can say (a manifest from
    /// before Veil recorded it), and then sharing them is refused unless
    /// the operator says they are identified data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deidentified: Option<Deidentified>,
}

/// The evidence that an export was de-identified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deidentified {
    /// The policy applied, by the name it was given (a built-in name or a
    /// configuration file's name).
    pub policy: String,
    /// What the audit of the files found (`veil-risk.json` beside them
    /// holds the whole evidence); absent in manifests from before Veil
    /// audited its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Verdict>,
}

/// The audit's verdict on an export, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The HIPAA standard checked (`safe-harbor`, `limited-data-set`, `expert`).
    pub standard: String,
    /// Whether the files meet it.
    pub passes: bool,
    /// The audit's human summary (counts, never values).
    pub summary: String,
}

/// One file: its name below the destination, size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its name relative to the destination, `/`-separated.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// A manifest of `files`, sorted by name.
    pub fn new(mut files: Vec<FileEntry>) -> Manifest {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest { format: "veil-manifest/1".into(), created: veil_util::clock::now_iso(), files, deidentified: None }
    }

    /// The same manifest, stating how its files were de-identified.
    pub fn deidentified(self, how: Option<Deidentified>) -> Manifest {
        Manifest { deidentified: how, ..self }
    }

    /// The entry for `path`.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Reads a manifest; a file that is not one is an error naming what is
    /// wrong (it may come from outside).
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("not a Veil manifest: {e}"))?;
        if m.format != "veil-manifest/1" {
            return Err(format!("manifest format '{}' is not one this Veil reads", m.format));
        }
        if let Some(bad) = m.files.iter().find(|f| !is_plausible_entry(&f.path, &f.sha256)) {
            return Err(format!("the manifest names a file Veil will not write: '{}'", bad.path));
        }
        Ok(m)
    }

    /// As pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Whether a manifest entry from outside names a file Veil may write (a
/// safe relative name) with a SHA-256 of the right length.
pub(crate) fn is_plausible_entry(path: &str, sha256: &str) -> bool {
    crate::is_safe_relative_path(path) && sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())
}

/// SHA-256 and size of what `reader` yields.
pub fn digest(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((veil_util::hex::encode(&hasher.finalize()), size))
}

/// SHA-256 and size of a file.
pub fn digest_file(path: &Path) -> io::Result<(String, u64)> {
    digest(File::open(path)?)
}

/// Every file below `dir` (but a manifest, and Veil's working files such as
/// the temporaries a killed run left: [`veil_util::atomic::is_working_file`]),
/// as `/`-separated names, sorted.
pub fn files_below(dir: &Path) -> io::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if veil_util::atomic::is_working_file(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &entry.path(), out)?;
            } else if kind.is_file() {
                let rel = entry.path().strip_prefix(root).map_err(io::Error::other)?.to_path_buf();
                let name: Vec<String> =
                    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                let name = name.join("/");
                if name != MANIFEST_NAME {
                    out.push(name);
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// The manifest of a local folder as it is now.
pub fn manifest_of_dir(dir: &Path) -> io::Result<Manifest> {
    let mut files = Vec::new();
    for name in files_below(dir)? {
        let (sha256, size) = digest_file(&dir.join(&name))?;
        files.push(FileEntry { path: name, size, sha256 });
    }
    Ok(Manifest::new(files))
}
