//! Long-lived connections to each host, reopened when they drop, and the
//! wrapper every libvirt call goes through: counted, its error classified,
//! off the async runtime.
//!
//! The work of one trait method makes its calls one after another, so a
//! connection carries one call per work on it. A host opens another
//! connection only when every open one already carries its share of works
//! ([`calls_per_connection`]), up to [`MAX_CONNECTIONS`], i.e. only where
//! the host's mutation limit lets more than that run at once: one work per
//! connection on a local host, whose connections cost a UNIX socket each,
//! and four on a remote one, whose connections cost an ssh session each
//! (libvirtd serves up to 5 calls at once per client connection,
//! `max_client_requests`). A work keeps the
//! connection it first took until it ends (its domain and volume handles
//! belong to it). A test-driver host keeps one: a private
//! `test:///…/node.xml` is a world of its own per connection, in this
//! process or, as `test+unix:///…/node.xml`, in a libvirtd.
//!
//! Remote connections send libvirt keepalives (libvirt's event loop runs on
//! a thread of its own, started once per process): a peer that stops
//! answering is closed by libvirt within [`KEEPALIVE_INTERVAL_SECS`] ×
//! [`KEEPALIVE_COUNT`]. A connection is known dead when libvirt saw it close
//! (`virConnectIsAlive`, answered locally) or when a call failed in a way
//! [`super::errors::classify`] calls transient; the next call reopens it.
//!
//! Every libvirt call, on every host (local ones too: a local libvirtd
//! can stop answering as well), has a deadline ([`CALL_TIMEOUT`]). The
//! work of one trait method (a create is a dozen calls, an upload many
//! chunks) runs on one blocking thread; each call and each uploaded chunk
//! marks progress, and the work fails when no progress was marked for the
//! deadline: a host that stops answering fails in that time instead of
//! holding up the pass for the other hosts, however long the work is. While
//! the stuck call has not returned, further calls fail at once (no second
//! thread is parked on it). These failures are not retried within the pass
//! (retrying would multiply the wait); the pass treats the host as
//! unobserved and the next pass looks again. The blocking thread itself
//! cannot be interrupted: it is left to return (or to end with the
//! process, which does not wait for it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::storage_pool::StoragePool;

use super::errors::map_error;
use super::image::Base;
use super::{HostConfig, Inner, LibvirtHost};
use crate::model::host::HostIdentity;
use crate::providers::{ErrorKind, ProviderError};

static QUIET_LIBVIRT: Once = Once::new();
static EVENT_LOOP: Once = Once::new();

/// Seconds between keepalive probes on a remote connection.
pub const KEEPALIVE_INTERVAL_SECS: i32 = 5;
/// Unanswered probes after which libvirt closes the connection.
pub const KEEPALIVE_COUNT: u32 = 3;
/// How long one libvirt call (or one chunk of an upload) may take before
/// the host counts as not answering; also the deadline of opening a
/// connection.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Works one connection of a remote host carries before the host opens
/// another: one under libvirtd's 5 calls at once per client connection
/// (its default `max_client_requests`).
pub const REMOTE_CALLS_PER_CONNECTION: usize = 4;
/// The same for a local host: one. Two `virDomainDestroy` calls on one
/// connection at times finish one after the other, not together, whatever
/// `max_client_requests` allows: in bench P9 (10 destroys at once on
/// `qemu:///system`) one destroy in a round took twice as long as the
/// others in 2–3 rounds of 5 with 4 works per connection, up to 5 of 10
/// with 2, and none in 15 rounds (three runs) with 1.
pub const LOCAL_CALLS_PER_CONNECTION: usize = 1;
/// Calls in flight one host's connections carry at most, and so the
/// connections a local host opens at most (a remote one opens a quarter,
/// at four works each): libvirtd's default worker pool (`max_workers =
/// 20`), as the default mutation limit
/// ([`crate::reconcile::execute::MAX_DEFAULT_PER_HOST`]).
pub const MAX_CONNECTIONS: usize = 20;

