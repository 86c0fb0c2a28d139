//! The retired 2014 open-platform APP payment protocol (PROTOCOL.md A), both sides: what the
//! merchant backend builds and verifies, and what the sandbox parses, checks and sends back.
//!
//! * `package` (A.3): the order, MD5-signed with the Tenpay `partnerKey` over the raw sorted
//!   values in the package's `input_charset`, transmitted with percent-encoded values.
//! * `app_signature` (A.4, A.5, A.6, A.7): SHA-1 over sorted fields plus the `appkey`, which is
//!   hashed but never transmitted.
//! * notify (A.6): the result in the query string (MD5), the user in an XML body (SHA-1).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use sha1::Sha1;

use crate::error::ProtoError;
use crate::form::{
    Charset, ct_eq_ignore_ascii_case, encode, parse_query, percent_decode, percent_encode,
    sorted_join,
};
use crate::money::Fen;

/// Reply body the notify endpoint returns (HTTP 200) once the notify is accepted.
pub const REPLY_SUCCESS: &str = "success";
/// Reply body for a rejected notify (Tenpay retries).
pub const REPLY_FAIL: &str = "fail";
/// `sign_method` of every SHA-1 app signature.
pub const SIGN_METHOD_SHA1: &str = "sha1";
/// The fixed `package` value of the client `PayReq` (A.5).
pub const PAY_REQ_PACKAGE: &str = "Sign=WXPay";

// ---------------------------------------------------------------------------------------------
// package (A.3)
// ---------------------------------------------------------------------------------------------

/// The typed order description that becomes the signed `package` string (A.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// Fixed `WX`.
    pub bank_type: String,
    /// Product description, fewer than 128 bytes in `input_charset`.
    pub body: String,
    /// Merchant data echoed in the notify, at most 127 bytes.
    pub attach: Option<String>,
    /// Tenpay partner id (digits).
    pub partner: String,
    /// Merchant order number: 1–32 of `[0-9A-Za-z_-]`.
    pub out_trade_no: String,
    /// Amount in fen, > 0.
    pub total_fee: Fen,
    /// Fixed `1` (RMB).
    pub fee_type: String,
    /// Absolute http(s) URL, ≤ 255 chars, no query.
    pub notify_url: String,
    /// The user's IPv4 address.
    pub spbill_create_ip: String,
    /// `yyyyMMddHHmmss`, Beijing time.
    pub time_start: Option<String>,
    /// `yyyyMMddHHmmss`, Beijing time.
    pub time_expire: Option<String>,
    /// Fen; with `product_fee` it must add up to `total_fee`.
    pub transport_fee: Option<Fen>,
    /// Fen; with `transport_fee` it must add up to `total_fee`.
    pub product_fee: Option<Fen>,
    /// Coupon/discount tag.
    pub goods_tag: Option<String>,
    /// Charset of the hashed and percent-encoded bytes.
    pub input_charset: Charset,
}

fn invalid(field: &str, reason: impl Into<String>) -> ProtoError {
    ProtoError::field(field, reason)
}

