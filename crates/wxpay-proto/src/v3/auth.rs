//! APIv3 request signing (PROTOCOL.md B.2), the messages of response verification (B.3) and of
//! the APP / JSAPI client pay sign (B.6), and parsing of the `Authorization` header (sandbox side).
//!
//! Every message line ends in `\n`, including the last one; an empty body still contributes its
//! (empty) line.

use std::fmt;

use crate::error::ProtoError;
use crate::v3::rsa::{RsaPrivateKey, RsaPublicKey};

/// The `Authorization` scheme and the `Wechatpay-Signature-Type` value.
pub const SIGNATURE_TYPE: &str = "WECHATPAY2-SHA256-RSA2048";

/// The literal `package` value of the APP client pay parameters.
pub const APP_PACKAGE: &str = "Sign=WXPay";

/// Joins `lines`, each followed by `\n`.
pub(crate) fn lines_message(lines: &[&[u8]]) -> Vec<u8> {
    let len = lines.iter().map(|l| l.len() + 1).sum();
    let mut out = Vec::with_capacity(len);
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// `METHOD\nCANONICAL_URL\nTIMESTAMP\nNONCE\nBODY\n` (B.2). `canonical_url` is path plus
/// `?query` exactly as sent; `body` the exact bytes sent (empty for GET/DELETE).
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let ts = timestamp.to_string();
    lines_message(&[
        method.as_bytes(),
        canonical_url.as_bytes(),
        ts.as_bytes(),
        nonce.as_bytes(),
        body,
    ])
}

/// `TIMESTAMP\nNONCE\nBODY\n` (B.3) — what WeChat signs on responses and callbacks.
pub fn response_message(timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let ts = timestamp.to_string();
    response_message_raw(&ts, nonce, body)
}

/// Like [`response_message`] with the timestamp exactly as received in `Wechatpay-Timestamp`
/// (verification must use the received bytes, not a re-formatted number).
pub fn response_message_raw(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    lines_message(&[timestamp.as_bytes(), nonce.as_bytes(), body])
}

/// `APPID\nTIMESTAMP\nNONCESTR\nPREPAYID\n` (B.6) — the APP pay sign message; `prepayid` is the
/// bare prepay id.
pub fn app_pay_message(appid: &str, timestamp: i64, noncestr: &str, prepayid: &str) -> Vec<u8> {
    let ts = timestamp.to_string();
    lines_message(&[
        appid.as_bytes(),
        ts.as_bytes(),
        noncestr.as_bytes(),
        prepayid.as_bytes(),
    ])
}

/// The JSAPI / mini-program pay sign message: like [`app_pay_message`] but line 4 is
/// `prepay_id=<id>`.
pub fn jsapi_pay_message(appid: &str, timestamp: i64, noncestr: &str, prepay_id: &str) -> Vec<u8> {
    let ts = timestamp.to_string();
    let package = format!("prepay_id={prepay_id}");
    lines_message(&[
        appid.as_bytes(),
        ts.as_bytes(),
        noncestr.as_bytes(),
        package.as_bytes(),
    ])
}

/// Signs requests and client pay parameters with the merchant private key.
#[derive(Clone, Debug)]
pub struct MerchantSigner {
    /// Merchant id (`mchid`).
    pub mchid: String,
    /// Serial number of the merchant API certificate (upper-case hex).
    pub serial_no: String,
    key: RsaPrivateKey,
}

impl MerchantSigner {
    pub fn new(mchid: impl Into<String>, serial_no: impl Into<String>, key: RsaPrivateKey) -> Self {
        MerchantSigner {
            mchid: mchid.into(),
            serial_no: serial_no.into(),
            key,
        }
    }

    /// The private key (e.g. for OAEP-decrypting sensitive response fields).
    pub fn key(&self) -> &RsaPrivateKey {
        &self.key
    }

