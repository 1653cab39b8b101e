//! Reading the fleet file: a regular file (after symlinks, which an operator
//! may use for `/etc/hangar/fleet.yaml`), at most
//! [`crate::fleet::MAX_FILE_BYTES`], never blocking on a FIFO or a device.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::fleet::{self, FleetError, LoadedFleet, MAX_FILE_BYTES};

/// Read, parse and validate the fleet file at `path`.
pub fn load(path: &Path) -> Result<LoadedFleet, FleetError> {
    let file = path.display().to_string();
    let bytes = read_bounded(path).map_err(|reason| FleetError::file(&file, reason))?;
    fleet::load_bytes(path, bytes)
}

/// The file's bytes, or why it cannot be a fleet file.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer; a regular file ignores the flag.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read: {}", io_reason(&e)))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read: {}", io_reason(&e)))?;
    if !meta.file_type().is_file() {
        return Err(format!("not a regular file ({})", kind(&meta)));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "file is {} bytes, over the limit of {MAX_FILE_BYTES} for a fleet file",
            meta.len()
        ));
    }
    // The size can change between fstat and read: read one byte past the
    // limit at most, whatever the file claims.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {}", io_reason(&e)))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "file grew over the limit of {MAX_FILE_BYTES} bytes for a fleet file while read"
        ));
    }
    Ok(bytes)
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fleet.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = load(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
    }

    #[test]
    fn dev_zero_is_refused_before_reading() {
        let err = load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("a character device"), "{err}");
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
    }
}
