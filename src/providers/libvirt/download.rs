//! Base images given as a URL: fetched once by the machine running hangar,
//! checked against their SHA-256 while they stream to a local file, and only
//! then uploaded into the host's storage pool (see `LibvirtHost::create`).
//! A file that does not match is deleted and never reaches libvirt.

use std::io::Write;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

/// Redirects followed before giving up (release hosts redirect to a CDN).
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The network or the server failed; a later pass may succeed.
    #[error("downloading {url}: {message}")]
    Transient { url: String, message: String },
    /// The answer will not change: 4xx, a checksum mismatch, a bad URL.
    #[error("downloading {url}: {message}")]
    Refused { url: String, message: String },
}

/// A downloaded, verified image file.
#[derive(Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    pub format: ImageFormat,
}

/// What the file holds, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A qcow2 image and its virtual size.
    Qcow2 {
        virtual_size: u64,
    },
    Raw,
}

/// qcow2 files start with `QFI\xfb`; the virtual size is the big-endian
/// u64 at offset 24 of the header.
pub fn detect_format(head: &[u8]) -> ImageFormat {
    if head.len() >= 32 && head[..4] == *b"QFI\xfb" {
        let mut size = [0u8; 8];
        size.copy_from_slice(&head[24..32]);
        ImageFormat::Qcow2 {
            virtual_size: u64::from_be_bytes(size),
        }
    } else {
        ImageFormat::Raw
    }
}

/// Fetch `url` into `dir`, hashing as it streams; keep the file only if its
/// SHA-256 is `sha256` (hex). Plain http is accepted only for loopback
/// addresses (tests), as for the GitHub API URL.
pub async fn fetch_verified(
    url: &str,
    sha256: &str,
    dir: &Path,
) -> Result<Downloaded, DownloadError> {
    let refused = |message: String| DownloadError::Refused {
        url: url.to_string(),
        message,
    };
    let transient = |message: String| DownloadError::Transient {
        url: url.to_string(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| refused(format!("{}: {e}", dir.display())))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| refused(format!("no TLS root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);

    let mut current = url.to_string();
    let mut response = None;
    for _ in 0..=MAX_REDIRECTS {
        let uri: hyper::Uri = current
            .parse()
            .map_err(|e| refused(format!("bad URL: {e}")))?;
        check_scheme(&uri).map_err(refused)?;
        let r = client
            .get(uri)
            .await
            .map_err(|e| transient(e.to_string()))?;
        if r.status().is_redirection() {
            let next = r
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| refused(format!("{} without a Location", r.status())))?;
            current = next.to_string();
            continue;
        }
        response = Some(r);
        break;
    }
    let mut response = response.ok_or_else(|| refused("too many redirects".into()))?;
    let status = response.status();
    if status.is_server_error() {
        return Err(transient(format!("server answered {status}")));
    }
    if !status.is_success() {
        return Err(refused(format!("server answered {status}")));
    }

    let path = dir.join(format!("{}.download", &sha256[..16.min(sha256.len())]));
    let mut file =
        std::fs::File::create(&path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(32);
    let mut bytes = 0u64;
    let streamed: Result<(), DownloadError> = async {
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.map_err(|e| transient(e.to_string()))?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            if head.len() < 32 {
                let take = (32 - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| refused(format!("{}: {e}", path.display())))?;
            bytes += chunk.len() as u64;
        }
        file.flush()
            .map_err(|e| refused(format!("{}: {e}", path.display())))
    }
    .await;
    let actual = hex::encode(hasher.finalize());
    let verdict = streamed.and_then(|()| {
        if actual.eq_ignore_ascii_case(sha256) {
            Ok(())
        } else {
            Err(refused(format!(
                "sha256 is {actual}, expected {}: the file was discarded",
                sha256.to_ascii_lowercase()
            )))
        }
    });
    if let Err(e) = verdict {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(Downloaded {
        path,
        bytes,
        format: detect_format(&head),
    })
}

fn check_scheme(uri: &hyper::Uri) -> Result<(), String> {
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if uri.host().is_some_and(is_loopback) => Ok(()),
        _ => Err("only https:// is accepted (plain http only on loopback)".into()),
    }
}

/// `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qcow2_header_gives_the_virtual_size() {
        let mut head = b"QFI\xfb\0\0\0\x03".to_vec();
        head.resize(24, 0);
        head.extend_from_slice(&(5u64 << 30).to_be_bytes());
        assert_eq!(
            detect_format(&head),
            ImageFormat::Qcow2 {
                virtual_size: 5 << 30
            }
        );
        assert_eq!(detect_format(b"\0\0\0\0"), ImageFormat::Raw);
        assert_eq!(detect_format(&head[..20]), ImageFormat::Raw);
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in [
            "https://cloud-images.ubuntu.com/x.img",
            "http://127.0.0.1:8000/x",
            "http://localhost/x",
            "http://[::1]:9/x",
        ] {
            assert!(check_scheme(&ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/x",
            "ftp://127.0.0.1/x",
            "http://10.0.0.1/x",
        ] {
            assert!(check_scheme(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }
}