/// Checks an `out_trade_no`: 1–32 characters of `[0-9A-Za-z_-]`.
pub fn validate_out_trade_no(s: &str) -> Result<(), ProtoError> {
    if s.is_empty() || s.len() > 32 {
        return Err(invalid("out_trade_no", "must be 1 to 32 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid("out_trade_no", "only 0-9 A-Z a-z _ - are allowed"));
    }
    Ok(())
}

fn validate_notify_url(url: &str) -> Result<(), ProtoError> {
    if url.len() > 255 {
        return Err(invalid("notify_url", "longer than 255 characters"));
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| invalid("notify_url", "must be an absolute http(s) URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid("notify_url", "has no host"));
    }
    if url.contains('?') || url.contains('#') {
        return Err(invalid("notify_url", "must not have a query or fragment"));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid(
            "notify_url",
            "contains whitespace or control characters",
        ));
    }
    Ok(())
}

fn byte_len(field: &str, s: &str, cs: Charset) -> Result<usize, ProtoError> {
    encode(s, cs)
        .map(|b| b.len())
        .map_err(|_| invalid(field, format!("cannot be encoded as {cs}")))
}

impl Package {
    /// Checks every rule of A.3 (see CONTRACT.md). `sign` calls this first.
    pub fn validate(&self) -> Result<(), ProtoError> {
        let cs = self.input_charset;
        if self.bank_type != "WX" {
            return Err(invalid("bank_type", "must be WX"));
        }
        let body_len = byte_len("body", &self.body, cs)?;
        if body_len == 0 {
            return Err(invalid("body", "must not be empty"));
        }
        if body_len >= 128 {
            return Err(invalid("body", "must be shorter than 128 bytes"));
        }
        if let Some(attach) = &self.attach
            && byte_len("attach", attach, cs)? > 127
        {
            return Err(invalid("attach", "must be at most 127 bytes"));
        }
        if self.partner.is_empty() || !self.partner.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("partner", "must be the numeric partner id"));
        }
        validate_out_trade_no(&self.out_trade_no)?;
        if !self.total_fee.is_positive() {
            return Err(invalid("total_fee", "must be greater than 0"));
        }
        if self.fee_type != "1" {
            return Err(invalid("fee_type", "must be 1 (RMB)"));
        }
        validate_notify_url(&self.notify_url)?;
        if self.spbill_create_ip.parse::<Ipv4Addr>().is_err() {
            return Err(invalid("spbill_create_ip", "must be an IPv4 address"));
        }
        let start = match &self.time_start {
            Some(t) => {
                Some(parse_time(t).map_err(|_| invalid("time_start", "not yyyyMMddHHmmss"))?)
            }
            None => None,
        };
        let expire = match &self.time_expire {
            Some(t) => {
                Some(parse_time(t).map_err(|_| invalid("time_expire", "not yyyyMMddHHmmss"))?)
            }
            None => None,
        };
        if let (Some(s), Some(e)) = (start, expire)
            && e <= s
        {
            return Err(invalid("time_expire", "must be after time_start"));
        }
        if self.transport_fee.is_some() || self.product_fee.is_some() {
            let transport = self.transport_fee.unwrap_or(Fen::ZERO);
            let product = self.product_fee.unwrap_or(Fen::ZERO);
            if transport.get() < 0 {
                return Err(invalid("transport_fee", "must not be negative"));
            }
            if product.get() < 0 {
                return Err(invalid("product_fee", "must not be negative"));
            }
            if transport.checked_add(product) != Some(self.total_fee) {
                return Err(invalid(
                    "total_fee",
                    "must equal transport_fee + product_fee",
                ));
            }
        }
        if let Some(tag) = &self.goods_tag {
            byte_len("goods_tag", tag, cs)?;
        }
        Ok(())
    }

    /// The non-empty fields as wire parameters (amounts as integer fen).
    pub fn params(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                m.insert(k.to_owned(), v);
            }
        };
        put("bank_type", Some(self.bank_type.clone()));
        put("body", Some(self.body.clone()));
        put("attach", self.attach.clone());
        put("partner", Some(self.partner.clone()));
        put("out_trade_no", Some(self.out_trade_no.clone()));
        put("total_fee", Some(self.total_fee.to_string()));
        put("fee_type", Some(self.fee_type.clone()));
        put("notify_url", Some(self.notify_url.clone()));
        put("spbill_create_ip", Some(self.spbill_create_ip.clone()));
        put("time_start", self.time_start.clone());
        put("time_expire", self.time_expire.clone());
        put("transport_fee", self.transport_fee.map(|f| f.to_string()));
        put("product_fee", self.product_fee.map(|f| f.to_string()));
        put("goods_tag", self.goods_tag.clone());
        put(
            "input_charset",
            Some(self.input_charset.as_str().to_owned()),
        );
        m
    }

    /// Validates, MD5-signs with the partner key and builds the transmitted package string.
    pub fn sign(&self, partner_key: &SecretString) -> Result<SignedPackage, ProtoError> {
        self.validate()?;
        let params = self.params();
        let sign = md5_sign(&params, partner_key, self.input_charset)?;
        let package = encode_package(&params, &sign, self.input_charset)?;
        Ok(SignedPackage { sign, package })
    }
}

/// A signed package: the MD5 sign and the exact string to transmit (and to SHA-1 in
/// `app_signature`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPackage {
    /// MD5, upper-case hex.
    pub sign: String,
    /// `k=%XX…&…&sign=SIGN`
    pub package: String,
}

