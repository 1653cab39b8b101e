//! GitHub's `workflow_job` webhooks: the daemon listens, and a delivery
//! that proves itself wakes the loop at once instead of at the next poll.
//! Polling stays on as the backstop (GitHub does not guarantee delivery).
//!
//! A delivery is judged before anything else is read from it: its body is
//! at most [`MAX_BODY`] bytes, its `X-Hub-Signature-256` is the HMAC-SHA256
//! of the body with the fleet's secret (compared in constant time,
//! https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries),
//! its `X-GitHub-Delivery` id was not seen before (a replay is dropped),
//! and at most [`MAX_PER_SECOND`] deliveries a second are taken. A forged
//! one is refused (401) and logged by its delivery id alone, never its
//! payload.
//!
//! The daemon's listener follows the file in use ([`Listening`]): a new
//! `listen` moves it, a new secret (or new content of its `secretFile`)
//! replaces the one deliveries are checked against, a removed `webhook`
//! stops it. A change that cannot be applied leaves the last good listener
//! as it was, and polling stays on.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::secret::Secret;

/// GitHub caps payloads at 25 MB; a `workflow_job` payload is a few KiB.
pub const MAX_BODY: usize = 1 << 20;

/// Deliveries taken per second; more are answered 429 (GitHub retries
/// none, polling catches up).
pub const MAX_PER_SECOND: u32 = 50;

/// Delivery ids remembered against replays.
const REMEMBERED: usize = 4096;

/// How long a stopped listener's open connections get to finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A `workflow_job` that may change demand: the loop wakes.
    Wake,
    /// Signed, but another event (e.g. `ping`): answered, nothing to do.
    Ignored,
    /// A delivery id already taken.
    Replay,
    /// No or a wrong signature.
    Forged,
    /// Over the rate bound.
    TooMany,
}

impl Verdict {
    fn status(self) -> StatusCode {
        match self {
            Verdict::Wake | Verdict::Ignored | Verdict::Replay => StatusCode::OK,
            Verdict::Forged => StatusCode::UNAUTHORIZED,
            Verdict::TooMany => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// The `X-Hub-Signature-256` value GitHub sends for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
}

/// HMAC (RFC 2104) over SHA-256.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Judges deliveries and wakes whoever waits on [`Receiver::wake`].
pub struct Receiver {
    /// `None` until a secret is known: every delivery is forged.
    secret: RwLock<Option<Secret<String>>>,
    pub wake: Arc<Notify>,
    seen: Mutex<(VecDeque<String>, HashSet<String>)>,
    rate: Mutex<(Instant, u32)>,
}

impl Receiver {
    pub fn new(secret: Secret<String>) -> Self {
        let r = Self::without_secret();
        r.rotate(secret);
        r
    }

    fn without_secret() -> Self {
        Receiver {
            secret: RwLock::new(None),
            wake: Arc::new(Notify::new()),
            seen: Mutex::new((VecDeque::new(), HashSet::new())),
            rate: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Check deliveries against `secret` from now on; the delivery ids
    /// seen and this second's count stay.
    pub fn rotate(&self, secret: Secret<String>) {
        *self.secret.write().unwrap_or_else(|e| e.into_inner()) = Some(secret);
    }

    /// Whether deliveries are checked against `secret`.
    fn holds(&self, secret: &Secret<String>) -> bool {
        self.secret
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|s| {
                equal_in_constant_time(s.expose().as_bytes(), secret.expose().as_bytes())
            })
    }

    fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Judge one delivery (its body already within [`MAX_BODY`]); a
    /// `Wake` verdict has notified [`Receiver::wake`].
    pub fn judge(&self, headers: &HeaderMap, body: &[u8]) -> Verdict {
        let delivery = Self::header(headers, "x-github-delivery");
        {
            let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
            if rate.0.elapsed() >= Duration::from_secs(1) {
                *rate = (Instant::now(), 0);
            }
            rate.1 += 1;
            if rate.1 > MAX_PER_SECOND {
                return Verdict::TooMany;
            }
        }
        let given = Self::header(headers, "x-hub-signature-256");
        let wanted = self
            .secret
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| signature(s.expose().as_bytes(), body));
        if !wanted.is_some_and(|w| equal_in_constant_time(given.as_bytes(), w.as_bytes())) {
            // The delivery id only: the payload is not trusted, not even
            // into a log line.
            tracing::warn!(
                target: "hangar::webhook",
                delivery = %delivery.chars().take(64).collect::<String>(),
                "webhook refused: signature does not match the secret"
            );
            return Verdict::Forged;
        }
        if !delivery.is_empty() {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.1.insert(delivery.to_string()) {
                return Verdict::Replay;
            }
            seen.0.push_back(delivery.to_string());
            if seen.0.len() > REMEMBERED {
                if let Some(old) = seen.0.pop_front() {
                    seen.1.remove(&old);
                }
            }
        }
        if Self::header(headers, "x-github-event") != "workflow_job" {
            return Verdict::Ignored;
        }
        tracing::debug!(target: "hangar::webhook", %delivery, "workflow_job received");
        self.wake.notify_one();
        Verdict::Wake
    }
}

async fn deliver(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    receiver.judge(&headers, &body).status()
}

/// The listening receiver; stops with [`Webhooks::stop`].
pub struct Webhooks {
    pub addr: SocketAddr,
    pub receiver: Arc<Receiver>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Webhooks {
    /// Listen on `listen` (any path takes deliveries).
    pub async fn listen(listen: SocketAddr, secret: Secret<String>) -> std::io::Result<Webhooks> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        Ok(Self::serve(listener, addr, Arc::new(Receiver::new(secret))))
    }

    /// Serve deliveries on `listener`, judged by `receiver` (which may
    /// outlive this listener: the daemon's replay memory and rate bound
    /// stay across a move).
    fn serve(
        listener: tokio::net::TcpListener,
        addr: SocketAddr,
        receiver: Arc<Receiver>,
    ) -> Webhooks {
        let router = Router::new()
            .fallback(post(deliver))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(receiver.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(target: "hangar::webhook", error = %e, "webhook listener ended");
            }
        });
        Webhooks {
            addr,
            receiver,
            stop,
            task,
        }
    }

