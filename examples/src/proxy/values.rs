//! Config values that validate themselves while the file is read, so that a bad value's error
//! carries its place in the file: durations, socket addresses, identities, and any library type
//! parsed by its own `FromStr` ([`Parsed`]: authorization patterns, header names).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use mesh_core::Identity;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit: `250ms`, `5s`, `2m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| {
                format!("duration {s:?} has no unit (write e.g. \"250ms\" or \"5s\")")
            })?;
        let (number, unit) = s.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("duration {s:?} does not start with a number"))?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "duration {s:?} has unknown unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        Duration::try_from_secs_f64(value * scale)
            .map(Dur)
            .map_err(|_| format!("duration {s:?} is out of range"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// An address to listen on or connect to, `ip:port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Addr).map_err(|_| {
            format!("{s:?} is not an address of the form ip:port (e.g. \"127.0.0.1:4140\")")
        })
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A workload identity (SPIFFE ID or DNS name), checked as it is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Id(pub Identity);

impl FromStr for Id {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Identity::parse(s)
            .map(Id)
            .map_err(|e| format!("{s:?} is not a workload identity: {e}"))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A value parsed by its library type's own `FromStr` (an authorization pattern, a header
/// name), so the check is the library's and the error carries the place in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<T>(pub T);

impl<T: FromStr<Err: fmt::Display>> FromStr for Parsed<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Parsed).map_err(|e| format!("{s:?}: {e}"))
    }
}

impl<T: fmt::Display> fmt::Display for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de, T: FromStr<Err: fmt::Display>> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl<T: fmt::Display> Serialize for Parsed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads and writes each of these types as its string form.
macro_rules! string_form {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(D::Error::custom)
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}

string_form!(Dur, Addr, Id);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!("250ms".parse::<Dur>(), Ok(Dur(Duration::from_millis(250))));
        assert_eq!("1.5s".parse::<Dur>(), Ok(Dur(Duration::from_millis(1500))));
        assert_eq!("2m".parse::<Dur>(), Ok(Dur(Duration::from_secs(120))));
        assert!("5".parse::<Dur>().expect_err("refused").contains("no unit"));
        assert!(
            "5 parsecs"
                .parse::<Dur>()
                .expect_err("refused")
                .contains("unknown unit")
        );
        assert!("ms".parse::<Dur>().expect_err("refused").contains("number"));
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
    }

    #[test]
    fn addresses_and_identities_are_checked() {
        assert!("127.0.0.1:80".parse::<Addr>().is_ok());
        assert!(
            "localhost"
                .parse::<Addr>()
                .expect_err("refused")
                .contains("ip:port")
        );
        assert!("spiffe://mesh.local/ns/a/sa/b".parse::<Id>().is_ok());
        assert!("spiffe://".parse::<Id>().is_err());
    }
}
