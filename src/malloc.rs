//! What glibc's malloc keeps. A pass's work runs on many threads (every
//! libvirt call on a blocking thread of its own; tokio keeps the threads a
//! cold converge made, since idle ones are woken in turn and none stays idle
//! long enough to end), and glibc gives each thread an arena of its own, up
//! to 8 per core: their free memory stays with the process. Bench P4 (hosts
//! and GitHub out of process) measured 25 MiB `RssAnon` for a 500-runner
//! fleet with per-thread arenas, of it 11 MiB malloc's free memory. hangar
//! therefore keeps [`ARENAS`] arenas and gives malloc's free memory back to
//! the kernel after every pass. Elsewhere than glibc both do nothing.

/// Arenas malloc keeps at most (`M_ARENA_MAX`). Fewer arenas is less
/// memory and more contention on their locks where threads allocate at
/// once. For hangar alone (bench P4 with the hosts and GitHub out of
/// process, 500 runners) 2 arenas held 13.9 MiB and stayed flat, 4 held
/// 15.9 MiB with the C side still creeping, glibc's default 25 MiB; the
/// mean pass moved within the machine's noise (11.0 ms with the default,
/// 11.9 with 2). Where a simulator shares the process (the in-process
/// bench), its allocations contend too: there the list of 5,000 runners
/// took 1.9× as long with 2 arenas as with the default.
/// `MALLOC_ARENA_MAX` in the environment overrides this.
pub const ARENAS: i32 = 2;

/// Limit malloc to [`ARENAS`] arenas, unless the environment chose
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`).
/// Call before threads start: arenas already made stay.
pub fn limit_arenas() {
    let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    if !chosen {
        set_arena_max(ARENAS);
    }
}

/// Give malloc's free memory back to the kernel (`malloc_trim(0)`).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of malloc's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: i32) {
    // SAFETY: mallopt only sets a malloc parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_: i32) {}