    /// Stop taking connections (the port is free when this returns);
    /// deliveries under way get [`STOP_GRACE`] to be answered.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// The daemon's webhook listener, following the `webhook` of the version
/// of the fleet file in use. One [`Receiver`] serves every listener of the
/// daemon's life, so the delivery ids seen, the rate bound and
/// [`Listening::wake`] stay across a reload.
pub struct Listening {
    receiver: Arc<Receiver>,
    running: Option<Running>,
    /// The last failure said: one that lasts is said once, not each pass.
    said: Option<String>,
}

struct Running {
    /// `listen` as the file asks it (the bound address may differ: port 0).
    asked: SocketAddr,
    hooks: Webhooks,
}

impl Default for Listening {
    fn default() -> Self {
        Self::new()
    }
}

impl Listening {
    /// No listener yet.
    pub fn new() -> Self {
        Listening {
            receiver: Arc::new(Receiver::without_secret()),
            running: None,
            said: None,
        }
    }

    /// Notified by each delivery that wakes the loop, whichever listener
    /// took it.
    pub fn wake(&self) -> Arc<Notify> {
        self.receiver.wake.clone()
    }

    /// Where the listener is bound, if one runs.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.hooks.addr)
    }

    /// Make the listener what `spec` asks, with the secret it names as it
    /// reads now: started, moved to a new `listen`, given the new secret,
    /// or stopped (`None`). A change that cannot be applied (the address
    /// taken, the secret missing) is said once and leaves the last good
    /// listener as it was; the next call tries again.
    pub async fn follow(&mut self, spec: Option<&crate::fleet::WebhookSpec>) {
        let Some(spec) = spec else {
            if let Some(old) = self.running.take() {
                let addr = old.hooks.addr;
                old.hooks.stop().await;
                tracing::info!(target: "hangar::webhook", %addr, "webhook removed from the file; polling only");
            }
            self.said = None;
            return;
        };
        let wanted = read_secret(spec).and_then(|secret| {
            let asked: SocketAddr = spec.listen.parse().map_err(|_| {
                format!(
                    "spec.github.webhook.listen: `{}` is not ADDRESS:PORT",
                    spec.listen
                )
            })?;
            Ok((asked, secret))
        });
        let applied = match wanted {
            Err(e) => Err(e),
            // The same address (`allowNonLoopback` only lets the file
            // name it): the listener stays, the secret may be new.
            Ok((asked, secret)) if self.running.as_ref().is_some_and(|r| r.asked == asked) => {
                if !self.receiver.holds(&secret) {
                    self.receiver.rotate(secret);
                    tracing::info!(
                        target: "hangar::webhook",
                        addr = ?self.addr(),
                        "webhook secret changed; deliveries are checked against the new one"
                    );
                }
                Ok(())
            }
            Ok((asked, secret)) => self.move_to(asked, secret).await,
        };
        match applied {
            Ok(()) => self.said = None,
            Err(e) if self.said.as_ref() == Some(&e) => {}
            Err(e) => {
                match self.addr() {
                    Some(addr) => tracing::warn!(
                        target: "hangar::webhook",
                        error = %e,
                        %addr,
                        "webhook change not applied; the last good listener stays"
                    ),
                    None => tracing::warn!(
                        target: "hangar::webhook",
                        error = %e,
                        "no webhooks; polling only"
                    ),
                }
                self.said = Some(e);
            }
        }
    }