/// `k=v&…&key=<partnerKey>` over the non-empty parameters except `sign`, raw values. Secret,
/// because it contains the key.
pub fn package_string_to_sign(
    params: &BTreeMap<String, String>,
    partner_key: &SecretString,
) -> SecretString {
    let mut s = sorted_join(params, &["sign"]);
    if !s.is_empty() {
        s.push('&');
    }
    s.push_str("key=");
    s.push_str(partner_key.expose_secret());
    SecretString::from(s)
}

/// Upper-hex MD5 of [`package_string_to_sign`] encoded in `cs`. Skips only `sign` and empty
/// values (`sign_type` is signed).
pub fn md5_sign(
    params: &BTreeMap<String, String>,
    partner_key: &SecretString,
    cs: Charset,
) -> Result<String, ProtoError> {
    let s = package_string_to_sign(params, partner_key);
    let bytes = encode(s.expose_secret(), cs)?;
    Ok(hex::encode_upper(Md5::digest(&bytes)))
}

/// The transmitted form: the sorted non-empty pairs (except `sign`) with percent-encoded values
/// (bytes of `cs`, upper-case `%XX`), then `&sign=<sign>`.
pub fn encode_package(
    params: &BTreeMap<String, String>,
    sign: &str,
    cs: Charset,
) -> Result<String, ProtoError> {
    let mut out = String::new();
    for (k, v) in params {
        if v.is_empty() || k == "sign" {
            continue;
        }
        out.push_str(&percent_encode(k, cs)?);
        out.push('=');
        out.push_str(&percent_encode(v, cs)?);
        out.push('&');
    }
    out.push_str("sign=");
    out.push_str(&percent_encode(sign, cs)?);
    Ok(out)
}

/// Finds `input_charset` in a raw query string (before decoding, since it says how to decode).
/// Absent means GBK, the protocol default.
fn detect_charset(q: &str) -> Result<Charset, ProtoError> {
    let mut found: Option<Charset> = None;
    for seg in q.split('&') {
        let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
        if k == "input_charset" {
            let name = percent_decode(v, Charset::Utf8)?;
            let cs = Charset::parse(&name)
                .ok_or_else(|| invalid("input_charset", "must be GBK or UTF-8"))?;
            if found.is_some() {
                return Err(ProtoError::malformed(
                    "query string",
                    "duplicate `input_charset`",
                ));
            }
            found = Some(cs);
        }
    }
    Ok(found.unwrap_or(Charset::Gbk))
}

/// Decodes a query string with the charset it declares, and checks that the decoded
/// `input_charset` agrees (it could differ only if the key itself was percent-encoded).
fn parse_with_charset(q: &str) -> Result<(Charset, BTreeMap<String, String>), ProtoError> {
    let cs = detect_charset(q)?;
    let params = parse_query(q, cs)?;
    if let Some(declared) = params.get("input_charset")
        && Charset::parse(declared) != Some(cs)
    {
        return Err(invalid("input_charset", "ambiguous charset declaration"));
    }
    Ok((cs, params))
}

/// A package string as received by the server (sandbox side), decoded with its `input_charset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPackage {
    /// Every decoded parameter, without `sign`.
    pub params: BTreeMap<String, String>,
    /// The given sign.
    pub sign: String,
    /// The charset the package declared (GBK when absent).
    pub charset: Charset,
}

/// Parses a transmitted package string. Fails on malformed encoding, duplicate keys, an unknown
/// charset or a missing sign; does not verify (see [`ParsedPackage::verify`]).
pub fn parse_package(package: &str) -> Result<ParsedPackage, ProtoError> {
    let (charset, mut params) = parse_with_charset(package)?;
    let sign = params.remove("sign").unwrap_or_default();
    if sign.is_empty() {
        return Err(invalid("sign", "missing"));
    }
    Ok(ParsedPackage {
        params,
        sign,
        charset,
    })
}

fn required<'a>(m: &'a BTreeMap<String, String>, k: &str) -> Result<&'a String, ProtoError> {
    m.get(k)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(k, "missing"))
}

fn optional(m: &BTreeMap<String, String>, k: &str) -> Option<String> {
    m.get(k).filter(|v| !v.is_empty()).cloned()
}

