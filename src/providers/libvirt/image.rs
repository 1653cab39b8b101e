//! Base images: where a VM's base image comes from, and how it is found
//! (or fetched) on the host.
//!
//! `vm.image` is one of:
//! - an absolute path on the host (`/var/lib/images/jammy.qcow2`): used as
//!   the overlay's backing file as is, inside the pool or not;
//! - a volume name in the host's storage pool (`jammy.qcow2`);
//! - an `https://` URL pinned by its sha256, written
//!   `https://host/jammy.qcow2#sha256=<64 hex>`. Such an image lives in the
//!   pool as [`url_volume_name`] (the hash in the name makes it immutable):
//!   fetched once by the machine running hangar, verified while it streams
//!   ([`super::download`]), and uploaded all or nothing. A URL without a
//!   sha256 is refused outright: an unpinned image would let whoever serves
//!   it change every runner.

use std::io::Read;

use virt::connect::Connect;
use virt::storage_pool::StoragePool;

use super::errors::optional;
use super::xml::{Backing, VolumeFormat, VolumeSpec};
use super::{download, Inner, LibvirtHost};
use crate::providers::{ErrorKind, ProviderError};

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

/// The base image an overlay is made on.
#[derive(Debug, Clone)]
pub(super) struct Base {
    pub backing: Backing,
    pub capacity_bytes: Option<u64>,
}

impl LibvirtHost {
    /// A URL base image in the pool as [`url_volume_name`]: downloaded here
    /// once, verified, and uploaded all or nothing
    /// ([`Inner::create_complete`]).
    pub(super) async fn ensure_url_image(
        &self,
        url: &str,
        sha256: &str,
    ) -> Result<(), ProviderError> {
        let _one = self.inner.fetching.lock().await;
        let name = url_volume_name(sha256);
        let n = name.clone();
        if self
            .blocking(move |i| i.complete_volume_present(&n))
            .await?
        {
            return Ok(());
        }
        let dir = std::env::temp_dir().join("hangar-images");
        tracing::info!(host = %self.inner.config.name, %url, "downloading base image");
        let got = download::fetch_verified(url, sha256, &dir)
            .await
            .map_err(|e| {
                let kind = match e {
                    download::DownloadError::Transient { .. } => ErrorKind::Transient,
                    download::DownloadError::Refused { .. } => ErrorKind::Refused,
                };
                ProviderError::new(&self.inner.config.name, kind, e.to_string())
            })?;
        let path = got.path.clone();
        let uploaded = self
            .blocking(move |i| {
                let _changing = i.changing();
                let (format, capacity) = match got.format {
                    download::ImageFormat::Qcow2 { virtual_size } => {
                        (VolumeFormat::Qcow2, virtual_size)
                    }
                    download::ImageFormat::Raw => (VolumeFormat::Raw, got.bytes),
                };
                let spec = VolumeSpec {
                    name,
                    capacity_bytes: capacity.max(got.bytes),
                    format,
                    backing: None,
                };
                let mut file = std::fs::File::open(&got.path).map_err(|e| {
                    i.err(ErrorKind::Refused, format!("{}: {e}", got.path.display()))
                })?;
                i.create_complete(&spec, got.bytes, &mut file)
            })
            .await;
        let _ = std::fs::remove_file(&path);
        uploaded
    }
}

impl Inner {
    pub(super) fn base_image(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        image: &str,
    ) -> Result<Base, ProviderError> {
        let source =
            ImageSource::parse(image).map_err(|e| self.err(ErrorKind::Refused, e.to_string()))?;
        let (vol, name) = match source {
            ImageSource::HostPath(path) => {
                if let Some(vol) = optional(self.call(&format!("look up image {path}"), || {
                    conn.lookup_storage_vol_by_path(&path)
                }))? {
                    (vol, path)
                } else {
                    return self.host_file_base(&path);
                }
            }
            ImageSource::PoolVolume(name) => match self.lookup_volume(pool, &name)? {
                Some(vol) => (vol, name),
                None => {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!(
                            "base image volume {name} is not in pool {}",
                            self.config.storage_pool
                        ),
                    ))
                }
            },
            ImageSource::Url { url, sha256 } => {
                let name = url_volume_name(&sha256);
                match self.lookup_volume(pool, &name)? {
                    Some(vol) => (vol, name),
                    None => {
                        return Err(self.err(
                            ErrorKind::Refused,
                            format!(
                                "image {url} is not in pool {} (volume {name}): its download \
                                 did not complete",
                                self.config.storage_pool
                            ),
                        ))
                    }
                }
            }
        };
        let facts = self.volume_facts(&vol, &name)?;
        let path = match facts.path {
            Some(p) => p,
            None => self.call(&format!("read path of {name}"), || vol.path())?,
        };
        let format = facts
            .format
            .as_deref()
            .and_then(VolumeFormat::parse)
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Refused,
                    format!("base image {name} is neither qcow2 nor raw"),
                )
            })?;
        Ok(Base {
            backing: Backing { path, format },
            capacity_bytes: facts.capacity_bytes,
        })
    }

    /// A base image outside every pool: only its path is known to libvirt.
    fn host_file_base(&self, path: &str) -> Result<Base, ProviderError> {
        let path = &self.image_in_dirs(path)?;
        // On a remote host the file cannot be probed from here; qcow2 is
        // what cloud images ship as.
        let format = if self.local {
            let mut magic = [0u8; 4];
            let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic));
            match read {
                Ok(()) if &magic == b"QFI\xfb" => VolumeFormat::Qcow2,
                Ok(()) => VolumeFormat::Raw,
                Err(e) => {
                    return Err(self.err(ErrorKind::Refused, format!("base image {path}: {e}")))
                }
            }
        } else {
            VolumeFormat::Qcow2
        };
        Ok(Base {
            backing: Backing {
                path: path.to_string(),
                format,
            },
            capacity_bytes: None,
        })
    }
}

impl Inner {
    /// A host path that is no pool's volume becomes a backing file only
    /// inside the host's `imageDirs`, so that the fleet file cannot hand a
    /// guest any host file (`/etc/shadow`). On this machine both sides are
    /// compared with symlinks resolved, and the resolved path is used; on
    /// a remote host, where nothing can be resolved from here, the path
    /// as written (validation made it normalized).
    fn image_in_dirs(&self, path: &str) -> Result<String, ProviderError> {
        let refused = |why: String| {
            self.err(
                ErrorKind::Refused,
                format!(
                    "vm.image {path}: {why}; a host path must be a volume of a storage pool                      or inside one of the host's imageDirs"
                ),
            )
        };
        let resolve = |p: &std::path::Path| -> Result<std::path::PathBuf, ProviderError> {
            if self.local {
                std::fs::canonicalize(p)
                    .map_err(|e| refused(format!("cannot resolve {}: {e}", p.display())))
            } else {
                Ok(p.to_path_buf())
            }
        };
        let resolved = resolve(std::path::Path::new(path))?;
        for dir in &self.config.image_dirs {
            let Ok(dir) = resolve(dir) else { continue };
            if resolved.starts_with(&dir) {
                return Ok(resolved.display().to_string());
            }
        }
        Err(refused(format!(
            "{} is in no imageDirs ({})",
            resolved.display(),
            if self.config.image_dirs.is_empty() {
                "none are set".to_string()
            } else {
                self.config
                    .image_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )))
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
    fn url_volume_names_carry_the_hash() {
        assert_eq!(url_volume_name(ABC), "hangar-image-ba7816bf8f01cfea.qcow2");
    }
}