    /// Listen on `asked` with `secret`, then let the old listener go; the
    /// old one stays when the new one cannot start.
    async fn move_to(&mut self, asked: SocketAddr, secret: Secret<String>) -> Result<(), String> {
        let bind = |addr: SocketAddr| async move {
            let bound = async {
                let l = tokio::net::TcpListener::bind(addr).await?;
                let at = l.local_addr()?;
                Ok::<_, std::io::Error>((l, at))
            };
            bound
                .await
                .map_err(|e| (e.kind(), format!("spec.github.webhook.listen {addr}: {e}")))
        };
        let (listener, addr) = match bind(asked).await {
            Ok(l) => l,
            Err((kind, e)) => {
                // The old listener holds the port itself (127.0.0.1:P
                // becomes 0.0.0.0:P): it goes first, and comes back if the
                // new one still cannot start.
                let holds_port = kind == std::io::ErrorKind::AddrInUse
                    && asked.port() != 0
                    && self.addr().is_some_and(|a| a.port() == asked.port());
                let Some(old) = self.running.take_if(|_| holds_port) else {
                    return Err(e);
                };
                let back = old.asked;
                old.hooks.stop().await;
                match bind(asked).await {
                    Ok(bound) => bound,
                    Err((_, e)) => {
                        if let Ok((l, at)) = bind(back).await {
                            self.running = Some(Running {
                                asked: back,
                                hooks: Webhooks::serve(l, at, self.receiver.clone()),
                            });
                        }
                        return Err(e);
                    }
                }
            }
        };
        // Before the first connection is served on the new address.
        self.receiver.rotate(secret);
        let hooks = Webhooks::serve(listener, addr, self.receiver.clone());
        match self.running.replace(Running { asked, hooks }) {
            Some(old) => {
                let from = old.hooks.addr;
                old.hooks.stop().await;
                tracing::info!(target: "hangar::webhook", %from, to = %addr, "webhook listener moved");
            }
            None => tracing::info!(target: "hangar::webhook", %addr, "listening for webhooks"),
        }
        Ok(())
    }

    /// Stop the listener, if one runs.
    pub async fn stop(self) {
        if let Some(r) = self.running {
            r.hooks.stop().await;
        }
    }
}

/// The webhook secret the fleet file names (`secretEnv` or `secretFile`).
pub fn read_secret(spec: &crate::fleet::WebhookSpec) -> Result<Secret<String>, String> {
    let value = match (&spec.secret_env, &spec.secret_file) {
        (Some(name), _) => std::env::var(name).map_err(|_| {
            format!("spec.github.webhook.secretEnv: the environment variable {name} is not set")
        })?,
        (None, Some(path)) => {
            let (bytes, _) = crate::files::state::read_named(std::path::Path::new(path), 1 << 16)
                .map_err(|e| format!("spec.github.webhook.secretFile: {e}"))?;
            String::from_utf8(bytes)
                .map_err(|_| "spec.github.webhook.secretFile: not UTF-8".to_string())?
        }
        (None, None) => return Err("spec.github.webhook: no secret named".into()),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err("spec.github.webhook: the secret is empty".into());
    }
    Ok(Secret::new(value))
}

// The tests' own port picker: ports outside the kernel's ephemeral range,
// so another test's bind(0) cannot take one between pick and bind.
#[cfg(test)]
#[path = "../../tests/support/ports.rs"]
mod test_ports;

#[cfg(test)]
mod tests {
    use super::test_ports as ports;
    use super::*;

    fn headers(event: &str, delivery: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", event.parse().unwrap());
        h.insert("x-github-delivery", delivery.parse().unwrap());
        h.insert("x-hub-signature-256", sig.parse().unwrap());
        h
    }

