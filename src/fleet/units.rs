//! Strict scalar types of the fleet file: sizes, percentages, durations.
//!
//! Each parses from exactly one spelling, so that `64GiB` in the file means
//! one number and a typo is an error rather than a guess. They serialize back
//! to their canonical string and describe themselves in the JSON Schema with
//! the same `pattern` the parser enforces.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Binary units, largest first: the canonical spelling uses the largest unit
/// that divides the value exactly.
const UNITS: [(&str, u64); 4] = [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)];

pub(crate) const BYTE_SIZE_PATTERN: &str = r"^[0-9]+(KiB|MiB|GiB|TiB)?$";
pub(crate) const PERCENT_PATTERN: &str = r"^[0-9]+(\.[0-9]{1,2})?%$";
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$";

/// Why a scalar did not parse. The message names the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// A number of bytes: digits, optionally followed by one binary unit
/// (`KiB`, `MiB`, `GiB`, `TiB`), with nothing in between or around:
/// `64GiB`, `512MiB`, `1048576`. Decimal units (`GB`), fractions (`1.5GiB`)
/// and spaces are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n * GIB)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n * MIB)
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            UnitError(format!(
                "invalid size `{}`: expected digits with an optional binary unit KiB, MiB, GiB or TiB (e.g. 64GiB, 512MiB, 1048576)",
                s.escape_debug()
            ))
        };
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(digits_end);
        if digits.is_empty() {
            return Err(bad());
        }
        let multiplier = match unit {
            "" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            "TiB" => TIB,
            _ => return Err(bad()),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| UnitError(format!("size `{s}` is too large")))?;
        n.checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| UnitError(format!("size `{s}` is too large")))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{}", self.0 / size, name);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// For messages: a size rounded to one decimal in the largest fitting unit
/// (`17.9GiB`), which unlike `Display` need not round-trip.
pub fn human_bytes(bytes: u64) -> String {
    for (name, size) in UNITS {
        if bytes >= size {
            if bytes.is_multiple_of(size) {
                return format!("{}{}", bytes / size, name);
            }
            return format!("{:.1}{}", bytes as f64 / size as f64, name);
        }
    }
    format!("{bytes}B")
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 64GiB, 512MiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size `{v}`: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: digits with an optional binary unit KiB, MiB, GiB or TiB, nothing else (64GiB, 512MiB, 1048576).",
            "anyOf": [
                { "type": "string", "pattern": BYTE_SIZE_PATTERN },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

/// A percentage with up to two decimals: `18%`, `12.5%`. Held in hundredths
/// of a percent so that arithmetic on it is exact. The range a field accepts
/// (e.g. more than 0, at most 100) is checked by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent {
    hundredths: u32,
}

impl Percent {
    pub const fn from_hundredths(hundredths: u32) -> Self {
        Percent { hundredths }
    }

    pub const fn whole(percent: u32) -> Self {
        Percent {
            hundredths: percent * 100,
        }
    }

    /// Hundredths of a percent: `18%` is 1800.
    pub fn hundredths(self) -> u32 {
        self.hundredths
    }

    /// Whether 0 < self ≤ 100.
    pub fn is_fraction(self) -> bool {
        self.hundredths > 0 && self.hundredths <= 100 * 100
    }

    /// `self` of `total`, rounded down.
    pub fn of(self, total: u64) -> u64 {
        (u128::from(total) * u128::from(self.hundredths) / 10_000) as u64
    }
}

impl FromStr for Percent {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            UnitError(format!(
                "invalid percentage `{}`: expected a number with at most two decimals followed by `%` (e.g. 18%, 12.5%)",
                s.escape_debug()
            ))
        };
        let number = s.strip_suffix('%').ok_or_else(bad)?;
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(frac)
            || frac.len() > 2
            || (number.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let whole: u32 = whole
            .parse()
            .ok()
            .filter(|w| *w <= 1_000_000)
            .ok_or_else(|| UnitError(format!("percentage `{s}` is too large")))?;
        let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        Ok(Percent {
            hundredths: whole * 100 + frac,
        })
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.hundredths / 100, self.hundredths % 100);
        match frac {
            0 => write!(f, "{whole}%"),
            f2 if f2 % 10 == 0 => write!(f, "{whole}.{}%", f2 / 10),
            f2 => write!(f, "{whole}.{f2:02}%"),
        }
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a percentage such as 80%")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Percent, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A percentage with at most two decimals, followed by `%` (80%, 12.5%).",
            "type": "string",
            "pattern": PERCENT_PATTERN
        })
    }
}

/// Memory of a VM or a host budget: a share of the host's memory (`18%`,
/// more than 0 and at most 100) or an absolute size (`6GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemorySpec {
    Percent(Percent),
    Size(ByteSize),
}

impl MemorySpec {
    /// Absolute bytes on a host with `host_memory` bytes; a share is floored
    /// to whole MiB so that the same file on the same host always gives the
    /// same VM.
    pub fn bytes_on(self, host_memory: u64) -> u64 {
        match self {
            MemorySpec::Size(size) => size.bytes(),
            MemorySpec::Percent(p) => p.of(host_memory) / MIB * MIB,
        }
    }
}

impl FromStr for MemorySpec {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.ends_with('%') {
            s.parse().map(MemorySpec::Percent)
        } else {
            s.parse().map(MemorySpec::Size).map_err(|_| {
                UnitError(format!(
                    "invalid memory `{}`: expected a share of the host's memory like 18% or a size like 6GiB",
                    s.escape_debug()
                ))
            })
        }
    }
}

impl fmt::Display for MemorySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemorySpec::Percent(p) => p.fmt(f),
            MemorySpec::Size(s) => s.fmt(f),
        }
    }
}

