//! Artifact files: written so that a reader never sees half of one, read with every check.

use super::{Artifact, ArtifactError, decode, encode};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writers within one process; the process id
/// distinguishes processes.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Writes the artifact to `path` atomically: the bytes go to a temporary file in the same
/// directory, which is flushed to disk and then renamed over `path`. Readers see the old file or
/// the complete new one, never a partial one; on any error the temporary file is removed and
/// `path` is untouched.
pub fn write_atomic(path: &Path, artifact: &Artifact) -> Result<(), ArtifactError> {
    let bytes = encode(artifact);
    let Some(file_name) = path.file_name() else {
        return Err(io_error(
            "write",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
        ));
    };
    // The temporary file must be in the same directory: a rename is atomic only within one
    // file system.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);
    // `create_new` so that a stale file of the same name is never written through.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| io_error("create", &temp, e))?;
    let result = fill_and_rename(file, &bytes, &temp, path);
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(&dir);
    Ok(())
}

fn fill_and_rename(
    mut file: File,
    bytes: &[u8],
    temp: &Path,
    path: &Path,
) -> Result<(), ArtifactError> {
    file.write_all(bytes)
        .map_err(|e| io_error("write", temp, e))?;
    // Without the sync, a crash after the rename could leave the new name on a file whose data
    // never reached the disk.
    file.sync_all().map_err(|e| io_error("flush", temp, e))?;
    drop(file);
    fs::rename(temp, path).map_err(|e| io_error("rename a temporary file to", path, e))
}

/// Makes the rename itself durable where the platform allows syncing a directory. Failure is
/// not an error: the file is complete either way, only its survival of a power cut is at stake.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Reads and [`decode`]s the artifact at `path`.
pub fn read(path: &Path) -> Result<Artifact, ArtifactError> {
    let bytes = fs::read(path).map_err(|e| io_error("read", path, e))?;
    decode(&bytes)
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> ArtifactError {
    ArtifactError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
