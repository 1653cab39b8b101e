//! The NoCloud seed: an ISO9660 image labelled `CIDATA` holding `user-data`
//! and `meta-data` for cloud-init, and the runner's credential in a file of
//! its own that only hangar's guest scripts read, built in memory. Rock Ridge and Joliet carry the
//! lowercase, hyphenated names cloud-init looks for.

use std::io::Cursor;
use std::sync::Arc;

use hadris_iso::read::PathSeparator;
use hadris_iso::write::options::{CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{File as IsoFile, InputFiles, IsoImageWriter};

use crate::model::names::SEED_CREDENTIAL_FILE;
use crate::providers::Seed;

/// The volume label cloud-init's NoCloud datasource looks for.
pub const SEED_LABEL: &str = "CIDATA";

/// The seed image's bytes. They contain the credential (a secret): hand
/// them only to the seed volume.
pub fn seed_iso(seed: &Seed) -> Result<Vec<u8>, String> {
    let files = InputFiles {
        path_separator: PathSeparator::ForwardSlash,
        files: vec![
            IsoFile::File {
                name: Arc::new("user-data".to_string()),
                contents: seed.user_data.as_bytes().to_vec(),
            },
            IsoFile::File {
                name: Arc::new(SEED_CREDENTIAL_FILE.to_string()),
                contents: seed.credential.expose().as_bytes().to_vec(),
            },
            IsoFile::File {
                name: Arc::new("meta-data".to_string()),
                contents: seed.meta_data.as_bytes().to_vec(),
            },
        ],
    };
    let options = IsoFormatOptions {
        volume_name: SEED_LABEL.to_string(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: None,
        sector_size: 2048,
        features: CreationFeatures::extensions(),
        path_separator: PathSeparator::ForwardSlash,
        strict_charset: false,
    };
    let out = IsoImageWriter::create(Cursor::new(Vec::new()), files, options)
        // The library's error may quote file names, never contents.
        .map_err(|e| format!("seed image: {e}"))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn seed_is_a_cidata_iso_with_the_cloud_init_files_and_the_credential() {
        let seed = Seed {
            user_data: "#cloud-config\nusers: []\n".to_string(),
            meta_data: "instance-id: ci-linux-0-g1\nlocal-hostname: ci-linux-0\n".into(),
            credential: Secret::new("jit-config-canary".to_string()),
        };
        let iso = seed_iso(&seed).unwrap();
        assert_eq!(iso.len() % 2048, 0);
        // Primary volume descriptor at sector 16: type 1, "CD001", label at 40.
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!(&pvd[0..6], b"\x01CD001");
        assert_eq!(
            std::str::from_utf8(&pvd[40..72]).unwrap().trim_end(),
            "CIDATA"
        );
        let find = |needle: &[u8]| iso.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"#cloud-config\nusers: []\n"));
        assert!(find(b"instance-id: ci-linux-0-g1"));
        assert!(find(b"jit-config-canary"));
        // Rock Ridge names (NM entries) keep the exact lowercase file names.
        assert!(find(b"user-data"));
        assert!(find(b"meta-data"));
        assert!(find(SEED_CREDENTIAL_FILE.as_bytes()));
    }
}
