//! APIv2 (XML over HTTPS) signing and XML (PROTOCOL.md C).
//!
//! stringA = the non-empty parameters except `sign`, sorted by key, `k=v&…` with raw values;
//! stringSignTemp = stringA + `&key=<API key>`; `sign` = upper-hex MD5(stringSignTemp) or
//! upper-hex HMAC-SHA256(key = API key, message = stringSignTemp). `sign_type` is signed too.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use quick_xml::events::Event;
use quick_xml::reader::Reader;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::error::ProtoError;
use crate::form::{ct_eq_ignore_ascii_case, sorted_join};

/// The two APIv2 signature algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignType {
    /// `MD5` (the default when `sign_type` is absent); 32 hex characters.
    Md5,
    /// `HMAC-SHA256`; 64 hex characters.
    HmacSha256,
}

impl SignType {
    /// The wire value of `sign_type`: `"MD5"` or `"HMAC-SHA256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// Parses the wire value of `sign_type` (ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<SignType> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(SignType::Md5)
        } else if s.eq_ignore_ascii_case("HMAC-SHA256") {
            Some(SignType::HmacSha256)
        } else {
            None
        }
    }
}

/// stringSignTemp: `k=v&…&key=<key>` over the non-empty parameters except `sign`. Secret,
/// because it contains the key.
pub fn string_to_sign(params: &BTreeMap<String, String>, key: &SecretString) -> SecretString {
    let mut s = sorted_join(params, &["sign"]);
    if !s.is_empty() {
        s.push('&');
    }
    s.push_str("key=");
    s.push_str(key.expose_secret());
    SecretString::from(s)
}

/// The upper-hex signature of `params` (skipping `sign` and empty values).
pub fn sign(params: &BTreeMap<String, String>, key: &SecretString, t: SignType) -> String {
    let msg = string_to_sign(params, key);
    let msg = msg.expose_secret().as_bytes();
    match t {
        SignType::Md5 => hex::encode_upper(Md5::digest(msg)),
        SignType::HmacSha256 => {
            // HMAC accepts keys of any length, so this cannot fail.
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret().as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(msg);
            hex::encode_upper(mac.finalize().into_bytes())
        }
    }
}

/// Verifies `params["sign"]`. The algorithm is chosen by the length of the given sign (32 → MD5,
/// 64 → HMAC-SHA256), since notifies are reported to carry MD5 even for HMAC merchants.
/// The comparison is constant time and ignores hex case. A missing sign fails.
pub fn verify(params: &BTreeMap<String, String>, key: &SecretString) -> bool {
    let Some(given) = params.get("sign") else {
        return false;
    };
    let t = match given.len() {
        32 => SignType::Md5,
        64 => SignType::HmacSha256,
        _ => return false,
    };
    ct_eq_ignore_ascii_case(&sign(params, key, t), given)
}

/// Signs `params` with `t`, adding `sign` (and `sign_type` for HMAC-SHA256, which is signed too).
pub fn sign_params(params: &mut BTreeMap<String, String>, key: &SecretString, t: SignType) {
    params.remove("sign");
    if t == SignType::HmacSha256 {
        params.insert("sign_type".to_owned(), t.as_str().to_owned());
    }
    let s = sign(params, key, t);
    params.insert("sign".to_owned(), s);
}