fn fen_field(k: &str, v: &str) -> Result<Fen, ProtoError> {
    let f = Fen::parse_fen(v).map_err(|e| invalid(k, e.to_string()))?;
    if f.get() < 0 {
        return Err(invalid(k, "must not be negative"));
    }
    Ok(f)
}

fn optional_fen(m: &BTreeMap<String, String>, k: &str) -> Result<Option<Fen>, ProtoError> {
    optional(m, k).map(|v| fen_field(k, &v)).transpose()
}

impl ParsedPackage {
    /// Recomputes the MD5 over the decoded values in the declared charset; constant-time,
    /// hex case ignored.
    pub fn verify(&self, partner_key: &SecretString) -> bool {
        match md5_sign(&self.params, partner_key, self.charset) {
            Ok(expected) => ct_eq_ignore_ascii_case(&expected, &self.sign),
            Err(_) => false,
        }
    }

    /// The typed package. Converts only (missing required fields and non-integer amounts are
    /// errors); call [`Package::validate`] for the business rules.
    pub fn to_package(&self) -> Result<Package, ProtoError> {
        let p = &self.params;
        Ok(Package {
            bank_type: required(p, "bank_type")?.clone(),
            body: required(p, "body")?.clone(),
            attach: optional(p, "attach"),
            partner: required(p, "partner")?.clone(),
            out_trade_no: required(p, "out_trade_no")?.clone(),
            total_fee: fen_field("total_fee", required(p, "total_fee")?)?,
            fee_type: required(p, "fee_type")?.clone(),
            notify_url: required(p, "notify_url")?.clone(),
            spbill_create_ip: required(p, "spbill_create_ip")?.clone(),
            time_start: optional(p, "time_start"),
            time_expire: optional(p, "time_expire"),
            transport_fee: optional_fen(p, "transport_fee")?,
            product_fee: optional_fen(p, "product_fee")?,
            goods_tag: optional(p, "goods_tag"),
            input_charset: self.charset,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// SHA-1 app signature (A.4–A.8)
// ---------------------------------------------------------------------------------------------

/// SHA-1 lower-case hex over `fields` plus `appkey=<app_key>`, sorted by key, joined `k=v&…`
/// with raw values. Every given field takes part (even empty ones); an `appkey` entry in
/// `fields` is replaced by the real key.
pub fn app_signature(fields: &BTreeMap<String, String>, app_key: &SecretString) -> String {
    let mut joined = String::new();
    let mut appkey_done = false;
    let push = |out: &mut String, k: &str, v: &str| {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    };
    for (k, v) in fields {
        if k == "appkey" {
            continue;
        }
        if !appkey_done && k.as_str() > "appkey" {
            push(&mut joined, "appkey", app_key.expose_secret());
            appkey_done = true;
        }
        push(&mut joined, k, v);
    }
    if !appkey_done {
        push(&mut joined, "appkey", app_key.expose_secret());
    }
    let joined = SecretString::from(joined);
    hex::encode(Sha1::digest(joined.expose_secret().as_bytes()))
}

/// Constant-time check of a given SHA-1 app signature (hex case ignored).
pub fn verify_app_signature(
    fields: &BTreeMap<String, String>,
    app_key: &SecretString,
    given: &str,
) -> bool {
    ct_eq_ignore_ascii_case(&app_signature(fields, app_key), given)
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Accepts a JSON string, number, bool or null as a `String` (the legacy API was loose about
/// types, e.g. `"ret_code":0`).
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a string, got {other}"
            )));
        }
    })
}

/// `POST /pay/genprepay` body (A.4). The `appkey` is hashed into `app_signature` but is not a
/// field, so it can never be serialized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenPrepayRequest {
    pub appid: String,
    pub traceid: String,
    pub noncestr: String,
    pub package: String,
    /// Unix seconds (10 digits).
    pub timestamp: String,
    pub app_signature: String,
    /// `sha1`
    pub sign_method: String,
}

impl GenPrepayRequest {
    /// Builds and signs the request; `package` is the exact transmitted package string.
    pub fn new(
        appid: &str,
        traceid: &str,
        noncestr: &str,
        package: &str,
        timestamp: i64,
        app_key: &SecretString,
    ) -> Self {
        let mut r = GenPrepayRequest {
            appid: appid.to_owned(),
            traceid: traceid.to_owned(),
            noncestr: noncestr.to_owned(),
            package: package.to_owned(),
            timestamp: timestamp.to_string(),
            app_signature: String::new(),
            sign_method: SIGN_METHOD_SHA1.to_owned(),
        };
        r.app_signature = app_signature(&r.signed_fields(), app_key);
        r
    }