    #[test]
    fn the_signature_is_githubs() {
        // GitHub's documented example: secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        // A key longer than a block is hashed first (RFC 4231 case 6).
        let key = [0xaa_u8; 131];
        assert_eq!(
            hex::encode(hmac_sha256(
                &key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_signed_job_wakes_a_replay_or_forgery_does_not() {
        let r = Receiver::new(Secret::new("s3cret".into()));
        let body = br#"{"action":"queued","workflow_job":{"labels":["x"]}}"#;
        let good = signature(b"s3cret", body);
        assert_eq!(
            r.judge(&headers("workflow_job", "d1", &good), body),
            Verdict::Wake
        );
        assert_eq!(
            r.judge(&headers("workflow_job", "d1", &good), body),
            Verdict::Replay
        );
        let forged = signature(b"guess", body);
        assert_eq!(
            r.judge(&headers("workflow_job", "d2", &forged), body),
            Verdict::Forged
        );
        let tampered = br#"{"action":"queued","workflow_job":{"labels":["y"]}}"#;
        assert_eq!(
            r.judge(&headers("workflow_job", "d3", &good), tampered),
            Verdict::Forged
        );
        assert_eq!(
            r.judge(&headers("workflow_job", "d4", ""), body),
            Verdict::Forged
        );
        let ping = signature(b"s3cret", b"{}");
        assert_eq!(
            r.judge(&headers("ping", "d5", &ping), b"{}"),
            Verdict::Ignored
        );
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_forgery_is_logged_by_its_delivery_id_without_its_payload() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let body = br#"{"action":"queued","payload_marker":"rm -rf /"}"#;
        tracing::subscriber::with_default(subscriber, || {
            let r = Receiver::new(Secret::new("s".into()));
            let sig = signature(b"not-the-secret", body);
            assert_eq!(
                r.judge(&headers("workflow_job", "delivery-77", &sig), body),
                Verdict::Forged
            );
        });
        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("webhook refused"), "{log}");
        assert!(log.contains("delivery-77"), "{log}");
        assert!(
            !log.contains("payload_marker") && !log.contains("rm -rf"),
            "{log}"
        );
    }

    #[test]
    fn deliveries_beyond_the_rate_bound_are_refused() {
        let r = Receiver::new(Secret::new("s".into()));
        let sig = signature(b"s", b"{}");
        let verdicts: Vec<Verdict> = (0..=MAX_PER_SECOND)
            .map(|i| r.judge(&headers("workflow_job", &format!("d{i}"), &sig), b"{}"))
            .collect();
        assert_eq!(verdicts.last(), Some(&Verdict::TooMany));
        assert!(verdicts[..MAX_PER_SECOND as usize]
            .iter()
            .all(|v| *v == Verdict::Wake));
    }

    /// One HTTP/1.1 request over loopback; the answer's status.
    async fn post_to(addr: SocketAddr, headers: &[(&str, String)], body: &[u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "POST /hooks/github HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_listener_wakes_on_a_signed_job_and_bounds_the_body() {
        let hooks = Webhooks::listen("127.0.0.1:0".parse().unwrap(), Secret::new("k".into()))
            .await
            .unwrap();
        let body = br#"{"action":"queued"}"#;
        let sig = signature(b"k", body);
        let wake = hooks.receiver.wake.clone();
        let h = |d: &str, sig: &str| {
            vec![
                ("x-github-event", "workflow_job".to_string()),
                ("x-github-delivery", d.to_string()),
                ("x-hub-signature-256", sig.to_string()),
            ]
        };
        assert_eq!(post_to(hooks.addr, &h("a", &sig), body).await, 200);
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("a signed workflow_job wakes the loop");
        assert_eq!(post_to(hooks.addr, &h("b", "sha256=00"), body).await, 401);
        let big = vec![b'x'; MAX_BODY + 1];
        let big_sig = signature(b"k", &big);
        assert_eq!(post_to(hooks.addr, &h("c", &big_sig), &big).await, 413);
        hooks.stop().await;
    }

    fn spec(listen: &str, secret_file: &std::path::Path) -> crate::fleet::WebhookSpec {
        crate::fleet::WebhookSpec {
            listen: listen.into(),
            secret_env: None,
            secret_file: Some(secret_file.display().to_string()),
            allow_non_loopback: false,
        }
    }

    fn job(delivery: &str, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("x-github-event", "workflow_job".to_string()),
            ("x-github-delivery", delivery.to_string()),
            ("x-hub-signature-256", signature(secret.as_bytes(), b"{}")),
        ]
    }

    fn refuses(addr: SocketAddr) -> bool {
        std::net::TcpStream::connect(addr).is_err()
    }

    #[tokio::test]
    async fn a_change_that_cannot_start_keeps_the_last_good_listener_and_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "first-canary\n").unwrap();
        let sink = Sink::default();
        let writer = sink.clone();
        let _log = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        let mut hooks = Listening::new();
        hooks.follow(Some(&spec("127.0.0.1:0", &file))).await;
        let first = hooks.addr().expect("listening");

        // Another process holds the new address: the old listener stays,
        // with its secret, and the failure is said once however many
        // passes it lasts.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let wanted = taken.local_addr().unwrap().to_string();
        std::fs::write(&file, "second-canary\n").unwrap();
        for _ in 0..3 {
            hooks.follow(Some(&spec(&wanted, &file))).await;
            assert_eq!(hooks.addr(), Some(first));
        }
        assert_eq!(post_to(first, &job("d1", "first-canary"), b"{}").await, 200);
        assert_eq!(
            post_to(first, &job("d2", "second-canary"), b"{}").await,
            401
        );

        // The secret file is gone: the same.
        let gone = dir.path().join("gone");
        hooks.follow(Some(&spec("127.0.0.1:0", &gone))).await;
        assert_eq!(hooks.addr(), Some(first));
        assert_eq!(post_to(first, &job("d3", "first-canary"), b"{}").await, 200);

        // The address is free again: the next pass moves there, with the
        // file's secret of now, and the old port is let go.
        drop(taken);
        hooks.follow(Some(&spec(&wanted, &file))).await;
        let moved = hooks.addr().expect("listening");
        assert_eq!(moved.to_string(), wanted);
        assert!(refuses(first), "the old port still accepts");
        assert_eq!(
            post_to(moved, &job("d4", "second-canary"), b"{}").await,
            200
        );
        assert_eq!(post_to(moved, &job("d5", "first-canary"), b"{}").await, 401);
        hooks.stop().await;
        assert!(refuses(moved));

        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let kept = log.matches("the last good listener stays").count();
        assert_eq!(
            kept, 2,
            "once for the taken address, once for the file:\n{log}"
        );
        assert!(log.contains(&wanted) && log.contains("gone"), "{log}");
        assert!(log.contains("webhook listener moved"), "{log}");
        assert!(!log.contains("canary"), "a secret reached the log:\n{log}");
    }

    #[tokio::test]
    async fn a_rotated_secret_keeps_the_port_the_replay_memory_and_the_wake() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "old").unwrap();
        let mut hooks = Listening::new();
        let wake = hooks.wake();
        hooks.follow(Some(&spec("127.0.0.1:0", &file))).await;
        let addr = hooks.addr().expect("listening");
        assert_eq!(post_to(addr, &job("d1", "old"), b"{}").await, 200);
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("woken");