/// Works per connection of a host at `uri` (see the module doc).
pub fn calls_per_connection(uri: &str) -> usize {
    if uri_is_local(uri) {
        LOCAL_CALLS_PER_CONNECTION
    } else {
        REMOTE_CALLS_PER_CONNECTION
    }
}
thread_local! {
    /// The progress mark of the work running on this blocking thread (see
    /// [`LibvirtHost::blocking`]).
    static PROGRESS: RefCell<Option<Arc<AtomicU64>>> = const { RefCell::new(None) };
    /// Which of the host's connections the work on this thread took (see
    /// [`Connections`]): `Some(None)` inside a work that has not taken one
    /// yet, `None` outside any work.
    static LEASE: RefCell<Option<Option<usize>>> = const { RefCell::new(None) };
}

/// One host's connections (see the module doc).
pub(super) struct Connections {
    slots: std::sync::Mutex<Vec<Slot>>,
    max: usize,
    /// Works one connection carries before another is opened.
    per_connection: usize,
    /// Base images as last read, by the fleet file's `image`, and when:
    /// every create of a pass needs the same one.
    bases: std::sync::Mutex<HashMap<String, (Instant, Base)>>,
}

/// How long a base image's facts (path, format, size) are taken as read.
/// A create that fails forgets them.
pub(super) const BASE_MAX_AGE: Duration = Duration::from_secs(60);

struct Slot {
    /// `None`: dropped, reopened by the next work that takes it.
    conn: Option<Arc<Connect>>,
    /// Works that hold this connection.
    works: usize,
    /// The host's storage pool as looked up on this connection.
    pool: Option<StoragePool>,
    /// Whether it was ever open (a new one is no news of the host).
    opened: bool,
}

/// A libvirt call that takes this long is said in the debug log.
const SLOW_CALL: std::time::Duration = std::time::Duration::from_millis(500);

