//! Files that appear whole or not at all: every file Veil writes where a
//! reader might find it (de-identified output, study tables, export files,
//! downloads) is written under a temporary name beside it and renamed into
//! place only once complete and on disk.
//!
//! One naming rule: the temporary of `dir/NAME` is `dir/.NAME.veil-partial`.
//! Names that begin with `.` are Veil's working files (temporaries, resume
//! state), and [`is_working_file`] is what every listing uses to leave them
//! out, so a temporary left by a killed run is never listed in a manifest,
//! uploaded or shared. One writer per target: a second process writing the
//! same file at the same time would share its temporary.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary a file is written under before it is renamed into place.
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.veil-partial"))
}

/// Whether a file name is one of Veil's working files (a temporary, resume
/// state), which listings, manifests and uploads leave out.
pub fn is_working_file(file_name: &str) -> bool {
    file_name.starts_with('.')
}

/// A file being written under its temporary name. [`AtomicFile::commit`]
/// puts it in place; dropped without a commit, the temporary is removed.
pub struct AtomicFile {
    path: PathBuf,
    temp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path` (creating its folder), empty.
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let temp = temporary_path(path);
        let file = File::create(&temp)?;
        Ok(AtomicFile { path: path.to_path_buf(), temp, out: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// The file it will become.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs to disk and renames the temporary into place.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let out = self.out.take().expect("a file not yet committed");
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&self.temp, &self.path)?;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("a file not yet committed").write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.as_mut().expect("a file not yet committed").write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("a file not yet committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Puts a temporary written and resumed by hand (a download continued
/// across runs, which must outlive a failed attempt) in place at `path`.
pub fn commit_temporary(path: &Path) -> io::Result<()> {
    let temp = temporary_path(path);
    File::open(&temp)?.sync_all()?;
    fs::rename(&temp, path)
}

/// Writes `path` whole through `write`, or leaves nothing (and no
/// temporary) when `write` fails.
pub fn write_with<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut AtomicFile) -> Result<(), E>,
) -> Result<(), E> {
    let mut file = AtomicFile::create(path)?;
    write(&mut file)?;
    file.commit()?;
    Ok(())
}

/// Writes `bytes` to `path` whole, or leaves nothing.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |f| f.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("veil-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn whole_or_nothing() {
        let dir = scratch("whole");
        let path = dir.join("sub/Patient.ndjson");
        write(&path, b"{}\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}\n");
        assert_eq!(listing(&dir.join("sub")), ["Patient.ndjson"]);

        // A failed write leaves the old file and no temporary.
        let failed: io::Result<()> = write_with(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"{}\n");
        assert_eq!(listing(&dir.join("sub")), ["Patient.ndjson"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_temporary_is_a_working_file() {
        let temp = temporary_path(Path::new("out/Observation-1.ndjson"));
        assert_eq!(temp, Path::new("out/.Observation-1.ndjson.veil-partial"));
        assert!(is_working_file(&temp.file_name().unwrap().to_string_lossy()));
        assert!(!is_working_file("Observation-1.ndjson"));
    }
}
