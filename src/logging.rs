//! The process's logs and what a crash leaves: every log line goes through
//! [`redact`] on its way to stderr, whatever emitted it (hangar, the HTTP
//! client's `http.url`, libvirt), so that a URL's userinfo, a token-like
//! query parameter or a GitHub token never reaches a terminal or a journal;
//! and core dumps are off ([`disable_core_dumps`]), so that a crash of the
//! daemon does not write its token to disk.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// What replaces a redacted secret.
pub const REDACTED: &str = "[redacted]";

/// Query parameters whose value is a credential.
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "key",
    "api_key",
    "apikey",
    "sig",
    "signature",
    "code",
    "jwt",
    "jitconfig",
    "encoded_jit_config",
];

/// GitHub's token prefixes: what follows them is the secret.
const TOKEN_PREFIXES: &[&str] = &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"];

fn ends_value(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')' | ']' | '}' | ',')
}

/// `text` with URL userinfo, secret query parameters and GitHub tokens
/// replaced by [`REDACTED`].
pub fn redact(text: &str) -> String {
    let text = redact_userinfo(text);
    let text = redact_params(&text);
    redact_tokens(&text)
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| ends_value(c) || matches!(c, '/' | '?' | '#'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        let scheme: String = head[..head.len() - 3]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        // A libvirt URI's ssh user is no secret; a password is, and so is
        // anything before `@` in an http(s) URL (a token as the user).
        let web = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https");
        match authority.rfind('@') {
            Some(at) if web || authority[..at].contains(':') => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // A parameter starts after `?` or `&` and ends at `&`, `#` or the end
    // of the URL.
    while let Some(i) = rest.find(['?', '&']) {
        let (head, tail) = rest.split_at(i + 1);
        out.push_str(head);
        let end = tail
            .find(|c: char| ends_value(c) || matches!(c, '&' | '#'))
            .unwrap_or(tail.len());
        let param = &tail[..end];
        match param.split_once('=') {
            Some((k, v))
                if !v.is_empty() && SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) =>
            {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(param),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_tokens(text: &str) -> String {
    let mut out = text.to_string();
    for prefix in TOKEN_PREFIXES {
        let mut from = 0;
        while let Some(i) = out[from..].find(prefix) {
            let start = from + i + prefix.len();
            let len = out[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(out.len() - start);
            if len >= 16 {
                out.replace_range(start..start + len, REDACTED);
            }
            from = start;
        }
    }
    out
}

/// One log event's bytes, redacted and written to stderr when dropped
/// (the formatter writes each event through its own writer).
pub struct RedactingWriter<W: Write> {
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = redact(&String::from_utf8_lossy(&self.buf));
        self.buf.clear();
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Makes a [`RedactingWriter`] per event over what `make` makes.
pub struct Redacting<F>(pub F);

impl<'a, F, W> MakeWriter<'a> for Redacting<F>
where
    F: Fn() -> W + 'static,
    W: Write,
{
    type Writer = RedactingWriter<W>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            buf: Vec::new(),
            out: (self.0)(),
        }
    }
}

/// Log to stderr at `verbose` (0: warnings; `RUST_LOG` overrides), as
/// text or JSON lines, every line redacted.
pub fn init(verbose: u8, json: bool, ansi: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "hangar=info,warn",
        2 => "hangar=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Redacting(std::io::stderr))
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Turn core dumps off for this process (not dumpable, core size 0), so
/// that a crash never writes the token held in memory to disk; left alone
/// when `HANGAR_ALLOW_CORE_DUMPS=1` (debugging hangar itself).
pub fn disable_core_dumps() {
    if std::env::var("HANGAR_ALLOW_CORE_DUMPS").as_deref() == Ok("1") {
        return;
    }
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on this process with valid arguments;
    // failure (not expected) leaves the defaults, which is logged nowhere
    // because logging is not set up yet.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_params_and_tokens_are_redacted() {
        let line = r#"http.url="http://user:PASSWORD@127.0.0.1:9/x?per_page=100&access_token=SECRET1#f" auth=Bearer ghs_0123456789abcdefABCDEF"#;
        let r = redact(line);
        assert!(!r.contains("PASSWORD") && !r.contains("user:"), "{r}");
        assert!(!r.contains("SECRET1"), "{r}");
        assert!(!r.contains("0123456789abcdef"), "{r}");
        assert!(
            r.contains("@127.0.0.1:9/x?per_page=100&access_token=[redacted]#f"),
            "{r}"
        );
        assert!(r.contains("ghs_[redacted]"), "{r}");
    }

    #[test]
    fn ordinary_lines_are_unchanged() {
        for line in [
            "GET https://api.github.com/repos/o/r/actions/runners?per_page=100 200",
            "connected to qemu+ssh://github@node/system",
            "a ? b & c = d",
        ] {
            assert_eq!(redact(line), line);
        }
    }

    #[test]
    fn the_writer_redacts_each_event() {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Redacting(move || Shared(sink.clone())))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(http.url = "https://u:PASSWORD@h/x", "request");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("request") && !text.contains("PASSWORD"),
            "{text}"
        );
    }
}
