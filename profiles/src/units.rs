//! Human-readable units used by profile keys: durations (`500ms`), byte sizes
//! (`10MB`) and CPU shares (`100m`).
//!
//! Each type parses from the string a user writes and serializes back to the
//! shortest exact string, so that `engine profiles show` output loads back to
//! the same profile.
//!
//! # Sizes are binary
//! `KB`, `MB`, `GB` and `TB` are powers of two (2^10, 2^20, 2^30, 2^40), as
//! are their IEC spellings `KiB`, `MiB`, `GiB`, `TiB`. Memory limits are what
//! these keys mostly set, and memory is counted in powers of two (a WebAssembly
//! page is 64 KiB), so `agent_stack_size: 512KB` means 524,288 bytes. A bare
//! number is a count of bytes.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span of time written as `100ms`, `1s`, `2m`, `1h` or a combination (`1m 30s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// A duration of `seconds` seconds.
    pub const fn from_secs(seconds: u64) -> Self {
        Self(std::time::Duration::from_secs(seconds))
    }

    /// A duration of `micros` microseconds.
    pub const fn from_micros(micros: u64) -> Self {
        Self(std::time::Duration::from_micros(micros))
    }

    /// The wrapped standard duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(Self)
            .map_err(|error| {
                format!("`{text}` is not a duration ({error}); write it like `500ms`, `2s` or `1h`")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return formatter.write_str("0s");
        }
        // humantime writes `1m 30s`; strip the spaces so the value stays one YAML word.
        let text = humantime::format_duration(self.0)
            .to_string()
            .replace(' ', "");
        formatter.write_str(&text)
    }
}

/// A number of bytes written as `512KB`, `10MB`, `2GiB` or a bare count. See
/// the module docs: every multiple is a power of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const BYTE_UNITS: [(&str, &str, u64); 4] = [
    ("TB", "TiB", 1 << 40),
    ("GB", "GiB", 1 << 30),
    ("MB", "MiB", 1 << 20),
    ("KB", "KiB", 1 << 10),
];

impl ByteSize {
    /// `count` mebibytes (2^20 bytes each).
    pub const fn mib(count: u64) -> Self {
        Self(count << 20)
    }

    /// `count` kibibytes (2^10 bytes each).
    pub const fn kib(count: u64) -> Self {
        Self(count << 10)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let unit = unit.trim();
        let bad = || {
            // A fraction is the likely slip: say so rather than "not a size".
            let fraction = if unit.starts_with('.') {
                "; sizes are whole numbers of a unit: write `1536KB` for 1.5MB"
            } else {
                ""
            };
            format!(
                "`{text}` is not a size; write it like `512KB`, `10MB` or `1GiB` (KB = 1024 bytes){fraction}"
            )
        };
        let count: u64 = digits.parse().map_err(|_| bad())?;
        let multiplier = if unit.is_empty() || unit.eq_ignore_ascii_case("B") {
            1
        } else {
            BYTE_UNITS
                .iter()
                .find(|(short, iec, _)| {
                    unit.eq_ignore_ascii_case(short) || unit.eq_ignore_ascii_case(iec)
                })
                .map(|&(_, _, multiplier)| multiplier)
                .ok_or_else(bad)?
        };
        count
            .checked_mul(multiplier)
            .map(Self)
            .ok_or_else(|| format!("`{text}` is too large to count in bytes"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (short, _, multiplier) in BYTE_UNITS {
            if self.0 != 0 && self.0.is_multiple_of(multiplier) {
                return write!(formatter, "{}{short}", self.0 / multiplier);
            }
        }
        write!(formatter, "{}B", self.0)
    }
}

/// A share of one CPU core in millicores, written as `100m` (a tenth of a core)
/// or as a number of cores (`1`, `0.5`), as Kubernetes does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuShares(pub u32);

impl CpuShares {
    /// One whole core.
    pub const ONE_CORE: Self = Self(1000);

    /// The share in thousandths of a core.
    pub const fn millicores(self) -> u32 {
        self.0
    }
}

impl FromStr for CpuShares {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let bad = || {
            format!("`{text}` is not a CPU share; write millicores like `100m` or cores like `0.5`")
        };
        if let Some(millis) = trimmed.strip_suffix('m') {
            return millis.parse::<u32>().map(Self).map_err(|_| bad());
        }
        let cores: f64 = trimmed.parse().map_err(|_| bad())?;
        if !(cores.is_finite() && cores >= 0.0 && cores <= f64::from(u32::MAX) / 1000.0) {
            return Err(bad());
        }
        Ok(Self((cores * 1000.0).round() as u32))
    }
}

impl fmt::Display for CpuShares {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}m", self.0)
    }
}