    /// Signature (Base64) of the request message.
    pub fn sign_request(
        &self,
        method: &str,
        canonical_url: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> String {
        self.key.sign_sha256_base64(&request_message(
            method,
            canonical_url,
            timestamp,
            nonce,
            body,
        ))
    }

    /// The whole `Authorization` header value:
    /// `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
    pub fn authorization(
        &self,
        method: &str,
        canonical_url: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> String {
        Authorization {
            mchid: self.mchid.clone(),
            nonce_str: nonce.to_string(),
            signature: self.sign_request(method, canonical_url, timestamp, nonce, body),
            timestamp,
            serial_no: self.serial_no.clone(),
        }
        .to_string()
    }

    /// The APP `sign` (B.6): Base64 signature of [`app_pay_message`].
    pub fn app_pay_sign(
        &self,
        appid: &str,
        timestamp: i64,
        noncestr: &str,
        prepayid: &str,
    ) -> String {
        self.key
            .sign_sha256_base64(&app_pay_message(appid, timestamp, noncestr, prepayid))
    }

    /// The JSAPI `paySign`: Base64 signature of [`jsapi_pay_message`].
    pub fn jsapi_pay_sign(
        &self,
        appid: &str,
        timestamp: i64,
        noncestr: &str,
        prepay_id: &str,
    ) -> String {
        self.key
            .sign_sha256_base64(&jsapi_pay_message(appid, timestamp, noncestr, prepay_id))
    }

    /// The complete APP client parameters (B.6) with `partnerid` = mchid and
    /// `package` = `Sign=WXPay`; the same nonce and timestamp are signed and returned.
    pub fn app_pay_params(
        &self,
        appid: &str,
        prepayid: &str,
        timestamp: i64,
        noncestr: &str,
    ) -> crate::v3::model::AppPayParams {
        crate::v3::model::AppPayParams {
            appid: appid.to_string(),
            partnerid: self.mchid.clone(),
            prepayid: prepayid.to_string(),
            package: APP_PACKAGE.to_string(),
            noncestr: noncestr.to_string(),
            timestamp: timestamp.to_string(),
            sign: self.app_pay_sign(appid, timestamp, noncestr, prepayid),
        }
    }
}

/// A parsed `Authorization` header (the sandbox verifies merchants with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: i64,
    pub serial_no: String,
}

impl fmt::Display for Authorization {
    /// The header value, parameters in the SDKs' order, no spaces after commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SIGNATURE_TYPE} mchid=\"{}\",nonce_str=\"{}\",signature=\"{}\",timestamp=\"{}\",serial_no=\"{}\"",
            self.mchid, self.nonce_str, self.signature, self.timestamp, self.serial_no
        )
    }
}

fn auth_err(reason: impl Into<String>) -> ProtoError {
    ProtoError::malformed("Authorization header", reason)
}

impl Authorization {
    /// Parses `WECHATPAY2-SHA256-RSA2048 k="v",k="v",…`. Parameter order is free; whitespace around
    /// parameters is tolerated; every one of `mchid`, `nonce_str`, `signature`, `timestamp`,
    /// `serial_no` must appear exactly once, quoted and non-empty; unknown parameters are
    /// rejected. Never panics.
    pub fn parse(header: &str) -> Result<Self, ProtoError> {
        let header = header.trim();
        let (scheme, rest) = match header.find(|c: char| c.is_ascii_whitespace()) {
            Some(i) => (&header[..i], header[i..].trim_start()),
            None => (header, ""),
        };
        if scheme != SIGNATURE_TYPE {
            return Err(auth_err(format!("scheme must be `{SIGNATURE_TYPE}`")));
        }
        if rest.is_empty() {
            return Err(auth_err("no parameters after the scheme"));
        }

        let mut mchid = None;
        let mut nonce_str = None;
        let mut signature = None;
        let mut timestamp = None;
        let mut serial_no = None;

        let mut s = rest;
        loop {
            s = s.trim_start();
            let eq = s
                .find('=')
                .ok_or_else(|| auth_err("expected `name=\"value\"`"))?;
            let name = s[..eq].trim_end();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                return Err(auth_err("bad parameter name"));
            }
            let after = s[eq + 1..].trim_start();
            let after = after
                .strip_prefix('"')
                .ok_or_else(|| auth_err(format!("value of `{name}` must be quoted")))?;
            let close = after
                .find('"')
                .ok_or_else(|| auth_err(format!("unterminated value of `{name}`")))?;
            let value = &after[..close];
            if value.is_empty() {
                return Err(auth_err(format!("empty `{name}`")));
            }
            if value.chars().any(|c| c.is_control() || c == '\\') {
                return Err(auth_err(format!("invalid character in `{name}`")));
            }
            let slot = match name {
                "mchid" => &mut mchid,
                "nonce_str" => &mut nonce_str,
                "signature" => &mut signature,
                "timestamp" => &mut timestamp,
                "serial_no" => &mut serial_no,
                other => return Err(auth_err(format!("unknown parameter `{other}`"))),
            };
            if slot.replace(value).is_some() {
                return Err(auth_err(format!("duplicate parameter `{name}`")));
            }
            let tail = after[close + 1..].trim_start();
            if tail.is_empty() {
                break;
            }
            s = tail
                .strip_prefix(',')
                .ok_or_else(|| auth_err(format!("expected `,` after `{name}`")))?;
        }

