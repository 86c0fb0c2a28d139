//! Money as integer fen (分). Never a float anywhere near an amount.
//!
//! WeChat Pay APIs carry amounts as integer fen (`total_fee=1` is ¥0.01); bills carry yuan strings
//! with two decimals. [`Fen::parse_yuan`] converts those exactly, by decimal string arithmetic: the
//! classic `int(float("0.29") * 100)` gives 28, this gives 29.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of Chinese yuan in fen (1/100 yuan), signed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fen(i64);

/// Why a money string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The input was empty.
    #[error("empty amount")]
    Empty,
    /// The input is not a decimal number of the accepted form.
    #[error("invalid amount {0:?}")]
    Invalid(String),
    /// The input has non-zero digits past the second decimal (a fraction of a fen).
    #[error("amount {0:?} has more precision than a fen")]
    TooPrecise(String),
    /// The amount does not fit in an `i64` number of fen.
    #[error("amount out of range")]
    Overflow,
}

impl Fen {
    /// Zero fen.
    pub const ZERO: Fen = Fen(0);

    /// Wraps an integer number of fen.
    pub const fn new(fen: i64) -> Fen {
        Fen(fen)
    }

    /// The integer number of fen.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Parses a yuan amount: `"12.34"`, `"0.29"`, `"-1.50"`, `"12"`, `"12.3"`. More than two
    /// decimals are accepted only when the extra digits are zero (`"0.60000"`). No exponent, no
    /// `+`, no whitespace, no thousands separators, no empty integer or fraction part.
    pub fn parse_yuan(s: &str) -> Result<Fen, MoneyError> {
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        let invalid = || MoneyError::Invalid(s.to_owned());
        let (negative, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (int_part, frac_part) = match rest.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (rest, None),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let mut frac_fen: i128 = 0;
        if let Some(frac) = frac_part {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let bytes = frac.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                let d = i128::from(b - b'0');
                match i {
                    0 => frac_fen += d * 10,
                    1 => frac_fen += d,
                    _ if d != 0 => return Err(MoneyError::TooPrecise(s.to_owned())),
                    _ => {}
                }
            }
        }
        let mut magnitude: i128 = 0;
        for b in int_part.bytes() {
            magnitude = magnitude
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or(MoneyError::Overflow)?;
        }
        let magnitude = magnitude
            .checked_mul(100)
            .and_then(|m| m.checked_add(frac_fen))
            .ok_or(MoneyError::Overflow)?;
        let value = if negative { -magnitude } else { magnitude };
        i64::try_from(value)
            .map(Fen)
            .map_err(|_| MoneyError::Overflow)
    }