    /// What `app_signature` covers, minus `appkey`: appid, noncestr, package, timestamp, traceid.
    pub fn signed_fields(&self) -> BTreeMap<String, String> {
        fields(&[
            ("appid", &self.appid),
            ("noncestr", &self.noncestr),
            ("package", &self.package),
            ("timestamp", &self.timestamp),
            ("traceid", &self.traceid),
        ])
    }

    /// Sandbox side: checks `sign_method` and the SHA-1 `app_signature`.
    pub fn verify(&self, app_key: &SecretString) -> bool {
        self.sign_method.eq_ignore_ascii_case(SIGN_METHOD_SHA1)
            && verify_app_signature(&self.signed_fields(), app_key, &self.app_signature)
    }
}

/// `genprepay` answer: `{"prepayid":"…","errcode":0,"errmsg":"Success"}` or an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenPrepayResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepayid: Option<String>,
    #[serde(default)]
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
}

/// The order `package` of an order query names these (sandbox side, after verification).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderQueryTarget {
    pub partner: String,
    pub out_trade_no: String,
}

/// `POST /pay/orderquery` body (A.7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderQueryRequest {
    pub appid: String,
    /// `out_trade_no=…&partner=…&sign=<MD5 upper hex>`
    pub package: String,
    pub timestamp: String,
    pub app_signature: String,
    pub sign_method: String,
}

impl OrderQueryRequest {
    /// Builds the MD5-signed query package and the SHA-1 app signature.
    pub fn new(
        appid: &str,
        partner: &str,
        out_trade_no: &str,
        timestamp: i64,
        partner_key: &SecretString,
        app_key: &SecretString,
    ) -> Self {
        let params = fields(&[("out_trade_no", out_trade_no), ("partner", partner)]);
        // UTF-8 can encode every string, so signing and encoding cannot fail.
        let package = md5_sign(&params, partner_key, Charset::Utf8)
            .and_then(|sign| encode_package(&params, &sign, Charset::Utf8))
            .unwrap_or_default();
        let mut r = OrderQueryRequest {
            appid: appid.to_owned(),
            package,
            timestamp: timestamp.to_string(),
            app_signature: String::new(),
            sign_method: SIGN_METHOD_SHA1.to_owned(),
        };
        r.app_signature = app_signature(&r.signed_fields(), app_key);
        r
    }

    /// What `app_signature` covers, minus `appkey`: appid, package, timestamp.
    pub fn signed_fields(&self) -> BTreeMap<String, String> {
        fields(&[
            ("appid", &self.appid),
            ("package", &self.package),
            ("timestamp", &self.timestamp),
        ])
    }

    /// Sandbox side: checks the SHA-1 app signature, then the MD5 of the package, and returns
    /// the order it names.
    pub fn verify(
        &self,
        partner_key: &SecretString,
        app_key: &SecretString,
    ) -> Result<OrderQueryTarget, ProtoError> {
        if !self.sign_method.eq_ignore_ascii_case(SIGN_METHOD_SHA1) {
            return Err(invalid("sign_method", "must be sha1"));
        }
        if !verify_app_signature(&self.signed_fields(), app_key, &self.app_signature) {
            return Err(ProtoError::BadSignature {
                what: "orderquery app_signature (SHA1)",
            });
        }
        let mut params = parse_query(&self.package, Charset::Utf8)?;
        let sign = params.remove("sign").unwrap_or_default();
        let expected = md5_sign(&params, partner_key, Charset::Utf8)?;
        if !ct_eq_ignore_ascii_case(&expected, &sign) {
            return Err(ProtoError::BadSignature {
                what: "orderquery package sign (MD5)",
            });
        }
        Ok(OrderQueryTarget {
            partner: required(&params, "partner")?.clone(),
            out_trade_no: required(&params, "out_trade_no")?.clone(),
        })
    }
}

/// `orderquery` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderQueryResponse {
    #[serde(default)]
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_info: Option<OrderInfo>,
}