impl Connections {
    /// `first`, and room for more where `uri` is not the test driver.
    pub(super) fn new(uri: &str, first: Connect) -> Connections {
        let test_driver = uri_is_test_driver(uri);
        Connections {
            slots: std::sync::Mutex::new(vec![Slot {
                conn: Some(Arc::new(first)),
                works: 0,
                pool: None,
                opened: true,
            }]),
            max: if test_driver {
                1
            } else if uri_is_local(uri) {
                MAX_CONNECTIONS
            } else {
                MAX_CONNECTIONS / REMOTE_CALLS_PER_CONNECTION
            },
            per_connection: calls_per_connection(uri),
            bases: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn bases(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Base)>> {
        self.bases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `image`'s base as read less than [`BASE_MAX_AGE`] ago.
    pub(super) fn base(&self, image: &str) -> Option<Base> {
        let bases = self.bases();
        let (at, base) = bases.get(image)?;
        (at.elapsed() < BASE_MAX_AGE).then(|| base.clone())
    }

    pub(super) fn keep_base(&self, image: &str, base: &Base) {
        self.bases()
            .insert(image.to_string(), (Instant::now(), base.clone()));
    }

    pub(super) fn forget_bases(&self) {
        self.bases().clear();
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections open now (for tests and the bench).
    pub(super) fn open_count(&self) -> usize {
        self.slots().iter().filter(|s| s.conn.is_some()).count()
    }

    /// The work on this thread has ended: its connection carries one less.
    fn release(&self, index: usize) {
        if let Some(slot) = self.slots().get_mut(index) {
            slot.works = slot.works.saturating_sub(1);
        }
    }
}

/// The connection the work on this thread took, if any.
fn leased() -> Option<usize> {
    LEASE.with(|l| l.borrow().flatten())
}

/// The work on this thread is still moving: a call returned, a chunk went.
pub(super) fn mark_progress() {
    PROGRESS.with(|p| {
        if let Some(p) = p.borrow().as_ref() {
            p.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Whether a libvirt URI names this machine (no host part, or a unix socket).
pub fn uri_is_local(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return true;
    };
    let authority = rest.split('/').next().unwrap_or("");
    authority.is_empty() || scheme.ends_with("+unix")
}

/// Whether a libvirt URI names the test driver, in this process (`test://`)
/// or served by a daemon (`test+unix://`, `test+ssh://…`).
pub(super) fn uri_is_test_driver(uri: &str) -> bool {
    uri.split_once("://")
        .and_then(|(scheme, _)| scheme.split('+').next())
        == Some("test")
}

/// Open the host's connection. libvirt's default error callback prints
/// every error to stderr, including the ones hangar expects (a lookup of a
/// volume not made yet): it is silenced once per process.
pub(super) fn open(config: &HostConfig, what: &str) -> Result<Connect, ProviderError> {
    QUIET_LIBVIRT.call_once(virt::error::clear_error_callback);
    let remote = !uri_is_local(&config.uri);
    if remote {
        start_event_loop();
    }
    let conn = Connect::open(Some(&config.uri))
        .map_err(|e| map_error(&config.name, &format!("{what} {}", config.uri), &e))?;
    if remote {
        // Without the event loop (it failed to start) libvirt refuses
        // keepalive; the call deadline still bounds a silent peer.
        if let Err(e) = conn.set_keep_alive(KEEPALIVE_INTERVAL_SECS, KEEPALIVE_COUNT) {
            tracing::warn!(host = %config.name, error = %e, "libvirt keepalive not enabled");
        }
    }
    Ok(conn)
}

/// libvirt's default event loop on a thread of its own: keepalive needs it,
/// and it must be registered before the first remote connection opens.
fn start_event_loop() {
    EVENT_LOOP.call_once(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(error = %e, "libvirt event loop not registered");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if virt::event::event_run_default_impl().is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "libvirt event loop not started");
        }
    });
}

impl LibvirtHost {
    /// Run `f` on the blocking pool: every virt call blocks its thread.
    /// Bounded by the host's call deadline (see the module doc).
    pub(super) async fn blocking<T, F>(&self, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, ProviderError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let limit = *inner
            .call_timeout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        {
            let mut stuck = inner
                .stuck
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match stuck.as_ref() {
                Some((_, done)) if done.load(Ordering::Acquire) => *stuck = None,
                Some((since, _)) => {
                    return Err(inner.err(
                        ErrorKind::Refused,
                        format!(
                            "not answering: a libvirt call has waited {}s",
                            since.elapsed().as_secs()
                        ),
                    ))
                }
                None => {}
            }
        }
        let done = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let mut task = tokio::task::spawn_blocking({
            let (inner, done, progress) = (inner.clone(), done.clone(), progress.clone());
            move || {
                /// Unset however the work ends (a fault point panics).
                /// Also gives back the connection the work took.
                struct Unmark<'a>(&'a Inner);
                impl Drop for Unmark<'_> {
                    fn drop(&mut self) {
                        PROGRESS.with(|p| *p.borrow_mut() = None);
                        if let Some(index) = LEASE.with(|l| l.borrow_mut().take()).flatten() {
                            self.0.conns.release(index);
                        }
                    }
                }
                PROGRESS.with(|p| *p.borrow_mut() = Some(progress));
                LEASE.with(|l| *l.borrow_mut() = Some(None));
                let _unmark = Unmark(&inner);
                let r = f(&inner);
                done.store(true, Ordering::Release);
                r
            }
        });
        let joined = match limit {
            None => task.await,
            Some(limit) => {
                // Looked at a few times per deadline: a stuck call is found
                // between `limit` and `limit * 9/8` after its last progress.
                let tick = (limit / 8).max(Duration::from_millis(10));
                let (mut seen, mut moved) = (0u64, tokio::time::Instant::now());
                loop {
                    tokio::select! {
                        joined = &mut task => break joined,
                        _ = tokio::time::sleep(tick) => {
                            let now = progress.load(Ordering::Relaxed);
                            if now != seen {
                                (seen, moved) = (now, tokio::time::Instant::now());
                                continue;
                            }
                            if moved.elapsed() < limit {
                                continue;
                            }
                            *inner.stuck.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some((Instant::now() - moved.elapsed(), done));
                            return Err(inner.err(
                                ErrorKind::Refused,
                                format!("not answering: no reply within {}s", limit.as_secs()),
                            ));
                        }
                    }
                }
            }
        };
        joined.map_err(|e| inner.err(ErrorKind::Transient, format!("libvirt task failed: {e}")))?
    }

    /// Connections open to the host now (see the module doc).
    pub fn libvirt_connections(&self) -> usize {
        self.inner.connections_open()
    }

    /// Change the deadline of every call on this host (`None`: unbounded).
    /// Every host starts with [`CALL_TIMEOUT`].
    pub fn set_call_timeout(&self, limit: Option<Duration>) {
        *self
            .inner
            .call_timeout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = limit;
    }
}

impl Inner {
    pub(super) fn err(&self, kind: ErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError::new(&self.config.name, kind, message)
    }

    /// The connection of the work on this thread: the one it took, or
    /// (on its first call) the least busy one, a new one when every open
    /// connection already carries its share of works and there is room;
    /// reopened if it dropped. Outside a work: the first.
    pub(super) fn conn(&self) -> Result<Arc<Connect>, ProviderError> {
        let in_work = LEASE.with(|l| l.borrow().is_some());
        let mut slots = self.conns.slots();
        let index = match leased() {
            Some(i) => i,
            None if !in_work => 0,
            None => {
                let least = (0..slots.len())
                    .min_by_key(|&i| slots[i].works)
                    .unwrap_or(0);
                let i = if slots[least].works >= self.conns.per_connection
                    && slots.len() < self.conns.max
                {
                    slots.push(Slot {
                        conn: None,
                        works: 0,
                        pool: None,
                        opened: false,
                    });
                    slots.len() - 1
                } else {
                    least
                };
                slots[i].works += 1;
                tracing::debug!(host = %self.config.name, connection = i,
                    works = ?slots.iter().map(|s| s.works).collect::<Vec<_>>(),
                    "libvirt connection taken");
                LEASE.with(|l| *l.borrow_mut() = Some(Some(i)));
                i
            }
        };
        let slot = &mut slots[index];
        if let Some(c) = slot.conn.as_ref() {
            // virConnectIsAlive is answered locally, no round trip.
            if c.is_alive().unwrap_or(false) {
                return Ok(c.clone());
            }
        }
        let fresh = !slot.opened;
        slot.conn = None;
        slot.pool = None;
        if !fresh {
            // A new connection may be a new host (or one resized): read again.
            self.forget_facts();
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let what = if fresh { "connect to" } else { "reconnect to" };
        let c = Arc::new(open(&self.config, what)?);
        self.calls.fetch_add(3, Ordering::Relaxed);
        let identity = super::facts::read_identity(&c, &self.config)?;
        self.check_identity(identity);
        slot.conn = Some(c.clone());
        slot.opened = true;
        Ok(c)
    }

    /// The host's storage pool on the work's connection, looked up once
    /// per connection (a failed call forgets it).
    pub(super) fn cached_pool(&self) -> Option<StoragePool> {
        let index = leased()?;
        self.conns.slots().get(index)?.pool.clone()
    }

    pub(super) fn keep_pool(&self, pool: &StoragePool) {
        if let Some(index) = leased() {
            if let Some(slot) = self.conns.slots().get_mut(index) {
                slot.pool = Some(pool.clone());
            }
        }
    }

    /// Connections open to this host now.
    pub(super) fn connections_open(&self) -> usize {
        self.conns.open_count()
    }

    /// One counted libvirt call, its error mapped. A transient failure drops
    /// the connection so the next call reopens it.
    pub(super) fn call<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, virt::error::Error>,
    ) -> Result<T, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let r = f();
        mark_progress();
        let took = started.elapsed();
        if took >= SLOW_CALL {
            tracing::debug!(host = %self.config.name, call = what, ms = took.as_millis() as u64, "slow libvirt call");
        }
        r.map_err(|e| {
            let err = map_error(&self.config.name, what, &e);
            // A pool handle kept from before may be what failed (the pool
            // was redefined): look it up again next time. An object not
            // found (a lookup of a volume not made yet) says nothing of it.
            let pool_gone = matches!(
                e.code(),
                virt::enumutil::Enum::Known(virt::error::ErrorNumber::NoStoragePool)
            );
            if err.kind != ErrorKind::NotFound || pool_gone {
                self.forget_pools();
            }
            if err.kind == ErrorKind::Transient {
                self.drop_connection();
            }
            err
        })
    }

    /// A libvirt call answered from the handle itself (a domain's UUID), not
    /// counted: it makes no round trip.
    pub(super) fn local_read<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, virt::error::Error>,
    ) -> Result<T, ProviderError> {
        f().map_err(|e| map_error(&self.config.name, what, &e))
    }

