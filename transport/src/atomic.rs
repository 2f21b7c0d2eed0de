//! Crash-safe replacement of a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents` atomically: readers (the daemon reloading
/// the table) see either the old file or the new one, never a partial one,
/// and a crash leaves one of the two on disk.
///
/// Writes a temporary file in the same directory, fsyncs it, renames it over
/// `path` and fsyncs the directory. The file mode (and, when permitted, the
/// owner and group) of the existing file is kept; a new file gets mode 0644
/// minus the umask. If `path` is a symbolic link, the file it points to is
/// replaced and the link is kept.
pub fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let target: PathBuf = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let original = match fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };

    let (tmp_path, mut file) = create_temp(&dir, &name.to_string_lossy(), original.is_some())?;
    let result = (|| {
        file.write_all(contents.as_bytes())?;
        if let Some(m) = &original {
            // Best effort: only root may give a file away.
            let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
            file.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp_path, &target)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Runs `edit` (read the file, change it, `write_atomic` it) while holding
/// an exclusive lock, so two `mx2 transport add` at once cannot lose one
/// of the changes. The lock is on the file's directory: the file itself is
/// replaced by a rename, so a lock on it would not be seen by the next
/// editor. Readers (the daemon) take no lock and are never blocked.
pub fn edit_locked<T>(path: &Path, edit: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let target: PathBuf = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let lock = File::open(&dir)?;
    lock.lock()?;
    let result = edit();
    let _ = lock.unlock();
    result
}

fn create_temp(dir: &Path, name: &str, private: bool) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{pid}.{n}"));
        let mut opts = OpenOptions::new();
        opts.write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 });
        match opts.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