/// `order_info` of an order query; every field a string as on the wire (numbers and booleans
/// are accepted on input and kept as text).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderInfo {
    #[serde(default, deserialize_with = "lenient_string")]
    pub ret_code: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub ret_msg: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub input_charset: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub trade_state: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub trade_mode: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub partner: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub bank_type: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub bank_billno: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub total_fee: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub fee_type: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub transaction_id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub out_trade_no: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub is_split: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub is_refund: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub attach: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub time_end: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub transport_fee: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub product_fee: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub discount: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub rmb_total_fee: String,
}

impl OrderInfo {
    /// `ret_code == "0" && trade_state == "0"`.
    pub fn is_paid(&self) -> bool {
        self.ret_code == "0" && self.trade_state == "0"
    }

    /// `total_fee` as fen.
    pub fn total_fee_fen(&self) -> Result<Fen, ProtoError> {
        fen_field("total_fee", &self.total_fee)
    }

    /// `discount` as fen (`None` when empty).
    pub fn discount_fen(&self) -> Result<Option<Fen>, ProtoError> {
        if self.discount.is_empty() {
            Ok(None)
        } else {
            fen_field("discount", &self.discount).map(Some)
        }
    }
}

/// `cgi-bin/token` answer: success has `access_token`/`expires_in`, failure `errcode`/`errmsg`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccessTokenResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errmsg: Option<String>,
}

/// The generic `{"errcode":…,"errmsg":"…"}` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrResponse {
    pub errcode: i64,
    pub errmsg: String,
}

/// What the backend hands the app for the OpenSDK `PayReq` (A.5). `package` is always the
/// literal `Sign=WXPay`; `sign` is SHA-1 over appid, appkey, noncestr, package, partnerid,
/// prepayid, timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayReq {
    pub appid: String,
    pub partnerid: String,
    pub prepayid: String,
    pub package: String,
    pub noncestr: String,
    /// Unix seconds (10 digits, never milliseconds).
    pub timestamp: String,
    pub sign: String,
}

impl PayReq {
    /// Builds and signs; use a fresh nonce and the current time in seconds.
    pub fn new(
        appid: &str,
        partner: &str,
        prepayid: &str,
        noncestr: &str,
        timestamp: i64,
        app_key: &SecretString,
    ) -> Self {
        let mut r = PayReq {
            appid: appid.to_owned(),
            partnerid: partner.to_owned(),
            prepayid: prepayid.to_owned(),
            package: PAY_REQ_PACKAGE.to_owned(),
            noncestr: noncestr.to_owned(),
            timestamp: timestamp.to_string(),
            sign: String::new(),
        };
        r.sign = app_signature(&r.signed_fields(), app_key);
        r
    }

    /// What `sign` covers, minus `appkey`.
    pub fn signed_fields(&self) -> BTreeMap<String, String> {
        fields(&[
            ("appid", &self.appid),
            ("noncestr", &self.noncestr),
            ("package", &self.package),
            ("partnerid", &self.partnerid),
            ("prepayid", &self.prepayid),
            ("timestamp", &self.timestamp),
        ])
    }

    /// Checks the sign (constant time) and that `package` is the literal `Sign=WXPay`.
    pub fn verify(&self, app_key: &SecretString) -> bool {
        self.package == PAY_REQ_PACKAGE
            && verify_app_signature(&self.signed_fields(), app_key, &self.sign)
    }
}

// ---------------------------------------------------------------------------------------------
// notify (A.6)
// ---------------------------------------------------------------------------------------------

/// The WeChat user described by the notify's XML body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyUser {
    pub open_id: String,
    pub app_id: String,
    pub is_subscribe: bool,
    pub timestamp: i64,
    pub nonce_str: String,
}

impl NotifyUser {
    /// The fields the XML `AppSignature` covers (lower-case names, minus `appkey`).
    pub fn signed_fields(&self) -> BTreeMap<String, String> {
        fields(&[
            ("appid", &self.app_id),
            ("issubscribe", if self.is_subscribe { "1" } else { "0" }),
            ("noncestr", &self.nonce_str),
            ("openid", &self.open_id),
            ("timestamp", &self.timestamp.to_string()),
        ])
    }
}