    /// A reconnect reached `now`: if that is not the libvirtd the host was,
    /// the host went away (whatever answers under its name now), and the
    /// next facts read says so instead of observing it. The pass after
    /// takes the new daemon as the host; resolution still refuses it if
    /// another entry of the file is that daemon.
    fn check_identity(&self, now: HostIdentity) {
        let mut known = self.identity.lock().expect("identity lock");
        if *known != now {
            tracing::warn!(host = %self.config.name, was = %*known, now = %now, "host identity changed");
            *self.identity_changed.lock().expect("identity lock") = Some(format!(
                "the libvirtd at {} is not the one seen before ({}; now {}): \
                 treated as a host that went away for this pass",
                self.config.uri, *known, now
            ));
            *known = now;
        }
    }

    /// Take the news of an identity change (see [`Inner::check_identity`]).
    pub(super) fn identity_change(&self) -> Result<(), ProviderError> {
        match self.identity_changed.lock().expect("identity lock").take() {
            Some(message) => Err(self.err(ErrorKind::Refused, message)),
            None => Ok(()),
        }
    }

    /// Forget the work's connection: the next call reopens it.
    pub(super) fn drop_connection(&self) {
        let index = leased().unwrap_or(0);
        if let Some(slot) = self.conns.slots().get_mut(index) {
            slot.conn = None;
            slot.pool = None;
        }
    }