    /// Parses an integer number of fen: ASCII digits with an optional leading `-`.
    pub fn parse_fen(s: &str) -> Result<Fen, MoneyError> {
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::Invalid(s.to_owned()));
        }
        // Only digits and an optional '-' remain, so the only possible failure is range.
        s.parse::<i64>().map(Fen).map_err(|_| MoneyError::Overflow)
    }

    /// Yuan with exactly two decimals: `1234` → `"12.34"`, `-5` → `"-0.05"`.
    pub fn to_yuan_string(self) -> String {
        let abs = self.0.unsigned_abs();
        let sign = if self.0 < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }

    /// `self + o`, or `None` on overflow.
    pub fn checked_add(self, o: Fen) -> Option<Fen> {
        self.0.checked_add(o.0).map(Fen)
    }

    /// `self - o`, or `None` on overflow.
    pub fn checked_sub(self, o: Fen) -> Option<Fen> {
        self.0.checked_sub(o.0).map(Fen)
    }

    /// `self * qty`, or `None` on overflow.
    pub fn checked_mul(self, qty: i64) -> Option<Fen> {
        self.0.checked_mul(qty).map(Fen)
    }

    /// `true` when strictly greater than zero.
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl fmt::Display for Fen {
    /// The integer number of fen, as the wire wants it for `total_fee` (`"1234"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_yuan_table() {
        let ok: &[(&str, i64)] = &[
            ("0.29", 29),
            ("12.34", 1234),
            ("12.3", 1230),
            ("12", 1200),
            ("0", 0),
            ("0.00", 0),
            ("-0.00", 0),
            ("-1.50", -150),
            ("-0.05", -5),
            ("0.60000", 60),
            ("1.10", 110),
            ("0.01", 1),
            ("007.00", 700),
            ("92233720368547758.07", i64::MAX),
            ("-92233720368547758.08", i64::MIN),
        ];
        for (s, fen) in ok {
            assert_eq!(Fen::parse_yuan(s), Ok(Fen::new(*fen)), "parsing {s:?}");
        }
    }

    #[test]
    fn parse_yuan_rejections() {
        assert_eq!(Fen::parse_yuan(""), Err(MoneyError::Empty));
        assert_eq!(
            Fen::parse_yuan("0.291"),
            Err(MoneyError::TooPrecise("0.291".into()))
        );
        assert_eq!(
            Fen::parse_yuan("0.60001"),
            Err(MoneyError::TooPrecise("0.60001".into()))
        );
        for bad in [
            "1e3", "abc", "-", ".", ".5", "5.", "+1.00", " 1.00", "1.00 ", "1,000.00", "1.2.3",
            "--1", "-.5", "1.-5", "０.29", "NaN", "inf",
        ] {
            assert_eq!(
                Fen::parse_yuan(bad),
                Err(MoneyError::Invalid(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            Fen::parse_yuan("92233720368547758.08"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Fen::parse_yuan("-92233720368547758.09"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Fen::parse_yuan("99999999999999999999999999999999999999999999999999.00"),
            Err(MoneyError::Overflow)
        );
    }

    /// The blog post did `int(float(x) * 100)`, which turns ¥0.29 into 28 fen. We must not.
    #[test]
    fn no_float_truncation() {
        // What the float recipe computes (documented here, not used by the code):
        // 0.29_f64 * 100.0 == 28.999999999999996, truncated to 28.
        assert_eq!(Fen::parse_yuan("0.29").unwrap().get(), 29);
        assert_eq!(Fen::parse_yuan("0.57").unwrap().get(), 57);
        assert_eq!(Fen::parse_yuan("1.15").unwrap().get(), 115);
        assert_eq!(Fen::parse_yuan("4.35").unwrap().get(), 435);
    }

    #[test]
    fn parse_fen_table() {
        assert_eq!(Fen::parse_fen("1234"), Ok(Fen::new(1234)));
        assert_eq!(Fen::parse_fen("-5"), Ok(Fen::new(-5)));
        assert_eq!(Fen::parse_fen("0"), Ok(Fen::ZERO));
        assert_eq!(Fen::parse_fen(""), Err(MoneyError::Empty));
        for bad in ["+1", "1.00", "-", "1 ", "x", "--1"] {
            assert_eq!(
                Fen::parse_fen(bad),
                Err(MoneyError::Invalid(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            Fen::parse_fen("9223372036854775808"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Fen::parse_fen("-9223372036854775808"),
            Ok(Fen::new(i64::MIN))
        );
    }

    #[test]
    fn yuan_string() {
        assert_eq!(Fen::new(1234).to_yuan_string(), "12.34");
        assert_eq!(Fen::new(-5).to_yuan_string(), "-0.05");
        assert_eq!(Fen::new(0).to_yuan_string(), "0.00");
        assert_eq!(Fen::new(100).to_yuan_string(), "1.00");
        assert_eq!(Fen::new(-150).to_yuan_string(), "-1.50");
        assert_eq!(Fen::new(i64::MIN).to_yuan_string(), "-92233720368547758.08");
        assert_eq!(Fen::new(1234).to_string(), "1234");
    }

    #[test]
    fn checked_arithmetic() {
        assert_eq!(Fen::new(1).checked_add(Fen::new(2)), Some(Fen::new(3)));
        assert_eq!(Fen::new(i64::MAX).checked_add(Fen::new(1)), None);
        assert_eq!(Fen::new(1).checked_sub(Fen::new(2)), Some(Fen::new(-1)));
        assert_eq!(Fen::new(i64::MIN).checked_sub(Fen::new(1)), None);
        assert_eq!(Fen::new(150).checked_mul(3), Some(Fen::new(450)));
        assert_eq!(Fen::new(i64::MAX / 2 + 1).checked_mul(2), None);
        assert!(Fen::new(1).is_positive());
        assert!(!Fen::ZERO.is_positive());
        assert!(!Fen::new(-1).is_positive());
    }

    #[test]
    fn serde_is_transparent_integer() {
        assert_eq!(serde_json::to_string(&Fen::new(29)).unwrap(), "29");
        assert_eq!(serde_json::from_str::<Fen>("-7").unwrap(), Fen::new(-7));
    }
}
