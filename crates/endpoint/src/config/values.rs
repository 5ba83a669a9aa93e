//! Value types of the config file that carry their own syntax: durations and walltimes.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as whole seconds (`30`) or with a unit (`"30s"`, `"2m"`, `"1h 30m"`),
/// as Globus Compute's integer seconds and Ferry's own strings both appear in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

impl Seconds {
    pub const fn secs(n: u64) -> Self {
        Self(Duration::from_secs(n))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected whole seconds (30) or a duration with a unit (\"30s\", \"2m\")",
            )
        })? {
            Raw::Int(n) => Ok(Self(Duration::from_secs(n))),
            Raw::Text(s) => humantime::parse_duration(s.trim()).map(Self).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); write e.g. \"30s\", \"2m\" or whole seconds"
                ))
            }),
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// How long a block may run, as batch schedulers write it: `"HH:MM:SS"` (hours may pass
/// 24), `"D-HH:MM:SS"`, `"MM:SS"`, or with a unit (`"30m"`, `"2h"`). Kept to the second;
/// a scheduler with coarser steps (Slurm counts minutes) gets it rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Walltime(pub Duration);

impl Walltime {
    /// Parses the forms above.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a walltime: write \"HH:MM:SS\", \"D-HH:MM:SS\" or a duration such as \"30m\""
            )
        };
        if text.contains(':') {
            let (days, clock) = match text.split_once('-') {
                Some((d, rest)) => (d.parse::<u64>().map_err(|_| bad())?, rest),
                None => (0, text),
            };
            let parts: Vec<&str> = clock.split(':').collect();
            let numbers: Vec<u64> = parts
                .iter()
                .map(|p| {
                    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                        Err(bad())
                    } else {
                        p.parse::<u64>().map_err(|_| bad())
                    }
                })
                .collect::<Result<_, _>>()?;
            let (h, m, s) = match numbers[..] {
                [h, m, s] => (h, m, s),
                [m, s] if days == 0 => (0, m, s),
                _ => return Err(bad()),
            };
            if m >= 60 || s >= 60 {
                return Err(bad());
            }
            let secs = ((days * 24 + h) * 60 + m) * 60 + s;
            return Self::positive(secs, text);
        }
        let d = humantime::parse_duration(text).map_err(|_| bad())?;
        Self::positive(d.as_secs(), text)
    }

    fn positive(secs: u64, text: &str) -> Result<Self, String> {
        if secs == 0 {
            return Err(format!("{text:?}: a walltime must be longer than zero"));
        }
        Ok(Self(Duration::from_secs(secs)))
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// `HH:MM:SS`, hours past 24 allowed (what PBS takes).
    pub fn clock(self) -> String {
        let s = self.as_secs();
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }

    /// `D-HH:MM:SS`, rounded up to whole minutes (what Slurm takes: it counts minutes).
    pub fn slurm(self) -> String {
        let minutes = self.as_secs().div_ceil(60);
        let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
        if d > 0 {
            format!("{d}-{h:02}:{m:02}:00")
        } else {
            format!("{h:02}:{m:02}:00")
        }
    }
}

impl fmt::Display for Walltime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.clock())
    }
}

impl<'de> Deserialize<'de> for Walltime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Walltime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.clock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walltimes_parse_in_every_scheduler_form() {
        let secs = |t: &str| Walltime::parse(t).unwrap().as_secs();
        assert_eq!(secs("00:30:00"), 1800);
        assert_eq!(secs("48:00:00"), 48 * 3600);
        assert_eq!(secs("1-02:03:04"), 86400 + 2 * 3600 + 3 * 60 + 4);
        assert_eq!(secs("10:30"), 630);
        assert_eq!(secs("90m"), 5400);
        assert_eq!(secs("2h"), 7200);
    }

    #[test]
    fn a_bad_walltime_says_what_is_accepted() {
        for bad in [
            "", "0:00:00", "1:61:00", "a:b:c", "1-30:00", "1:2:3:4", "-1:00:00", "soon",
        ] {
            let err = Walltime::parse(bad).unwrap_err();
            assert!(err.contains("walltime"), "{bad}: {err}");
        }
    }

    #[test]
    fn slurm_gets_whole_minutes_and_pbs_the_clock() {
        let w = Walltime::parse("00:00:30").unwrap();
        assert_eq!((w.slurm(), w.clock()), ("00:01:00".into(), "00:00:30".into()));
        let w = Walltime::parse("49:00:01").unwrap();
        assert_eq!((w.slurm(), w.clock()), ("2-01:01:00".into(), "49:00:01".into()));
    }

    #[test]
    fn seconds_take_integers_and_units() {
        #[derive(Deserialize)]
        struct S {
            a: Seconds,
            b: Seconds,
        }
        let s: S = toml::from_str("a = 30\nb = \"2m\"").unwrap();
        assert_eq!((s.a.0.as_secs(), s.b.0.as_secs()), (30, 120));
        let err = toml::from_str::<S>("a = \"soon\"\nb = 1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("soon"), "{err}");
    }
}
