//! A small stand-in for a runner release asset: a gzip'd POSIX tar holding
//! a fake actions/runner (the e2e image's `config.sh` and `run.sh`, which
//! print what they are given and take one job). Deterministic for a given
//! version, so its SHA-256 is stable across simulator restarts.

/// The fake runner's files: (path in the tarball, mode, contents).
fn fake_runner(version: &str) -> Vec<(String, u32, Vec<u8>)> {
    vec![
        (
            "config.sh".into(),
            0o755,
            include_bytes!("../../tests/e2e/runner/config.sh").to_vec(),
        ),
        (
            "run.sh".into(),
            0o755,
            include_bytes!("../../tests/e2e/runner/run.sh").to_vec(),
        ),
        (
            "bin/runner-version".into(),
            0o644,
            format!("{version}\n").into_bytes(),
        ),
    ]
}

/// `actions-runner-linux-<arch>-<version>.tar.gz` of the fake runner.
pub fn fake_runner_tarball(version: &str, arch: &str) -> Vec<u8> {
    let mut files = fake_runner(version);
    files.push((
        "bin/runner-arch".into(),
        0o644,
        format!("{arch}\n").into_bytes(),
    ));
    gzip(&tar(&files))
}

/// A ustar archive of regular files (owner 0:0, mtime 0).
fn tar(files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, mode, data) in files {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{:0width$o}\0", value, width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut h[100..108], u64::from(*mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 0);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field read as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    // Two zero blocks end the archive.
    out.resize(out.len() + 1024, 0);
    out
}

/// RFC 1952: header (no name, mtime 0), raw deflate, CRC-32, size.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn tarball_is_deterministic_and_inflates_to_the_tar() {
        let a = fake_runner_tarball("2.331.0", "x64");
        assert_eq!(a, fake_runner_tarball("2.331.0", "x64"));
        assert_ne!(a, fake_runner_tarball("2.331.0", "arm64"));
        let body = &a[10..a.len() - 8];
        let tar = miniz_oxide::inflate::decompress_to_vec(body).unwrap();
        assert_eq!(&tar[..9], b"config.sh");
        assert_eq!(&tar[257..262], b"ustar");
        assert_eq!(tar.len() % 512, 0);
    }
}
