//! Where a VM's base image comes from.
//!
//! `vm.image` is one of:
//! - an absolute path on the host (`/var/lib/images/jammy.qcow2`): used as
//!   the overlay's backing file as is, inside the pool or not;
//! - a volume name in the host's storage pool (`jammy.qcow2`);
//! - an `https://` URL pinned by its sha256, written
//!   `https://host/jammy.qcow2#sha256=<64 hex>`. Such an image lives in the
//!   pool as [`url_volume_name`] (the hash in the name makes it immutable).
//!   The download itself — fetch to a temporary file, check it with
//!   [`verify_sha256_file`], upload into the pool under that name — is not
//!   built yet (no network on the machines this was written on); until it
//!   is, `create` refuses a URL image whose volume is not in the pool, and
//!   says which volume to put there. A URL without a sha256 is refused
//!   outright: an unpinned image would let whoever serves it change every
//!   runner.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    HostPath(String),
    PoolVolume(String),
    Url { url: String, sha256: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("image url {0} has no sha256: write it as <url>#sha256=<64 hex digits>")]
    UrlWithoutSha256(String),
    #[error("image url {0} must use https (plain http only on loopback)")]
    NotHttps(String),
    #[error("image sha256 {0:?} is not 64 hex digits")]
    BadSha256(String),
    #[error("image name {0:?} is neither an absolute path nor a plain volume name")]
    BadName(String),
    #[error("image {path}: sha256 is {actual}, expected {expected}")]
    Mismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("image {path}: {message}")]
    Io { path: String, message: String },
}

impl ImageSource {
    pub fn parse(image: &str) -> Result<ImageSource, ImageError> {
        if image.starts_with('/') {
            return Ok(ImageSource::HostPath(image.to_string()));
        }
        if image.contains("://") {
            let loopback_http = image
                .strip_prefix("http://")
                .and_then(|rest| url::Url::parse(&format!("http://{rest}")).ok())
                .and_then(|u| u.host_str().map(super::download::is_loopback))
                .unwrap_or(false);
            if !image.starts_with("https://") && !loopback_http {
                return Err(ImageError::NotHttps(image.to_string()));
            }
            let Some((url, fragment)) = image.split_once('#') else {
                return Err(ImageError::UrlWithoutSha256(image.to_string()));
            };
            let Some(sha) = fragment.strip_prefix("sha256=") else {
                return Err(ImageError::UrlWithoutSha256(image.to_string()));
            };
            let sha = sha.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ImageError::BadSha256(sha));
            }
            return Ok(ImageSource::Url {
                url: url.to_string(),
                sha256: sha,
            });
        }
        if image.is_empty() || image.contains('/') || image == "." || image == ".." {
            return Err(ImageError::BadName(image.to_string()));
        }
        Ok(ImageSource::PoolVolume(image.to_string()))
    }
}

/// The pool volume that holds a downloaded, verified URL image.
pub fn url_volume_name(sha256: &str) -> String {
    format!("hangar-image-{}.qcow2", &sha256[..16.min(sha256.len())])
}

/// Hash a file in fixed-size chunks (base images are gigabytes) and compare
/// with `expected` (hex, any case).
pub fn verify_sha256_file(path: &Path, expected: &str) -> Result<(), ImageError> {
    let io_err = |e: io::Error| ImageError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ImageError::Mismatch {
            path: path.display().to_string(),
            expected: expected.to_ascii_lowercase(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // sha256("abc")
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sources_are_told_apart() {
        assert_eq!(
            ImageSource::parse("/srv/base.qcow2").unwrap(),
            ImageSource::HostPath("/srv/base.qcow2".into())
        );
        assert_eq!(
            ImageSource::parse("base.qcow2").unwrap(),
            ImageSource::PoolVolume("base.qcow2".into())
        );
        let url = format!("https://example.com/b.qcow2#sha256={}", ABC.to_uppercase());
        assert_eq!(
            ImageSource::parse(&url).unwrap(),
            ImageSource::Url {
                url: "https://example.com/b.qcow2".into(),
                sha256: ABC.into()
            }
        );
    }

    #[test]
    fn unpinned_or_plain_http_urls_are_refused() {
        assert!(matches!(
            ImageSource::parse("https://example.com/b.qcow2"),
            Err(ImageError::UrlWithoutSha256(_))
        ));
        assert!(matches!(
            ImageSource::parse("https://example.com/b.qcow2#md5=00"),
            Err(ImageError::UrlWithoutSha256(_))
        ));
        assert!(matches!(
            ImageSource::parse("https://example.com/b.qcow2#sha256=abc"),
            Err(ImageError::BadSha256(_))
        ));
        assert!(matches!(
            ImageSource::parse(&format!("http://example.com/b#sha256={ABC}")),
            Err(ImageError::NotHttps(_))
        ));
        assert!(matches!(
            ImageSource::parse("sub/dir.qcow2"),
            Err(ImageError::BadName(_))
        ));
    }

    #[test]
    fn verification_streams_and_compares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"abc").unwrap();
        verify_sha256_file(&path, ABC).unwrap();
        verify_sha256_file(&path, &ABC.to_uppercase()).unwrap();
        let err = verify_sha256_file(&path, &"0".repeat(64)).unwrap_err();
        assert!(matches!(err, ImageError::Mismatch { ref actual, .. } if actual == ABC));
        // Larger than one read buffer: the chunks hash like the whole.
        let big: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &big).unwrap();
        let whole = hex::encode(Sha256::digest(&big));
        verify_sha256_file(&path, &whole).unwrap();
        assert!(matches!(
            verify_sha256_file(&dir.path().join("missing"), ABC),
            Err(ImageError::Io { .. })
        ));
    }

    #[test]
    fn url_volume_names_carry_the_hash() {
        assert_eq!(url_volume_name(ABC), "hangar-image-ba7816bf8f01cfea.qcow2");
    }
}