        let need = |v: Option<&str>, n: &str| {
            v.map(str::to_string)
                .ok_or_else(|| auth_err(format!("missing `{n}`")))
        };
        let ts_str = need(timestamp, "timestamp")?;
        let timestamp = parse_unix_seconds(&ts_str).ok_or_else(|| {
            auth_err("`timestamp` must be unix seconds (digits, no leading zero)")
        })?;
        Ok(Authorization {
            mchid: need(mchid, "mchid")?,
            nonce_str: need(nonce_str, "nonce_str")?,
            signature: need(signature, "signature")?,
            timestamp,
            serial_no: need(serial_no, "serial_no")?,
        })
    }

    /// The request message this header's signature must cover.
    pub fn message(&self, method: &str, canonical_url: &str, body: &[u8]) -> Vec<u8> {
        request_message(method, canonical_url, self.timestamp, &self.nonce_str, body)
    }

    /// Verifies the signature with the merchant's public key (the timestamp window is the
    /// caller's business: compare `timestamp` with its clock).
    pub fn verify(
        &self,
        key: &RsaPublicKey,
        method: &str,
        canonical_url: &str,
        body: &[u8],
    ) -> bool {
        key.verify_sha256_base64(&self.message(method, canonical_url, body), &self.signature)
    }
}

/// Canonical non-negative decimal seconds: ASCII digits, no sign, no leading zero (except "0"),
/// fits i64.
pub(crate) fn parse_unix_seconds(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_end_every_line_with_newline() {
        assert_eq!(
            request_message("GET", "/v3/x?a=1", 1, "N", b""),
            b"GET\n/v3/x?a=1\n1\nN\n\n"
        );
        assert_eq!(response_message(12, "n", b""), b"12\nn\n\n");
        assert_eq!(app_pay_message("wx1", 5, "n", "p"), b"wx1\n5\nn\np\n");
        assert_eq!(
            jsapi_pay_message("wx1", 5, "n", "p"),
            b"wx1\n5\nn\nprepay_id=p\n"
        );
    }

    #[test]
    fn parse_any_order_and_whitespace() {
        let h = "WECHATPAY2-SHA256-RSA2048  serial_no=\"AB\", timestamp=\"1554208460\" ,mchid=\"1\",signature=\"c2ln\",nonce_str=\"N\"";
        let a = Authorization::parse(h).unwrap();
        assert_eq!(a.mchid, "1");
        assert_eq!(a.nonce_str, "N");
        assert_eq!(a.signature, "c2ln");
        assert_eq!(a.timestamp, 1554208460);
        assert_eq!(a.serial_no, "AB");
        assert_eq!(Authorization::parse(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn parse_rejections() {
        let ok = "mchid=\"1\",nonce_str=\"N\",signature=\"S\",timestamp=\"1\",serial_no=\"AB\"";
        assert!(Authorization::parse(&format!("{SIGNATURE_TYPE} {ok}")).is_ok());
        for bad in [
            String::new(),
            SIGNATURE_TYPE.to_string(),
            format!("Bearer {ok}"),
            format!("wechatpay2-sha256-rsa2048 {ok}"),
            format!("{SIGNATURE_TYPE} {ok},mchid=\"2\""),
            format!("{SIGNATURE_TYPE} {ok},extra=\"2\""),
            format!("{SIGNATURE_TYPE} {ok},"),
            format!("{SIGNATURE_TYPE} {}", ok.replace("mchid=\"1\",", "")),
            format!("{SIGNATURE_TYPE} {}", ok.replace("\"1\",n", "1,n")),
            format!(
                "{SIGNATURE_TYPE} {}",
                ok.replace("timestamp=\"1\"", "timestamp=\"01\"")
            ),
            format!(
                "{SIGNATURE_TYPE} {}",
                ok.replace("timestamp=\"1\"", "timestamp=\"-1\"")
            ),
            format!(
                "{SIGNATURE_TYPE} {}",
                ok.replace("timestamp=\"1\"", "timestamp=\"1.5\"")
            ),
            format!(
                "{SIGNATURE_TYPE} {}",
                ok.replace("nonce_str=\"N\"", "nonce_str=\"\"")
            ),
            format!(
                "{SIGNATURE_TYPE} {}",
                ok.replace("serial_no=\"AB\"", "serial_no=\"AB")
            ),
            format!("{SIGNATURE_TYPE} {} junk", ok),
        ] {
            let e = Authorization::parse(&bad);
            assert!(
                matches!(e, Err(ProtoError::Malformed { .. })),
                "{bad:?} -> {e:?}"
            );
        }
    }
}