        std::fs::write(&file, "new").unwrap();
        hooks.follow(Some(&spec("127.0.0.1:0", &file))).await;
        assert_eq!(hooks.addr(), Some(addr), "a new secret alone does not move");
        assert_eq!(post_to(addr, &job("d2", "old"), b"{}").await, 401);
        // A delivery id seen before the rotation is still a replay.
        let judged = |d: &str| {
            let h = job(d, "new");
            let mut headers = HeaderMap::new();
            for (k, v) in h {
                headers.insert(k, v.parse().unwrap());
            }
            hooks.receiver.judge(&headers, b"{}")
        };
        assert_eq!(judged("d1"), Verdict::Replay);
        assert_eq!(judged("d3"), Verdict::Wake);
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("the same wake after the rotation");

        hooks.follow(None).await;
        assert_eq!(hooks.addr(), None);
        assert!(refuses(addr), "a removed webhook still listens");
    }

    #[tokio::test]
    async fn a_move_onto_the_old_listeners_own_port_lets_it_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "k").unwrap();
        let port = ports::free_port();
        let v4 = format!("127.0.0.1:{port}");
        // Loopback too, and the same port: Linux refuses to bind it beside
        // the IPv4 listener.
        let mapped = format!("[::ffff:127.0.0.1]:{port}");
        let mut hooks = Listening::new();
        hooks.follow(Some(&spec(&v4, &file))).await;
        assert_eq!(hooks.addr().map(|a| a.to_string()), Some(v4.clone()));
        hooks.follow(Some(&spec(&mapped, &file))).await;
        assert_eq!(hooks.addr().map(|a| a.to_string()), Some(mapped.clone()));
        let addr = hooks.addr().unwrap();
        assert_eq!(post_to(addr, &job("d1", "k"), b"{}").await, 200);
        hooks.stop().await;
    }
}
