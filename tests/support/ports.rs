//! Loopback ports for tests that must name an address before something
//! binds it (a webhook in a fleet file, a forward into a guest).
//!
//! A port found by binding port 0 and letting it go is one the kernel hands
//! out again to the next `bind(0)` or outgoing connection of any test in
//! this process (a simulator, a client): a listener that then binds it
//! finds it taken, or worse, a test talks to the wrong server. These ports
//! are taken below the kernel's ephemeral range instead, each one once per
//! process, and checked free when handed out.

#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Below Linux's default `ip_local_port_range` (32768–60999), above the
/// ports services usually hold.
const FIRST: u32 = 20_000;
const LAST: u32 = 32_767;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback port no other test of this process was given, free now, and
/// outside the range the kernel picks from for `bind(0)`.
pub fn free_port() -> u16 {
    let span = LAST - FIRST + 1;
    // Test binaries run one after the other, but a start apart per process
    // keeps two run at once (two checkouts on one machine) apart too.
    let start = std::process::id().wrapping_mul(977) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start + n) % span;
        let port = u16::try_from(port).expect("the range is below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}–{LAST}");
}
