//! Human units in the config: durations like `500ms`, `30s`, `10m` and sizes like `512M`.

use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::time::Duration;

/// A duration written `500ms`, `30s`, `5m`, `1h` (or `1m30s`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::checked::text(d, "a duration like `500ms`, `30s` or `5m`")
    }
}

impl TryFrom<String> for Dur {
    type Error = super::ValueError;
    fn try_from(s: String) -> Result<Self, super::ValueError> {
        humantime::parse_duration(s.trim()).map(Dur).map_err(|_| super::ValueError::Duration(s))
    }
}

/// A size in bytes written `512M`, `10M`, `1G`, `64K` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Option<Size> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(mult).map(Size)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like `512M`, `10M` or `1G`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                Size::parse(s).ok_or_else(|| {
                    E::custom(format_args!(
                        "invalid size `{s}`: write a number with a unit, like `512M`, `10M` or `1G`"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("512M"), Some(Size(512 << 20)));
        assert_eq!(Size::parse("10 MB"), Some(Size(10 << 20)));
        assert_eq!(Size::parse("1G"), Some(Size(1 << 30)));
        assert_eq!(Size::parse("100"), Some(Size(100)));
        assert_eq!(Size::parse("12X"), None);
        assert_eq!(Size::parse("M"), None);
    }
}