/// Builds the notify query string (sandbox side): adds `sign_type=MD5` and `input_charset`,
/// MD5-signs with the partner key in `cs`, percent-encodes the values in `cs`, appends `sign`.
/// An incoming `sign` is replaced.
pub fn build_notify_query(
    fields: &BTreeMap<String, String>,
    partner_key: &SecretString,
    cs: Charset,
) -> Result<String, ProtoError> {
    let mut m = fields.clone();
    m.remove("sign");
    m.insert("sign_type".to_owned(), "MD5".to_owned());
    m.insert("input_charset".to_owned(), cs.as_str().to_owned());
    let sign = md5_sign(&m, partner_key, cs)?;
    encode_package(&m, &sign, cs)
}

fn push_cdata(out: &mut String, v: &str) {
    out.push_str("<![CDATA[");
    out.push_str(&v.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
}

/// Builds the notify XML body (sandbox side) with `AppSignature` (SHA-1 with the appkey) and
/// `SignMethod` `sha1`.
pub fn build_notify_xml(user: &NotifyUser, app_key: &SecretString) -> String {
    let sig = app_signature(&user.signed_fields(), app_key);
    let mut x = String::from("<xml><OpenId>");
    push_cdata(&mut x, &user.open_id);
    x.push_str("</OpenId><AppId>");
    push_cdata(&mut x, &user.app_id);
    x.push_str("</AppId><IsSubscribe>");
    x.push_str(if user.is_subscribe { "1" } else { "0" });
    x.push_str("</IsSubscribe><TimeStamp>");
    x.push_str(&user.timestamp.to_string());
    x.push_str("</TimeStamp><NonceStr>");
    push_cdata(&mut x, &user.nonce_str);
    x.push_str("</NonceStr><AppSignature>");
    push_cdata(&mut x, &sig);
    x.push_str("</AppSignature><SignMethod>");
    push_cdata(&mut x, SIGN_METHOD_SHA1);
    x.push_str("</SignMethod></xml>");
    x
}

/// A notify whose MD5 (and, when a body was given, SHA-1) signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNotify {
    /// Every decoded query parameter (sign removed).
    pub params: BTreeMap<String, String>,
    pub trade_mode: String,
    pub trade_state: String,
    pub partner: String,
    pub total_fee: Fen,
    pub discount: Option<Fen>,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub attach: Option<String>,
    pub time_end: Option<String>,
    pub bank_type: Option<String>,
    pub notify_id: Option<String>,
    /// The user from the XML body; `None` when the body was empty.
    pub user: Option<NotifyUser>,
}

impl VerifiedNotify {
    /// `trade_mode == "1" && trade_state == "0"` (instant payment, paid).
    pub fn is_success(&self) -> bool {
        self.trade_mode == "1" && self.trade_state == "0"
    }

    /// `total_fee + discount`: what the order originally asked for (compare this with the
    /// order). `None` on overflow.
    pub fn requested_total(&self) -> Option<Fen> {
        self.total_fee
            .checked_add(self.discount.unwrap_or(Fen::ZERO))
    }
}

fn verify_notify_xml(body: &[u8], app_key: &SecretString) -> Result<NotifyUser, ProtoError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ProtoError::malformed("notify XML", "body is not UTF-8"))?;
    let raw = crate::v2::parse_xml(text)
        .map_err(|e| ProtoError::malformed("notify XML", e.to_string()))?;
    let mut m = BTreeMap::new();
    for (k, v) in raw {
        let k = k.to_ascii_lowercase();
        if m.insert(k.clone(), v).is_some() {
            return Err(ProtoError::malformed(
                "notify XML",
                format!("duplicate element `{k}`"),
            ));
        }
    }
    let given = m
        .remove("appsignature")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("AppSignature", "missing from the notify XML"))?;
    if let Some(method) = m.remove("signmethod")
        && !method.eq_ignore_ascii_case(SIGN_METHOD_SHA1)
    {
        return Err(invalid("SignMethod", "must be sha1"));
    }
    if !verify_app_signature(&m, app_key, &given) {
        return Err(ProtoError::BadSignature {
            what: "notify XML AppSignature (SHA1 with appkey)",
        });
    }
    let is_subscribe = match m.get("issubscribe").map(String::as_str) {
        Some("1") => true,
        Some("0") | Some("") | None => false,
        Some(_) => return Err(invalid("IsSubscribe", "must be 0 or 1")),
    };
    let timestamp = match m.get("timestamp") {
        Some(t) => t
            .trim()
            .parse::<i64>()
            .map_err(|_| invalid("TimeStamp", "not an integer"))?,
        None => return Err(invalid("TimeStamp", "missing from the notify XML")),
    };
    Ok(NotifyUser {
        open_id: required(&m, "openid")
            .map_err(|_| invalid("OpenId", "missing"))?
            .clone(),
        app_id: required(&m, "appid")
            .map_err(|_| invalid("AppId", "missing"))?
            .clone(),
        is_subscribe,
        timestamp,
        nonce_str: m.get("noncestr").cloned().unwrap_or_default(),
    })
}

