//! Attaching the operator's terminal to a slot's serial console, as
//! `virsh console` does (virDomainOpenConsole on a libvirt stream, the
//! terminal in raw mode, Ctrl-] detaches). Local and remote hosts alike:
//! the bytes travel over the libvirt connection.
//!
//! Like `virsh console`, what the guest prints reaches the terminal as it
//! is (a login shell needs its escapes); `hangar logs` is the view that
//! shows control characters instead of passing them on.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::log::find_on;
use super::{AccessError, SlotDomain};
use crate::providers::libvirt::serial::ConsoleStream;
use crate::providers::libvirt::HostConfig;

type Result<T> = std::result::Result<T, AccessError>;

/// Ctrl-]: the byte that detaches, as in `virsh console` and telnet.
pub const ESCAPE: u8 = 0x1d;

/// How an attached session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Ctrl-], end of input, or the stop signal.
    Detached,
    /// The console closed: the domain stopped, or another client took it.
    Closed,
}

/// A session that ended: where it was, and how it ended.
pub struct Session {
    pub host: String,
    pub generation: u64,
    pub ended: Ended,
}

/// Find the slot's running domain on `hosts`, open its console (`force`:
/// take it from another client), tell `connected`, and relay stdin and
/// stdout until the user detaches, the console closes or `stop` is
/// cancelled. Blocking: run it off the async runtime's threads.
pub fn attach(
    hosts: &[HostConfig],
    fleet: &str,
    slot: &str,
    force: bool,
    stop: &CancellationToken,
    connected: impl FnOnce(&SlotDomain),
) -> Result<Session> {
    let found = find_on(hosts, fleet, slot)?;
    let host = found.host().to_string();
    if !found.running {
        return Err(AccessError::Unavailable(format!(
            "the VM of {slot} on host {host} is not running: no console to attach to; \
             `hangar logs {slot}` shows what it printed"
        )));
    }
    let stream = found.open_console(force)?;
    connected(&found);
    let ended = relay(&stream, stop)?;
    Ok(Session {
        host,
        generation: found.owner.generation,
        ended,
    })
}

/// Copy stdin to the console and the console to stdout until the user
/// detaches or the console closes. Blocking.
fn relay(stream: &ConsoleStream, stop: &CancellationToken) -> Result<Ended> {
    let _raw = RawTerminal::enter();
    let closed = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reader = stream.clone();
    let closed2 = closed.clone();
    std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 4096];
        loop {
            match reader.recv(&mut buf) {
                Ok(n) if n > 0 => {
                    let mut lock = out.lock();
                    if lock
                        .write_all(&buf[..n])
                        .and_then(|()| lock.flush())
                        .is_err()
                    {
                        break;
                    }
                }
                _ => break,
            }
        }
        closed2.store(true, Ordering::SeqCst);
        let _ = done_tx.send(());
        let _ = out.flush();
    });
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    let mut buf = [0u8; 1024];
    let ended = loop {
        if closed.load(Ordering::SeqCst) {
            break Ended::Closed;
        }
        if stop.is_cancelled() {
            break Ended::Detached;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready <= 0 {
            continue;
        }
        let n = match stdin.lock().read(&mut buf) {
            Ok(0) | Err(_) => break Ended::Detached,
            Ok(n) => n,
        };
        let typed = &buf[..n];
        let (keys, detach) = match typed.iter().position(|&b| b == ESCAPE) {
            Some(at) => (&typed[..at], true),
            None => (typed, false),
        };
        if !keys.is_empty() {
            if let Err(e) = stream.send(keys) {
                if closed.load(Ordering::SeqCst) {
                    break Ended::Closed;
                }
                return Err(e.into());
            }
        }
        if detach {
            break Ended::Detached;
        }
    };
    if ended == Ended::Detached {
        stream.abort();
    }
    // The reader ends once the stream is aborted or closed; a libvirt that
    // does not wake it is not waited on for long.
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    Ok(ended)
}

/// The terminal on stdin in raw mode (keys go to the guest as typed,
/// Ctrl-C included), restored when dropped. Nothing on a non-terminal.
struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawTerminal { saved: None };
        }
        let fd = stdin.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return RawTerminal { saved: None };
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &raw) } != 0 {
            return RawTerminal { saved: None };
        }
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the settings read in `enter` on the same fd.
            unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSAFLUSH, saved) };
        }
    }
}