fn push_cdata(out: &mut String, v: &str) {
    // `]]>` cannot appear inside a CDATA section: split it across two sections.
    out.push_str("<![CDATA[");
    out.push_str(&v.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
}

/// `<xml><k><![CDATA[v]]></k>…</xml>` in key order. Keys must be XML names (as all APIv2 keys
/// are); values may be anything.
pub fn to_xml(params: &BTreeMap<String, String>) -> String {
    let mut out = String::from("<xml>");
    for (k, v) in params {
        out.push('<');
        out.push_str(k);
        out.push('>');
        push_cdata(&mut out, v);
        out.push_str("</");
        out.push_str(k);
        out.push('>');
    }
    out.push_str("</xml>");
    out
}

fn resolve_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

/// Parses a flat `<root><k>v</k>…</root>` document (root name not checked, usually `xml`) into
/// a map. Text and CDATA are concatenated; predefined and character entities are resolved;
/// `<k/>` is an empty value. Nested elements, duplicate keys, DOCTYPE, text outside the elements,
/// more than one root and unclosed tags are errors. Never panics.
pub fn parse_xml(xml: &str) -> Result<BTreeMap<String, String>, ProtoError> {
    let bad = |reason: String| ProtoError::malformed("XML", reason);
    let mut reader = Reader::from_str(xml);
    let mut out = BTreeMap::new();
    // 0 = before root, 1 = inside root, 2 = inside a field, 3 = after root
    let mut depth = 0u8;
    let mut key = String::new();
    let mut value = String::new();
    loop {
        let ev = reader.read_event().map_err(|e| bad(e.to_string()))?;
        match ev {
            Event::Start(start) => match depth {
                0 => depth = 1,
                1 => {
                    key = start.name().0.to_owned();
                    value.clear();
                    depth = 2;
                }
                2 => return Err(bad(format!("nested element inside `{key}`"))),
                _ => return Err(bad("more than one root element".into())),
            },
            Event::Empty(start) => match depth {
                0 => depth = 3,
                1 => {
                    let k = start.name().0.to_owned();
                    if out.insert(k.clone(), String::new()).is_some() {
                        return Err(bad(format!("duplicate element `{k}`")));
                    }
                }
                2 => return Err(bad(format!("nested element inside `{key}`"))),
                _ => return Err(bad("more than one root element".into())),
            },
            Event::End(_) => match depth {
                2 => {
                    let k = std::mem::take(&mut key);
                    if out.insert(k.clone(), std::mem::take(&mut value)).is_some() {
                        return Err(bad(format!("duplicate element `{k}`")));
                    }
                    depth = 1;
                }
                1 => depth = 3,
                _ => return Err(bad("unexpected end tag".into())),
            },
            Event::Text(t) => {
                let text = t.xml10_content();
                if depth == 2 {
                    value.push_str(&text);
                } else if !text.trim().is_empty() {
                    return Err(bad("text outside of a field".into()));
                }
            }
            Event::CData(c) => {
                if depth == 2 {
                    value.push_str(&c.into_inner());
                } else {
                    return Err(bad("CDATA outside of a field".into()));
                }
            }
            Event::GeneralRef(r) => {
                if depth != 2 {
                    return Err(bad("entity reference outside of a field".into()));
                }
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => resolve_entity(&r.xml10_content())
                        .ok_or_else(|| bad("unknown entity reference".into()))?,
                    Err(e) => return Err(bad(e.to_string())),
                };
                value.push(ch);
            }
            Event::DocType(_) => return Err(bad("DOCTYPE is not allowed".into())),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                return if depth == 3 {
                    Ok(out)
                } else if depth == 0 {
                    Err(bad("empty document".into()))
                } else {
                    Err(bad("unexpected end of document".into()))
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretString {
        SecretString::from("192006250b4c09247ec02edce69f6a2d")
    }

    fn example() -> BTreeMap<String, String> {
        [
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn sign_skips_sign_and_empty_values() {
        let mut p = example();
        let base = sign(&p, &key(), SignType::Md5);
        p.insert("sign".into(), "whatever".into());
        p.insert("attach".into(), String::new());
        assert_eq!(sign(&p, &key(), SignType::Md5), base);
    }

    #[test]
    fn sign_type_is_part_of_the_signed_set() {
        let mut p = example();
        sign_params(&mut p, &key(), SignType::HmacSha256);
        assert_eq!(p["sign_type"], "HMAC-SHA256");
        assert_eq!(p["sign"].len(), 64);
        assert!(verify(&p, &key()));
        p.remove("sign_type");
        assert!(!verify(&p, &key()));
    }

    #[test]
    fn verify_by_length_and_rejections() {
        let mut p = example();
        sign_params(&mut p, &key(), SignType::Md5);
        assert!(verify(&p, &key()));
        let lower = p["sign"].to_ascii_lowercase();
        p.insert("sign".into(), lower);
        assert!(verify(&p, &key()), "hex case is not significant");
        assert!(!verify(&p, &SecretString::from("x".repeat(32))));
        // A new field WeChat adds later is covered by the signature.
        let mut q = p.clone();
        q.insert("new_field".into(), "1".into());
        assert!(!verify(&q, &key()));
        p.insert("sign".into(), "ABC".into());
        assert!(!verify(&p, &key()));
        p.remove("sign");
        assert!(!verify(&p, &key()));
    }

    #[test]
    fn xml_round_trip_with_awkward_values() {
        let mut p = example();
        p.insert("attach".into(), "a]]>b<c>&d\"é支".into());
        p.insert("empty".into(), String::new());
        let xml = to_xml(&p);
        assert!(xml.starts_with("<xml><appid><![CDATA[wxd930ea5d5a258f4f]]></appid>"));
        assert_eq!(parse_xml(&xml).unwrap(), p);
    }

    #[test]
    fn parse_xml_forms() {
        let xml = "<?xml version=\"1.0\"?>\n<xml>\n  <return_code><![CDATA[SUCCESS]]></return_code>\n  \
                   <total_fee>1</total_fee><e/><t>a&amp;b&#x41;&#66;</t>\n</xml>\n";
        let m = parse_xml(xml).unwrap();
        assert_eq!(m["return_code"], "SUCCESS");
        assert_eq!(m["total_fee"], "1");
        assert_eq!(m["e"], "");
        assert_eq!(m["t"], "a&bAB");
    }

    #[test]
    fn parse_xml_rejections() {
        for bad in [
            "",
            "   ",
            "<xml>",
            "<xml><a>1</a>",
            "<xml><a>1</b></xml>",
            "<xml><a><b>1</b></a></xml>",
            "<xml><a>1</a><a>2</a></xml>",
            "<xml>text<a>1</a></xml>",
            "<xml></xml><xml></xml>",
            "<!DOCTYPE x [<!ENTITY e \"boom\">]><xml><a>&e;</a></xml>",
            "<xml><a>&e;</a></xml>",
            "<xml><a>&#0;</a></xml>",
            "not xml at all",
        ] {
            assert!(parse_xml(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
