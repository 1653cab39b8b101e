//! The state directory, and every file hangar keeps in it or reads back
//! from the local machine (locks, offline memory, sandbox hosts, the
//! simulator's state, credential files).
//!
//! hangar often runs as root, in a directory a careless setup may let
//! others write. So: a directory (or a parent this module creates) that is
//! not ours or that group or others can write is refused, saying why; no
//! path is opened through a symlink (`O_NOFOLLOW`); a temporary file is
//! created fresh (`O_EXCL`, a random suffix), so a planted one is never
//! written through; a save is atomic (temp, fsync, rename, fsync of the
//! directory) and leaves no temporary file behind when it fails; a read is
//! bounded and refuses what is not a regular file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::fleet::io_reason;

/// The most any state file may hold.
pub const MAX_STATE_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Why `path` cannot be used; never the content of what it points at.
    #[error("{}: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
}

fn unsafe_path(path: &Path, reason: impl Into<String>) -> StateError {
    StateError::Unsafe {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> StateError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return unsafe_path(path, "is a symlink: hangar does not follow symlinks here");
    }
    unsafe_path(path, format!("cannot {what}: {}", io_reason(e)))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why a directory (by its metadata) is not safe to keep state in.
fn dir_problem(meta: &std::fs::Metadata) -> Option<String> {
    if !meta.file_type().is_dir() {
        return Some("is not a directory".into());
    }
    let me = euid();
    if meta.uid() != me {
        return Some(format!(
            "is owned by uid {}, not by this user (uid {me}): refused as a state directory",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "is writable by group or others (mode {:o}): refused as a state directory; chmod go-w it",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Make `dir` (and the parents it lacks, mode 0700) and check that it is
/// a directory owned by us that nobody else can write. An existing
/// directory is checked as it is, not changed.
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match std::fs::symlink_metadata(at) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p,
                    _ => break,
                }
            }
            Err(e) => return Err(io_error(at, "read", &e)),
        }
    }
    for d in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(d, "create", &e)),
        }
    }
    // The directory itself, and every one this call made, must be ours
    // alone; a symlinked state directory is taken as what it points at
    // (an operator's choice), but that must be safe as well.
    for d in std::iter::once(&dir).chain(missing.iter()) {
        let meta = std::fs::metadata(d).map_err(|e| io_error(d, "read", &e))?;
        if let Some(reason) = dir_problem(&meta) {
            return Err(unsafe_path(d, reason));
        }
    }
    Ok(())
}

fn check_regular(path: &Path, file: &File) -> Result<std::fs::Metadata, StateError> {
    let meta = file.metadata().map_err(|e| io_error(path, "read", &e))?;
    if !meta.file_type().is_file() {
        return Err(unsafe_path(path, "is not a regular file"));
    }
    Ok(meta)
}

/// The bytes of `path`, `None` when it does not exist. Refuses a symlink,
/// anything but a regular file, and more than `cap` bytes; never blocks on
/// a FIFO.
pub fn read(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, StateError> {
    Ok(read_with(path, cap, libc::O_NOFOLLOW)?.map(|(bytes, _)| bytes))
}

/// The bytes of a file the operator names (a credential file): symlinks
/// are followed (secret stores link their files), but only to a regular
/// file, read up to `cap` bytes, with its metadata for a permission check.
pub fn read_named(path: &Path, cap: u64) -> Result<(Vec<u8>, std::fs::Metadata), StateError> {
    read_with(path, cap, 0)?.ok_or_else(|| unsafe_path(path, "no such file"))
}

fn read_with(
    path: &Path,
    cap: u64,
    flags: libc::c_int,
) -> Result<Option<(Vec<u8>, std::fs::Metadata)>, StateError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, "read", &e)),
    };
    let meta = check_regular(path, &file)?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, "read", &e))?;
    if bytes.len() as u64 > cap {
        return Err(unsafe_path(
            path,
            format!("is over the limit of {cap} bytes"),
        ));
    }
    Ok(Some((bytes, meta)))
}

/// Open (creating, mode 0600) the lock file `path` for reading and
/// writing, never through a symlink, in a checked directory.
pub fn open_lock(path: &Path) -> Result<File, StateError> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error(path, "open", &e))?;
    check_regular(path, &file)?;
    Ok(file)
}

/// Open an existing lock file `path` (`None`: there is none), never
/// through a symlink.
pub fn open_existing_lock(path: &Path) -> Result<Option<File>, StateError> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => {
            check_regular(path, &file)?;
            Ok(Some(file))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, "open", &e)),
    }
}

/// Replace `path` with `bytes`, all or nothing (mode 0600): written to a
/// fresh temporary file beside it, synced, renamed over it, and the
/// directory synced. A failure removes the temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure_dir(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| unsafe_path(path, "has no file name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, "create", &e))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, "write", &e));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "sync", &e))
}

/// Why a secret file is readable by others (`None`: it is not), as ssh
/// says of a private key.
pub fn readable_by_others(meta: &std::fs::Metadata) -> Option<String> {
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!("is readable or writable by group or others (mode {mode:o}); chmod 600 it")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary_file() {
        let d = private_dir();
        let p = d.path().join("s.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(read(&p, 10).unwrap().unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file() {
        let d = private_dir();
        // Renaming a file over a directory fails after the temp is written.
        let p = d.path().join("taken");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("x"), b"").unwrap();
        assert!(write_atomic(&p, b"data").is_err());
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn symlinks_are_neither_read_nor_opened() {
        let d = private_dir();
        let target = d.path().join("target");
        std::fs::write(&target, b"secret first line\n").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = read(&link, 100).unwrap_err().to_string();
        assert!(err.contains("symlink") && !err.contains("secret"), "{err}");
        let err = open_lock(&link).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"secret first line\n");
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let d = private_dir();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_dir(&open).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        // What it makes is private.
        let made = d.path().join("a/b");
        ensure_dir(&made).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_read_is_bounded_and_refuses_special_files() {
        let d = private_dir();
        let p = d.path().join("big");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        assert!(read(&p, 99).unwrap_err().to_string().contains("limit"));
        assert!(read(Path::new("/dev/zero"), 10).is_err());
        assert!(read(&d.path().join("none"), 10).unwrap().is_none());
    }
}