impl Serialize for MemorySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemorySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MemorySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a share of host memory like 18% or a size like 6GiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MemorySpec, E> {
                Ok(MemorySpec::Size(ByteSize(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MemorySpec, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for MemorySpec {
    fn schema_name() -> Cow<'static, str> {
        "MemorySpec".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A share of the host's memory (18%, more than 0 and at most 100) or an absolute size with a binary unit (6GiB).",
            "anyOf": [
                { "type": "string", "pattern": PERCENT_PATTERN },
                { "type": "string", "pattern": BYTE_SIZE_PATTERN },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

/// A span of time: one or more `<digits><unit>` groups, units `d`, `h`, `m`,
/// `s` in that order, each at most once: `90s`, `15m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub fn std(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            UnitError(format!(
                "invalid duration `{}`: expected groups of digits with a unit d, h, m or s, largest first (e.g. 90s, 15m, 1h30m)",
                s.escape_debug()
            ))
        };
        const UNIT_SECS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
        let mut rest = s;
        let mut next_unit = 0;
        let mut total: u64 = 0;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if end == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..end].parse().map_err(|_| bad())?;
            let unit = rest[end..].chars().next().ok_or_else(bad)?;
            let pos = UNIT_SECS[next_unit..]
                .iter()
                .position(|(u, _)| *u == unit)
                .ok_or_else(bad)?;
            let secs = UNIT_SECS[next_unit + pos].1;
            next_unit += pos + 1;
            total = n
                .checked_mul(secs)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| UnitError(format!("duration `{s}` is too long")))?;
            rest = &rest[end + unit.len_utf8()..];
        }
        Ok(Duration::secs(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{}", secs / size, unit)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 90s, 15m or 1h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: digits with a unit d, h, m or s, largest first, each unit at most once (90s, 15m, 1h30m).",
            "type": "string",
            "pattern": DURATION_PATTERN,
            "minLength": 2
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_only_their_documented_spellings() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1048576", Some(MIB)),
            ("1KiB", Some(KIB)),
            ("512MiB", Some(512 * MIB)),
            ("64GiB", Some(64 * GIB)),
            ("2TiB", Some(2 * TIB)),
            ("1.5GiB", None),
            ("1.5GB", None),
            ("10GB", None),
            ("10G", None),
            ("10gib", None),
            ("10 GiB", None),
            (" 10GiB", None),
            ("10GiB ", None),
            ("GiB", None),
            ("", None),
            ("-1GiB", None),
            ("+1GiB", None),
            ("1GiBGiB", None),
            ("99999999999TiB", None),
            ("18446744073709551616", None),
        ];
        for (text, want) in cases {
            let got = text.parse::<ByteSize>().ok().map(ByteSize::bytes);
            assert_eq!(got, *want, "parsing {text:?}");
        }
    }

    #[test]
    fn byte_size_display_round_trips_in_the_largest_exact_unit() {
        for (bytes, text) in [
            (0, "0"),
            (1000, "1000"),
            (KIB, "1KiB"),
            (1536 * MIB, "1536MiB"),
            (64 * GIB, "64GiB"),
            (TIB, "1TiB"),
        ] {
            assert_eq!(ByteSize(bytes).to_string(), text);
            assert_eq!(text.parse::<ByteSize>().unwrap().bytes(), bytes);
        }
    }

    #[test]
    fn percents_parse_with_at_most_two_decimals() {
        let cases: &[(&str, Option<u32>)] = &[
            ("18%", Some(1800)),
            ("0%", Some(0)),
            ("100%", Some(10_000)),
            ("12.5%", Some(1250)),
            ("12.05%", Some(1205)),
            ("150%", Some(15_000)),
            ("12.%", None),
            (".5%", None),
            ("12.345%", None),
            ("18", None),
            ("18 %", None),
            ("-5%", None),
            ("%", None),
            ("1e2%", None),
        ];
        for (text, want) in cases {
            let got = text.parse::<Percent>().ok().map(Percent::hundredths);
            assert_eq!(got, *want, "parsing {text:?}");
        }
        assert_eq!(Percent::from_hundredths(1250).to_string(), "12.5%");
        assert_eq!(Percent::from_hundredths(1205).to_string(), "12.05%");
        assert_eq!(Percent::whole(80).to_string(), "80%");
    }

    #[test]
    fn memory_share_is_floored_to_whole_mib() {
        let host = 64 * GIB + 123_456;
        let m: MemorySpec = "18%".parse().unwrap();
        let bytes = m.bytes_on(host);
        assert_eq!(bytes % MIB, 0);
        assert_eq!(
            bytes,
            (host as f64 * 0.18 / MIB as f64).floor() as u64 * MIB
        );
        let abs: MemorySpec = "6GiB".parse().unwrap();
        assert_eq!(abs.bytes_on(host), 6 * GIB);
        assert!("6GB".parse::<MemorySpec>().is_err());
        assert!("18.123%".parse::<MemorySpec>().is_err());
    }

    #[test]
    fn durations_parse_units_largest_first() {
        let cases: &[(&str, Option<u64>)] = &[
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("1h", Some(3600)),
            ("2d", Some(172_800)),
            ("1h30m", Some(5400)),
            ("1d2h3m4s", Some(93_784)),
            ("0s", Some(0)),
            ("30m1h", None),
            ("1h1h", None),
            ("90", None),
            ("", None),
            ("1.5h", None),
            ("1 h", None),
            ("h", None),
            ("1w", None),
            ("1H", None),
            ("99999999999999999999s", None),
        ];
        for (text, want) in cases {
            let got = text.parse::<Duration>().ok().map(|d| d.0.as_secs());
            assert_eq!(got, *want, "parsing {text:?}");
        }
        assert_eq!(Duration::secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::secs(90).to_string(), "1m30s");
    }
}
