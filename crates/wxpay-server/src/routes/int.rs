//! JSON integers in request bodies. JSON (and the JSON Schema of our OpenAPI document) calls
//! `355.0` an integer; `serde` would refuse it for an `i64`. These accept any JSON number whose
//! value is a whole number that a JSON parser holds exactly (|n| < 2^53 when written with a
//! fraction or an exponent), and refuse everything else — `0.29` fen is an error, never rounded.

use serde::Deserializer;
use serde::de::{self, Visitor};
use std::fmt;

/// 2^53: below it an IEEE double holds every whole number exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

struct WholeNumber;

impl Visitor<'_> for WholeNumber {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.is_finite() && v.fract() == 0.0 && v.abs() < EXACT {
            Ok(v as i64)
        } else {
            Err(E::custom(format!("expected an integer, found {v}")))
        }
    }
}

struct MaybeWholeNumber;

impl<'de> Visitor<'de> for MaybeWholeNumber {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_any(WholeNumber).map(Some)
    }
}

/// `#[serde(deserialize_with = "int::whole")]`
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(WholeNumber)
}

/// `#[serde(default, deserialize_with = "int::maybe_whole")]`
pub fn maybe_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(MaybeWholeNumber)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(deserialize_with = "super::whole")]
        n: i64,
        #[serde(default, deserialize_with = "super::maybe_whole")]
        m: Option<i64>,
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn whole_numbers_in_any_notation_are_accepted() {
        assert_eq!(parse(r#"{"n": 29}"#).unwrap().n, 29);
        assert_eq!(parse(r#"{"n": 355.0}"#).unwrap().n, 355);
        assert_eq!(parse(r#"{"n": 1e2}"#).unwrap().n, 100);
        assert_eq!(parse(r#"{"n": -5443.0}"#).unwrap().n, -5443);
        assert_eq!(parse(r#"{"n": 9223372036854775807}"#).unwrap().n, i64::MAX);
        let t = parse(r#"{"n": 1, "m": 7.0}"#).unwrap();
        assert_eq!(t.m, Some(7));
        assert_eq!(parse(r#"{"n": 1, "m": null}"#).unwrap().m, None);
        assert_eq!(parse(r#"{"n": 1}"#).unwrap().m, None);
    }

    #[test]
    fn fractions_strings_and_inexact_numbers_are_refused() {
        for bad in [
            r#"{"n": 0.29}"#,
            r#"{"n": "29"}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": 18446744073709551615}"#,
            r#"{"n": 9007199254740993.0}"#,
            r#"{"n": null}"#,
            r#"{"n": 1, "m": 2.5}"#,
            r#"{"n": 1, "m": "2"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} must be refused");
        }
    }
}
