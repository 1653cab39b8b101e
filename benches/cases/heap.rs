//! Whose heap is it: the bench binary counts every Rust allocation (hangar,
//! the in-process simulator, tokio; not libvirt, which is C), and glibc's
//! `mallinfo2` says what malloc holds in all (Rust's allocations go through
//! malloc too). Their difference is the C side (libvirt's test driver, its
//! XML and RPC buffers), and malloc's free-but-kept bytes are what
//! fragmentation costs. P4 reads these beside `RssAnon`, to tell a leak
//! (live bytes that grow) from an allocator that keeps what was freed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Live bytes of Rust allocations.
static LIVE: AtomicUsize = AtomicUsize::new(0);

pub(super) struct Counting;

// SAFETY: every call forwards to `System` with the caller's layout and
// pointer unchanged; the counter is only arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

/// The heap at one moment, in KiB.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heap {
    /// Live Rust allocations.
    pub rust: u64,
    /// What malloc has handed out and not had back (Rust's and C's).
    pub malloc_used: u64,
    /// Free bytes malloc keeps in its arenas (not returned to the kernel).
    pub malloc_free: u64,
}

impl Heap {
    pub(super) fn now() -> Heap {
        // SAFETY: mallinfo2 takes no arguments and only reads malloc's
        // statistics.
        let m = unsafe { libc::mallinfo2() };
        Heap {
            rust: LIVE.load(Ordering::Relaxed) as u64 / 1024,
            malloc_used: (m.uordblks + m.hblkhd) as u64 / 1024,
            malloc_free: m.fordblks as u64 / 1024,
        }
    }

    /// What malloc holds for C code (libvirt): all it handed out less
    /// Rust's live bytes.
    pub(super) fn c_side(&self) -> u64 {
        self.malloc_used.saturating_sub(self.rust)
    }
}

/// Give malloc's free memory back to the kernel (`malloc_trim(0)`).
pub(super) fn trim() {
    // SAFETY: malloc_trim only releases free memory of malloc's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// P4's rows on whose heap grew from pass `warm` to `done`; then malloc's
/// free memory is given back, to see how much of `RssAnon` it was.
pub(super) fn report_growth(
    rep: &mut super::Report,
    (warm, done): (usize, usize),
    (before, after): (Heap, Heap),
    anon_end: u64,
) {
    use super::mib;
    heap_rows(
        rep,
        "P4",
        [
            "live Rust heap (hangar, simulator, tokio)",
            "C heap in use (libvirt's test driver)",
            "free memory malloc keeps (fragmentation)",
        ],
        (warm, done),
        (before, after),
    );
    rep.row(
        "P4",
        format!("RssAnon at pass {done} (whole process: hangar, simulator, test-driver hosts)"),
        mib(anon_end),
        "MiB",
        "≤ 16 (issue 18, for hangar alone)",
        Some(anon_end <= 16 * 1024),
    );
    trim();
    let (anon_trimmed, _) = super::rss_parts_kib();
    rep.row(
        "P4",
        format!("  RssAnon at pass {done}, then after malloc_trim(0)"),
        mib(anon_trimmed),
        "MiB",
        "",
        None,
    );
    rep.notes.push(format!(
        "P4: RssAnon {} MiB at pass {done}, {} MiB once malloc gave its free memory back",
        mib(anon_end),
        mib(anon_trimmed)
    ));
}

/// A case's rows for each part of the heap (the live Rust heap, held to
/// the flatness goal; the C side; malloc's free bytes, each named by
/// `names` in that order) at pass `done` and grown from pass `warm`.
pub(super) fn heap_rows(
    rep: &mut super::Report,
    case: &'static str,
    names: [&str; 3],
    (warm, done): (usize, usize),
    (before, after): (Heap, Heap),
) {
    use super::{growth_mib, is_flat, mib};
    let parts = [
        (before.rust, after.rust, true),
        (before.c_side(), after.c_side(), false),
        (before.malloc_free, after.malloc_free, false),
    ];
    for (what, (from, to, flat_goal)) in names.into_iter().zip(parts) {
        rep.row(
            case,
            format!("  {what} at pass {done}"),
            mib(to),
            "MiB",
            "",
            None,
        );
        rep.row(
            case,
            format!("    grown from pass {warm}"),
            growth_mib(from, to),
            "MiB",
            if flat_goal { "≤ max(2 %, 2 MiB)" } else { "" },
            flat_goal.then_some(is_flat(from, to)),
        );
    }
}
