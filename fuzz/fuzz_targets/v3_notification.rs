//! APIv3 callback handling on attacker-controlled input: the signature headers and the body
//! arrive from the network. The input is split at NUL bytes into
//! `Wechatpay-Timestamp \0 Wechatpay-Nonce \0 Wechatpay-Signature \0 Wechatpay-Serial \0 body`
//! (missing parts are empty). Everything goes through `verify::validate`, then — to reach the
//! parsers even when the signature fails, which a real handler must never do — through
//! `Notification` parsing, `EncryptedResource::decrypt` and the resource JSON types, and the
//! header strings through `Authorization::parse`. Nothing may panic, and nothing may verify.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::auth::Authorization;
use wxpay_proto::v3::model::Notification;
use wxpay_proto::v3::rsa::RsaPublicKey;
use wxpay_proto::v3::verify::{
    CertificateVerifier, CombinedVerifier, PublicKeyVerifier, SignedHeaders, validate,
};

/// shared/vectors/keys/official_pubkey_example.pem (public, from the official documentation).
const PUB_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwXNI6sdlknHBnK8Fu2U6
Cwor9qY747jP8KAfeBMeveEt1TqaHkLfaSD07trZLhGpfs8/AHqjhgSMO1O10YQW
OrrJ4hjIWPKqxbgrYMkBQc+mwdiWp4W3ByCqxBRagCveCXRWCmuJYovl9H/bsDI0
iGbpVtEOghJtfciisYSgxcLufUDTRkvwxjIBK1pCRjk33jJ5YTBWTHMRtMAOcFLN
F6hdEYdX8SPsgHHeLZ5Lv2T/686w1xtgCHef/sd4uSfWmyzsalQdHG/e4IyYmrhx
+O3VBoNDzE3nx23bFeV/RVNCG7cV6VhmYokJNHa/erIPkEmEFID6A5wQOXuxUkmJ
WwIDAQAB
-----END PUBLIC KEY-----
";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";
/// The AEAD vector key of shared/vectors/v3.json.
const API_V3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
/// The timestamp of the public-key vector: inputs that reuse it land inside the window.
const NOW: i64 = 1_722_850_421;

fn verifier() -> &'static CombinedVerifier {
    static V: OnceLock<CombinedVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let pk = RsaPublicKey::from_spki_pem(PUB_KEY_PEM).expect("embedded public key parses");
        CombinedVerifier::new(
            PublicKeyVerifier::new(PUB_KEY_ID, pk),
            CertificateVerifier::new(Vec::new()),
        )
    })
}

fn key() -> &'static ApiV3Key {
    static K: OnceLock<ApiV3Key> = OnceLock::new();
    K.get_or_init(|| ApiV3Key::new(API_V3_KEY).expect("32-byte key"))
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |&b| b == 0);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
    let headers = SignedHeaders {
        timestamp: next(),
        nonce: next(),
        signature: next(),
        serial: next(),
    };
    let body = parts.next().unwrap_or(&[]);

    // The only valid signature for the official public key in our vectors is over a fixed body;
    // arbitrary input must not verify.
    if validate(verifier(), &headers, body, NOW).is_ok() {
        assert_eq!(
            body, br#"{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}"#,
            "forged input verified"
        );
    }

    for h in [
        &headers.timestamp,
        &headers.nonce,
        &headers.signature,
        &headers.serial,
    ] {
        let _ = Authorization::parse(h);
    }

    if let Ok(n) = Notification::from_slice(body) {
        let _ = n.resource.decrypt(key());
        let _ = n.decrypt_transaction(key());
        let _ = n.decrypt_refund(key());
    }
});
