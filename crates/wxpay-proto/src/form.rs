//! Shared helpers for `k=v&k=v` strings: charsets, percent-encoding, sorted joins, query parsing
//! and constant-time string comparison.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use subtle::ConstantTimeEq;

use crate::error::ProtoError;

/// The `input_charset` of the 2014 protocol: the charset of the bytes that are hashed and
/// percent-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    /// `UTF-8`
    #[default]
    Utf8,
    /// `GBK` (the protocol's default when `input_charset` is absent)
    Gbk,
}

impl Charset {
    /// Parses `UTF-8` / `GBK` (ASCII case-insensitive; `UTF8` accepted too).
    pub fn parse(s: &str) -> Option<Charset> {
        if s.eq_ignore_ascii_case("UTF-8") || s.eq_ignore_ascii_case("UTF8") {
            Some(Charset::Utf8)
        } else if s.eq_ignore_ascii_case("GBK") {
            Some(Charset::Gbk)
        } else {
            None
        }
    }

    /// The wire name: `"UTF-8"` or `"GBK"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Gbk => "GBK",
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encodes text in `cs`. Characters GBK cannot represent are an error (never `&#NNNN;`).
pub fn encode(s: &str, cs: Charset) -> Result<Cow<'_, [u8]>, ProtoError> {
    match cs {
        Charset::Utf8 => Ok(Cow::Borrowed(s.as_bytes())),
        Charset::Gbk => {
            let (bytes, _, had_errors) = encoding_rs::GBK.encode(s);
            if had_errors {
                Err(ProtoError::Unencodable { charset: "GBK" })
            } else {
                Ok(bytes)
            }
        }
    }
}