/// Serialize and deserialize a unit type through its `Display` and `FromStr`.
/// Deserialization also accepts a bare integer (bytes, cores, or seconds).
macro_rules! string_unit_serde {
    ($type:ty, $expecting:literal) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct UnitVisitor;
                impl Visitor<'_> for UnitVisitor {
                    type Value = $type;
                    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                        formatter.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                        text.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
                        self.visit_str(&number.to_string())
                    }
                    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
                        self.visit_str(&number.to_string())
                    }
                    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Self::Value, E> {
                        self.visit_str(&number.to_string())
                    }
                }
                deserializer.deserialize_any(UnitVisitor)
            }
        }
    };
}

string_unit_serde!(HumanDuration, "a duration such as `500ms` or `2s`");
string_unit_serde!(ByteSize, "a size such as `512KB` or `10MB`");
string_unit_serde!(CpuShares, "a CPU share such as `100m`");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        for (text, millis) in [
            ("500ms", 500),
            ("1s", 1000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("300s", 300_000),
        ] {
            let parsed: HumanDuration = text.parse().expect("valid duration");
            assert_eq!(parsed.get().as_millis(), millis, "{text}");
            let printed = parsed.to_string();
            assert_eq!(
                printed
                    .parse::<HumanDuration>()
                    .expect("printed form parses"),
                parsed
            );
        }
        assert_eq!(HumanDuration::from_millis(90_000).to_string(), "1m30s");
        assert!("fast".parse::<HumanDuration>().is_err());
        assert!("10".parse::<HumanDuration>().is_err(), "a unit is required");
    }

    #[test]
    fn sizes_are_powers_of_two() {
        assert_eq!(
            "10MB".parse::<ByteSize>().expect("size").bytes(),
            10 * 1024 * 1024
        );
        assert_eq!(
            "10MiB".parse::<ByteSize>().expect("size").bytes(),
            10 * 1024 * 1024
        );
        assert_eq!(
            "512KB".parse::<ByteSize>().expect("size").bytes(),
            512 * 1024
        );
        assert_eq!("1gb".parse::<ByteSize>().expect("size").bytes(), 1 << 30);
        assert_eq!("4096".parse::<ByteSize>().expect("size").bytes(), 4096);
        assert_eq!(ByteSize::kib(1536).to_string(), "1536KB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert!("10 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999TB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn cpu_shares_accept_millicores_and_cores() {
        assert_eq!(
            "100m".parse::<CpuShares>().expect("share").millicores(),
            100
        );
        assert_eq!("1".parse::<CpuShares>().expect("share").millicores(), 1000);
        assert_eq!(
            "0.25".parse::<CpuShares>().expect("share").millicores(),
            250
        );
        assert!("-1".parse::<CpuShares>().is_err());
        assert!("lots".parse::<CpuShares>().is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_size_round_trips(bytes in 0u64..(1 << 50)) {
            let size = ByteSize(bytes);
            proptest::prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }

        #[test]
        fn any_duration_round_trips(millis in 0u64..10_000_000_000) {
            let duration = HumanDuration::from_millis(millis);
            proptest::prop_assert_eq!(duration.to_string().parse::<HumanDuration>(), Ok(duration));
        }
    }
}
