//! Typed values of the run domain. Each is checked once, where the request enters (serde builds
//! them through `TryFrom`, so a refusal names the JSON field), and can then be stored as it is:
//! no NUL or other control character reaches PostgreSQL (which cannot store NUL in text and would
//! answer an error the client never caused).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier (work order, operation, resource, site, reason code), in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest downtime note, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Largest count one report or final counter may carry.
pub const MAX_COUNT: i64 = 1_000_000_000;
/// Largest duration in seconds (`planned_seconds`, `ideal_cycle_time_s`).
pub const MAX_SECONDS: f64 = 1e9;
/// The pattern an identifier matches, as the OpenAPI document states it: at least one visible
/// character, no control characters.
pub const ID_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*[^\s\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069][^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$";

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Why a value was refused; the caller adds the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// An identifier: 1 to [`MAX_ID_BYTES`] bytes, not only white space, no control characters and
/// no bidirectional overrides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ident(String);

impl Ident {
    pub fn parse(value: impl Into<String>) -> Result<Self, ValueError> {
        let value = value.into();
        if value.trim().is_empty() {
            return Err(ValueError("must not be empty".into()));
        }
        if value.len() > MAX_ID_BYTES {
            return Err(ValueError(format!("longer than {MAX_ID_BYTES} bytes")));
        }
        if value.chars().any(char::is_control) {
            return Err(ValueError("contains control characters".into()));
        }
        // Bidirectional overrides and isolates make an id display as another (SMT01 shown for
        // 10TMS): refused, as in source code (CVE-2021-42574).
        if value.chars().any(is_bidi_control) {
            return Err(ValueError(
                "contains bidirectional control characters".into(),
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Ident {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        Self::parse(value)
    }
}

impl From<Ident> for String {
    fn from(value: Ident) -> Self {
        value.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Free text of an operator (a downtime note): at most [`MAX_NOTE_BYTES`] bytes; line breaks and
/// tabs are text, every other control character (NUL among them) is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Note(String);

impl Note {
    pub fn parse(value: impl Into<String>) -> Result<Self, ValueError> {
        let value = value.into();
        if value.len() > MAX_NOTE_BYTES {
            return Err(ValueError(format!("longer than {MAX_NOTE_BYTES} bytes")));
        }
        if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ValueError(
                "contains control characters other than line breaks and tabs".into(),
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Note {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        Self::parse(value)
    }
}

impl From<Note> for String {
    fn from(value: Note) -> Self {
        value.0
    }
}

/// A count of units: 0 to [`MAX_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Count(i64);

impl Count {
    pub const ZERO: Count = Count(0);

    pub fn new(value: i64) -> Result<Self, ValueError> {
        if (0..=MAX_COUNT).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ValueError(format!(
                "must be between 0 and {MAX_COUNT}, got {value}"
            )))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Count {
    type Error = ValueError;
    fn try_from(value: i64) -> Result<Self, ValueError> {
        Self::new(value)
    }
}

impl From<Count> for i64 {
    fn from(value: Count) -> Self {
        value.0
    }
}

/// A duration in seconds, finite, 0 to [`MAX_SECONDS`] (`planned_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Seconds(f64);

impl Seconds {
    pub fn new(value: f64) -> Result<Self, ValueError> {
        if value.is_finite() && (0.0..=MAX_SECONDS).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ValueError(format!(
                "must be a finite number >= 0 and at most 1e9, got {value}"
            )))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Seconds {
    type Error = ValueError;
    fn try_from(value: f64) -> Result<Self, ValueError> {
        Self::new(value)
    }
}

impl From<Seconds> for f64 {
    fn from(value: Seconds) -> Self {
        value.0
    }
}

/// A cycle time in seconds, finite, above 0 and at most [`MAX_SECONDS`] (`ideal_cycle_time_s`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct CycleTime(f64);

impl CycleTime {
    pub fn new(value: f64) -> Result<Self, ValueError> {
        if value.is_finite() && value > 0.0 && value <= MAX_SECONDS {
            Ok(Self(value))
        } else {
            Err(ValueError(format!(
                "must be a finite number > 0 and at most 1e9, got {value}"
            )))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for CycleTime {
    type Error = ValueError;
    fn try_from(value: f64) -> Result<Self, ValueError> {
        Self::new(value)
    }
}

impl From<CycleTime> for f64 {
    fn from(value: CycleTime) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_postgresql_can_store() {
        assert!(Ident::parse("SMT01").is_ok());
        assert!(Ident::parse("Linie 3 / Presse ü").is_ok());
        assert!(Ident::parse("x".repeat(MAX_ID_BYTES)).is_ok());
        for bad in ["", "   ", "a\0b", "a\nb", "\u{7f}", "\u{9f}"] {
            assert!(Ident::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Ident::parse("x".repeat(MAX_ID_BYTES + 1)).is_err());
        // Serde refuses through the same rule, so a body with "\u0000" never reaches the store.
        assert!(serde_json::from_str::<Ident>(r#""a\u0000b""#).is_err());
        assert_eq!(
            serde_json::from_str::<Ident>(r#""WO1""#).unwrap().as_str(),
            "WO1"
        );
    }

    #[test]
    fn the_documented_pattern_agrees_with_the_rule() {
        let re = regex::Regex::new(ID_PATTERN).unwrap();
        let samples = [
            "SMT01",
            " a ",
            "Presse ü",
            "a b",
            "",
            "  ",
            "a\0",
            "\tx",
            "x\u{1f}",
            "\u{85}x",
            "\u{a0}",
            "\u{2003}",
            "x\u{7f}",
            "\u{202e}evil",
            "a\u{2066}b",
            "\u{200f}rtl-mark",
        ];
        for s in samples {
            assert_eq!(re.is_match(s), Ident::parse(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn notes_keep_line_breaks_and_refuse_nul() {
        assert!(Note::parse("feeder jam\nline 2\ttab").is_ok());
        assert!(Note::parse("").is_ok());
        assert!(Note::parse("a\0").is_err());
        assert!(Note::parse("a\u{1b}[31m").is_err());
        assert!(Note::parse("x".repeat(MAX_NOTE_BYTES + 1)).is_err());
    }

    #[test]
    fn counts_and_durations() {
        assert!(Count::new(0).is_ok() && Count::new(MAX_COUNT).is_ok());
        assert!(Count::new(-1).is_err() && Count::new(MAX_COUNT + 1).is_err());
        assert!(Seconds::new(0.0).is_ok() && Seconds::new(-0.5).is_err());
        assert!(Seconds::new(f64::NAN).is_err() && Seconds::new(2e9).is_err());
        assert!(CycleTime::new(0.0).is_err() && CycleTime::new(1.5).is_ok());
        assert!(CycleTime::new(f64::INFINITY).is_err());
    }
}