    fn forget_pools(&self) {
        for slot in self.conns.slots().iter_mut() {
            slot.pool = None;
        }
    }

    /// The base image for `image`, read again only when older than
    /// [`BASE_MAX_AGE`] (see [`Inner::base_image`]).
    pub(super) fn recent_base(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        image: &str,
    ) -> Result<Base, ProviderError> {
        if let Some(base) = self.conns.base(image) {
            return Ok(base);
        }
        let base = self.base_image(conn, pool, image)?;
        self.conns.keep_base(image, &base);
        Ok(base)
    }

    /// Forget what was read of the host's pool and images (a create failed).
    pub(super) fn forget_looked_up(&self) {
        self.forget_pools();
        self.conns.forget_bases();
    }

    /// Calls made outside [`Inner::call`] (the isolation module counts its
    /// own).
    pub(super) fn count_calls(&self, n: u64) {
        self.calls.fetch_add(n, Ordering::Relaxed);
        mark_progress();
    }

    /// A fault point of the reliability suite (feature `failpoints`; nothing
    /// without it). When the point is configured, the test driver's state,
    /// which lives in this process, is first written to its node file, so
    /// that a kill here leaves on disk what a real libvirtd would hold; the
    /// warning tells the suite where the process stands.
    pub(super) fn fault_point(&self, conn: &Connect, name: &str) {
        #[cfg(feature = "failpoints")]
        if fail::list().iter().any(|(n, _)| n == name) {
            let node_file = self
                .config
                .uri
                .strip_prefix("test://")
                .filter(|p| p.ends_with(".xml") && std::path::Path::new(p).is_file());
            if let (crate::model::host::DomainType::Test, Some(path)) =
                (self.domain_type, node_file)
            {
                let tmp = format!("{path}.fault");
                let saved = super::test_node::dump(conn)
                    .map_err(|e| e.to_string())
                    .and_then(|xml| {
                        std::fs::write(&tmp, xml)
                            .and_then(|()| std::fs::rename(&tmp, path))
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = saved {
                    tracing::warn!(fault_point = name, error = %e, "sandbox state not saved");
                }
            }
            tracing::warn!(fault_point = name, "fault point reached");
            fail::fail_point!(name);
        }
        let _ = (conn, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris_are_told_from_remote_ones() {
        assert!(uri_is_local("qemu:///system"));
        assert!(uri_is_local("test:///tmp/x/node.xml"));
        assert!(uri_is_local("qemu+unix:///system"));
        assert!(!uri_is_local("qemu+ssh://root@build1/system"));
        assert!(!uri_is_local("qemu://build1/system"));
    }

    #[test]
    fn the_test_driver_is_told_by_its_driver_over_any_transport() {
        assert!(uri_is_test_driver("test:///tmp/x/node.xml"));
        assert!(uri_is_test_driver("test+unix:///tmp/x/node.xml"));
        assert!(uri_is_test_driver("test+ssh://ci@b1/default"));
        assert!(!uri_is_test_driver("qemu:///system"));
        assert!(!uri_is_test_driver("qemu+unix:///system"));
        assert!(!uri_is_test_driver("testing:///x"));
    }
}
