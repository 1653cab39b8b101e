//! Guest progress from the serial console log.
//!
//! The guest provisioning prints exactly these markers to `/dev/ttyS0`; the
//! domain's `<serial type='file'>` writes them to a log on the host, which
//! observation reads (only where the host is this machine).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::model::guest::advance;
use crate::model::guest::GuestStage;

/// Where reading of one console log got to, so each observation reads only
/// what the guest printed since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleCursor {
    pub offset: u64,
    pub stage: GuestStage,
    /// The log's length when last read: a log that has not grown is not
    /// opened again.
    seen: u64,
}

impl Default for ConsoleCursor {
    fn default() -> Self {
        ConsoleCursor {
            offset: 0,
            stage: GuestStage::Booting,
            seen: 0,
        }
    }
}

impl ConsoleCursor {
    /// Read complete lines appended since the last call. A missing log
    /// means nothing was printed yet; a shorter log (truncated, or a new
    /// file under the same name) is read again from the start.
    ///
    /// Only what can still change is read: a failed guest stays failed (its
    /// log is not looked at again), and a log that has not grown since the
    /// last read costs a `stat`, not an open.
    pub fn read(&mut self, path: &Path) -> io::Result<GuestStage> {
        if self.stage == GuestStage::Failed {
            return Ok(self.stage);
        }
        match std::fs::metadata(path) {
            Ok(m) if m.len() == self.seen && self.seen >= self.offset => return Ok(self.stage),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                *self = ConsoleCursor::default();
                return Ok(self.stage);
            }
            Err(e) => return Err(e),
        }
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                *self = ConsoleCursor::default();
                return Ok(self.stage);
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            *self = ConsoleCursor::default();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.take(len - self.offset).read_to_end(&mut buf)?;
        self.seen = len;
        Ok(self.feed(&buf))
    }

    /// Take `buf`, what follows [`ConsoleCursor::offset`]: its complete
    /// lines advance the stage; a partial last line waits for its newline.
    pub fn feed(&mut self, buf: &[u8]) -> GuestStage {
        let complete = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        let text = String::from_utf8_lossy(&buf[..complete]);
        self.stage = advance(self.stage, &text);
        self.offset += complete as u64;
        self.stage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::guest::{line_stage, MARKER_DOCKER_OK, MARKER_USER_OK};
    use std::io::Write;

    #[test]
    fn markers_after_prefixes_are_seen() {
        assert_eq!(
            line_stage("[   56.1] cloud-init[612]: hangar: docker ok"),
            Some(GuestStage::DockerReady)
        );
        assert_eq!(line_stage("hangar: nothing"), None);
    }

    #[test]
    fn last_marker_wins_but_failure_sticks() {
        let s = advance(
            GuestStage::Booting,
            "hangar: user ok\nhangar: runner started\nhangar: job started\nhangar: job finished\nhangar: job started\n",
        );
        assert_eq!(s, GuestStage::JobStarted);
        let s = advance(GuestStage::Booting, "hangar: failed\nhangar: user ok\n");
        assert_eq!(s, GuestStage::Failed);
    }

    #[test]
    fn cursor_reads_incrementally_and_waits_for_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut c = ConsoleCursor::default();
        assert_eq!(c.read(&path).unwrap(), GuestStage::Booting);
        let mut f = File::create(&path).unwrap();
        write!(f, "boot\n{MARKER_USER_OK}\n{}", &MARKER_DOCKER_OK[..8]).unwrap();
        assert_eq!(c.read(&path).unwrap(), GuestStage::UserReady);
        writeln!(f, "{}", &MARKER_DOCKER_OK[8..]).unwrap();
        assert_eq!(c.read(&path).unwrap(), GuestStage::DockerReady);
        // A new, shorter log (a new generation under the same path) starts over.
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(c.read(&path).unwrap(), GuestStage::Booting);
        // A failed guest's log is not read again: it stays failed even when
        // the path no longer holds a log at all.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "hangar: failed").unwrap();
        assert_eq!(c.read(&path).unwrap(), GuestStage::Failed);
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert_eq!(c.read(&path).unwrap(), GuestStage::Failed);
    }
}