/// Decodes bytes in `cs`. Malformed input is an error (no replacement characters).
pub fn decode(b: &[u8], cs: Charset) -> Result<String, ProtoError> {
    match cs {
        Charset::Utf8 => std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|e| ProtoError::malformed("UTF-8 text", e.to_string())),
        Charset::Gbk => encoding_rs::GBK
            .decode_without_bom_handling_and_without_replacement(b)
            .map(Cow::into_owned)
            .ok_or_else(|| ProtoError::malformed("GBK text", "invalid byte sequence")),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes the bytes of `s` in `cs`: upper-case `%XX` for every byte except
/// `A-Z a-z 0-9 - _ . ~` (Python `quote(v, safe='')`, as in the official package example).
pub fn percent_encode(s: &str, cs: Charset) -> Result<String, ProtoError> {
    let bytes = encode(s, cs)?;
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes.iter() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` (either case) and `+` (space); the resulting bytes are decoded in `cs`.
/// Literal non-ASCII characters are taken as text (re-encoded in `cs` before decoding).
/// A malformed escape or an invalid byte sequence is an error.
pub fn percent_decode(s: &str, cs: Charset) -> Result<String, ProtoError> {
    let mut bytes: Vec<u8> = Vec::with_capacity(s.len());
    let raw = s.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_val);
                let lo = raw.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => bytes.push((h << 4) | l),
                    _ => return Err(ProtoError::malformed("percent-encoding", "bad % escape")),
                }
                i += 3;
            }
            b'+' => {
                bytes.push(b' ');
                i += 1;
            }
            b if b.is_ascii() => {
                bytes.push(b);
                i += 1;
            }
            _ => {
                // A literal non-ASCII character: copy the whole run up to the next ASCII byte,
                // re-encoded in the target charset.
                let start = i;
                while i < raw.len() && !raw[i].is_ascii() {
                    i += 1;
                }
                // `start..i` lies on char boundaries: it starts and ends next to ASCII bytes.
                let chunk = s.get(start..i).unwrap_or_default();
                bytes.extend_from_slice(&encode(chunk, cs)?);
            }
        }
    }
    decode(&bytes, cs)
}

/// Joins the non-empty entries whose key is not in `skip` as `k=v&k=v` in key (ASCII) order,
/// with raw (unencoded) values.
pub fn sorted_join(params: &BTreeMap<String, String>, skip: &[&str]) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if v.is_empty() || skip.contains(&k.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Parses a `k=v&k=v` query string, percent-decoding keys and values in `cs`. Empty segments
/// are ignored, a segment without `=` is a key with an empty value, an empty key or a duplicate
/// key is an error.
pub fn parse_query(q: &str, cs: Charset) -> Result<BTreeMap<String, String>, ProtoError> {
    let mut out = BTreeMap::new();
    for seg in q.split('&') {
        if seg.is_empty() {
            continue;
        }
        let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
        let key = percent_decode(k, cs)?;
        if key.is_empty() {
            return Err(ProtoError::malformed(
                "query string",
                "empty parameter name",
            ));
        }
        let value = percent_decode(v, cs)?;
        if out.contains_key(&key) {
            return Err(ProtoError::malformed(
                "query string",
                format!("duplicate parameter `{key}`"),
            ));
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// Constant-time equality of two strings (the length is not hidden).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Constant-time equality ignoring ASCII case (for hex signatures).
pub fn ct_eq_ignore_ascii_case(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let a: Vec<u8> = a.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<u8> = b.bytes().map(|c| c.to_ascii_lowercase()).collect();
    bool::from(a.ct_eq(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn charset_names() {
        assert_eq!(Charset::parse("UTF-8"), Some(Charset::Utf8));
        assert_eq!(Charset::parse("utf-8"), Some(Charset::Utf8));
        assert_eq!(Charset::parse("GBK"), Some(Charset::Gbk));
        assert_eq!(Charset::parse("gbk"), Some(Charset::Gbk));
        assert_eq!(Charset::parse("latin1"), None);
        assert_eq!(Charset::Utf8.as_str(), "UTF-8");
        assert_eq!(Charset::Gbk.as_str(), "GBK");
    }

    #[test]
    fn percent_encode_like_the_official_example() {
        assert_eq!(
            percent_encode("支付测试", Charset::Utf8).unwrap(),
            "%E6%94%AF%E4%BB%98%E6%B5%8B%E8%AF%95"
        );
        assert_eq!(
            percent_encode("http://weixin.qq.com", Charset::Utf8).unwrap(),
            "http%3A%2F%2Fweixin.qq.com"
        );
        assert_eq!(
            percent_encode("a-b_c.d~e f+g", Charset::Utf8).unwrap(),
            "a-b_c.d~e%20f%2Bg"
        );
        assert_eq!(
            percent_encode("支付测试", Charset::Gbk).unwrap(),
            "%D6%A7%B8%B6%B2%E2%CA%D4"
        );
    }

    #[test]
    fn gbk_unencodable_is_an_error() {
        assert_eq!(
            percent_encode("pay 😀", Charset::Gbk),
            Err(ProtoError::Unencodable { charset: "GBK" })
        );
        assert!(encode("😀", Charset::Utf8).is_ok());
    }

    #[test]
    fn percent_decode_round_trip_and_errors() {
        for cs in [Charset::Utf8, Charset::Gbk] {
            let enc = percent_encode("支付 测试 a&b=c%", cs).unwrap();
            assert_eq!(percent_decode(&enc, cs).unwrap(), "支付 测试 a&b=c%");
        }
        assert_eq!(percent_decode("a+b%2b", Charset::Utf8).unwrap(), "a b+");
        assert_eq!(percent_decode("%e6%94%af", Charset::Utf8).unwrap(), "支");
        assert_eq!(percent_decode("支付", Charset::Gbk).unwrap(), "支付");
        assert!(percent_decode("%", Charset::Utf8).is_err());
        assert!(percent_decode("%4", Charset::Utf8).is_err());
        assert!(percent_decode("%zz", Charset::Utf8).is_err());
        assert!(percent_decode("%FF", Charset::Utf8).is_err());
        assert!(percent_decode("%FF", Charset::Gbk).is_err());
    }

    #[test]
    fn sorted_join_skips_empty_and_listed() {
        let p = map(&[("b", "2"), ("a", "1"), ("sign", "X"), ("e", ""), ("C", "3")]);
        assert_eq!(sorted_join(&p, &["sign"]), "C=3&a=1&b=2");
        assert_eq!(sorted_join(&p, &[]), "C=3&a=1&b=2&sign=X");
        assert_eq!(sorted_join(&BTreeMap::new(), &[]), "");
    }

    #[test]
    fn parse_query_rules() {
        let q = parse_query("a=1&b=%E6%94%AF&c=&d&&e=x=y", Charset::Utf8).unwrap();
        assert_eq!(
            q,
            map(&[("a", "1"), ("b", "支"), ("c", ""), ("d", ""), ("e", "x=y")])
        );
        assert!(parse_query("a=1&a=2", Charset::Utf8).is_err());
        assert!(parse_query("=1", Charset::Utf8).is_err());
        assert!(parse_query("a=%G1", Charset::Utf8).is_err());
        let g = parse_query("body=%D6%A7%B8%B6", Charset::Gbk).unwrap();
        assert_eq!(g["body"], "支付");
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq("ABC", "ABC"));
        assert!(!ct_eq("ABC", "ABD"));
        assert!(!ct_eq("ABC", "ABCD"));
        assert!(!ct_eq("ABC", "abc"));
        assert!(ct_eq_ignore_ascii_case("7f77b507", "7F77B507"));
        assert!(!ct_eq_ignore_ascii_case("7f77b507", "7F77B508"));
        assert!(!ct_eq_ignore_ascii_case("7f", "7F7"));
    }
}
