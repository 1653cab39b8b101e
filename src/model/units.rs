//! The one way hangar writes a size and a duration in its output.

/// `45s`, `15m`, `1h30m`, `2d3h`: at most two units, the larger ones. The
/// one duration format of hangar's output.
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (big, small, units) = match s {
        0..60 => return format!("{s}s"),
        60..3600 => (s / 60, s % 60, ("m", "s")),
        3600..86400 => (s / 3600, s / 60 % 60, ("h", "m")),
        _ => (s / 86400, s / 3600 % 24, ("d", "h")),
    };
    if small == 0 {
        format!("{big}{}", units.0)
    } else {
        format!("{big}{}{small}{}", units.0, units.1)
    }
}

/// `512MiB`, `6GiB`, `17.9GiB`, `100B`: a size as the fleet file writes it
/// when it is a whole number of the largest unit that fits, else with one
/// decimal. The one byte format of hangar's output.
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if n >= size {
            if n.is_multiple_of(size) {
                return format!("{}{name}", n / size);
            }
            return format!("{:.1}{name}", n as f64 / size as f64);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{bytes, duration};

    #[test]
    fn sizes_read_as_the_file_writes_them() {
        assert_eq!(bytes(100), "100B");
        assert_eq!(bytes(512 << 20), "512MiB");
        assert_eq!(bytes(6 << 30), "6GiB");
        assert_eq!(bytes((17 << 30) + (900 << 20)), "17.9GiB");
    }

    #[test]
    fn durations_are_compact() {
        let d = |s| duration(Duration::from_secs(s));
        assert_eq!(d(0), "0s");
        assert_eq!(d(45), "45s");
        assert_eq!(d(900), "15m");
        assert_eq!(d(125), "2m5s");
        assert_eq!(d(3 * 3600 + 65), "3h1m");
        assert_eq!(d(2 * 86400 + 7200), "2d2h");
    }
}