/// Verifies a Tenpay notify (server side). First the MD5 over the decoded query (partner key,
/// `input_charset`, GBK when absent), then — when `body` is not blank — the XML `AppSignature`
/// (SHA-1 with the appkey). Only then are the fields read: `total_fee`/`discount` as fen.
/// Errors name the failed check (`BadSignature { what }`, `InvalidField { field }`, `Malformed`).
/// Never panics.
pub fn verify_notify(
    query: &str,
    body: &[u8],
    partner_key: &SecretString,
    app_key: &SecretString,
) -> Result<VerifiedNotify, ProtoError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let (cs, mut params) = parse_with_charset(query)?;
    let sign = params.remove("sign").unwrap_or_default();
    if sign.is_empty() {
        return Err(invalid("sign", "missing from the notify query"));
    }
    if let Some(t) = params.get("sign_type")
        && !t.is_empty()
        && !t.eq_ignore_ascii_case("MD5")
    {
        return Err(invalid("sign_type", "must be MD5"));
    }
    let expected = md5_sign(&params, partner_key, cs)?;
    if !ct_eq_ignore_ascii_case(&expected, &sign) {
        return Err(ProtoError::BadSignature {
            what: "notify query sign (MD5 with partnerKey)",
        });
    }

    let user = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(verify_notify_xml(body, app_key)?)
    };

    Ok(VerifiedNotify {
        trade_mode: params.get("trade_mode").cloned().unwrap_or_default(),
        trade_state: required(&params, "trade_state")?.clone(),
        partner: required(&params, "partner")?.clone(),
        total_fee: fen_field("total_fee", required(&params, "total_fee")?)?,
        discount: optional_fen(&params, "discount")?,
        transaction_id: params.get("transaction_id").cloned().unwrap_or_default(),
        out_trade_no: required(&params, "out_trade_no")?.clone(),
        attach: optional(&params, "attach"),
        time_end: optional(&params, "time_end"),
        bank_type: optional(&params, "bank_type"),
        notify_id: optional(&params, "notify_id"),
        user,
        params,
    })
}

// ---------------------------------------------------------------------------------------------
// Beijing time yyyyMMddHHmmss
// ---------------------------------------------------------------------------------------------

const BEIJING_OFFSET_SECS: i64 = 8 * 3600;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// `yyyyMMddHHmmss` of a Unix time in Beijing time (UTC+8). Exact for years 0000–9999; times
/// outside that range are clamped to it (the format has four year digits).
pub fn format_time(unix: i64) -> String {
    // 0000-01-01T00:00:00+08:00 and 9999-12-31T23:59:59+08:00
    const MIN: i64 = -62_167_248_000;
    const MAX: i64 = 253_402_271_999;
    let local = unix.clamp(MIN, MAX) + BEIJING_OFFSET_SECS;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Parses `yyyyMMddHHmmss` (Beijing time) to Unix seconds. Exactly 14 digits, a real calendar
/// date, hours 00–23, minutes and seconds 00–59.
pub fn parse_time(s: &str) -> Result<i64, ProtoError> {
    let bad = || invalid("time", format!("{s:?} is not yyyyMMddHHmmss"));
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> i64 {
        s.as_bytes()[r]
            .iter()
            .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'))
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4),
        num(4..6),
        num(6..8),
        num(8..10),
        num(10..12),
        num(12..14),
    );
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59
    {
        return Err(bad());
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - BEIJING_OFFSET_SECS)
}

#[cfg(test)]
mod tests;
