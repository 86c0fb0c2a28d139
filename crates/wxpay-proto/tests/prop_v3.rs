//! Property tests for APIv3 signing, verification and parsing.

use std::sync::OnceLock;

use proptest::prelude::*;
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::auth::{Authorization, MerchantSigner, SIGNATURE_TYPE, response_message_raw};
use wxpay_proto::v3::model::{EncryptedResource, Notification, RefundNotification, Transaction};
use wxpay_proto::v3::rsa::RsaPrivateKey;
use wxpay_proto::v3::verify::{MAX_SKEW_SECS, PublicKeyVerifier, SignedHeaders, validate};

const PK_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";

fn key() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| RsaPrivateKey::generate_2048().expect("keygen"))
}

fn verifier() -> &'static PublicKeyVerifier {
    static V: OnceLock<PublicKeyVerifier> = OnceLock::new();
    V.get_or_init(|| PublicKeyVerifier::new(PK_ID, key().public_key()))
}

const B64_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

fn nonce() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,32}"
}

fn timestamp() -> impl Strategy<Value = i64> {
    1_000_000_000i64..4_000_000_000i64
}

/// Replaces byte `i % len` of `s` with a different byte drawn from `alphabet`.
fn mutate_ascii(s: &str, i: usize, pick: usize, alphabet: &[u8]) -> String {
    let mut b = s.as_bytes().to_vec();
    let i = i % b.len();
    let mut c = alphabet[pick % alphabet.len()];
    if c == b[i] {
        c = alphabet[(pick + 1) % alphabet.len()];
    }
    b[i] = c;
    String::from_utf8(b).expect("ASCII stays UTF-8")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn sign_then_validate_round_trips(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        n in nonce(),
        ts in timestamp(),
        skew in -MAX_SKEW_SECS..=MAX_SKEW_SECS,
    ) {
        let h = SignedHeaders::sign(key(), PK_ID, ts, &n, &body);
        prop_assert_eq!(validate(verifier(), &h, &body, ts + skew), Ok(()));
    }

    #[test]
    fn skew_beyond_window_fails(
        n in nonce(),
        ts in timestamp(),
        extra in 1i64..1_000_000,
        sign in any::<bool>(),
    ) {
        let body: &[u8] = b"{\"a\":1}";
        let h = SignedHeaders::sign(key(), PK_ID, ts, &n, body);
        let now = if sign { ts + MAX_SKEW_SECS + extra } else { ts - MAX_SKEW_SECS - extra };
        let r = validate(verifier(), &h, body, now);
        prop_assert!(r.is_err());
    }

    #[test]
    fn changed_body_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..256),
        n in nonce(),
        ts in timestamp(),
        i in any::<usize>(),
        x in 1u8..=255,
    ) {
        let h = SignedHeaders::sign(key(), PK_ID, ts, &n, &body);
        let mut b = body.clone();
        let i = i % b.len();
        b[i] ^= x;
        prop_assert!(validate(verifier(), &h, &b, ts).is_err());
        // and inserting or removing a byte fails too
        let mut longer = body.clone();
        longer.insert(i, x);
        prop_assert!(validate(verifier(), &h, &longer, ts).is_err());
        let mut shorter = body.clone();
        shorter.remove(i);
        prop_assert!(validate(verifier(), &h, &shorter, ts).is_err());
    }

    #[test]
    fn changed_timestamp_byte_fails(n in nonce(), ts in timestamp(), i in any::<usize>(), pick in any::<usize>()) {
        let h = SignedHeaders::sign(key(), PK_ID, ts, &n, b"body");
        let mut m = h.clone();
        m.timestamp = mutate_ascii(&h.timestamp, i, pick, b"0123456789 +-xA");
        // `now` equal to the original timestamp: a nearby forged timestamp is inside the window,
        // so the signature itself must fail.
        prop_assert!(validate(verifier(), &m, b"body", ts).is_err());
    }

    #[test]
    fn changed_nonce_byte_fails(n in nonce(), ts in timestamp(), i in any::<usize>(), pick in any::<usize>()) {
        let h = SignedHeaders::sign(key(), PK_ID, ts, &n, b"body");
        let mut m = h.clone();
        m.nonce = mutate_ascii(&h.nonce, i, pick, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
        prop_assert!(validate(verifier(), &m, b"body", ts).is_err());
    }

    #[test]
    fn changed_signature_byte_fails(n in nonce(), ts in timestamp(), i in any::<usize>(), pick in any::<usize>()) {
        let h = SignedHeaders::sign(key(), PK_ID, ts, &n, b"body");
        let mut m = h.clone();
        m.signature = mutate_ascii(&h.signature, i, pick, B64_ALPHABET);
        prop_assert!(validate(verifier(), &m, b"body", ts).is_err());
        // SIGNTEST-prefixed signatures never pass
        let mut probe = h.clone();
        probe.signature = format!("WECHATPAY/SIGNTEST/{}", h.signature);
        prop_assert!(validate(verifier(), &probe, b"body", ts).is_err());
    }

    #[test]
    fn message_without_trailing_newline_fails(
        body in proptest::collection::vec(any::<u8>(), 0..128),
        n in nonce(),
        ts in timestamp(),
    ) {
        let ts_s = ts.to_string();
        let mut msg = response_message_raw(&ts_s, &n, &body);
        prop_assert_eq!(msg.pop(), Some(b'\n'));
        let h = SignedHeaders { timestamp: ts_s, nonce: n, signature: key().sign_sha256_base64(&msg), serial: PK_ID.into() };
        prop_assert!(validate(verifier(), &h, &body, ts).is_err());
    }

    #[test]
    fn authorization_round_trips(
        mchid in "[0-9]{1,32}",
        serial in "[0-9A-F]{40}",
        n in nonce(),
        ts in timestamp(),
        url in "/v3/[a-z/_-]{0,40}(\\?[a-z]{1,5}=[0-9]{1,10})?",
        body in ".{0,64}",
    ) {
        let signer = MerchantSigner::new(mchid.clone(), serial.clone(), key().clone());
        let header = signer.authorization("POST", &url, ts, &n, body.as_bytes());
        let a = Authorization::parse(&header).unwrap();
        prop_assert_eq!(&a.mchid, &mchid);
        prop_assert_eq!(&a.serial_no, &serial);
        prop_assert_eq!(&a.nonce_str, &n);
        prop_assert_eq!(a.timestamp, ts);
        prop_assert!(a.verify(&key().public_key(), "POST", &url, body.as_bytes()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn authorization_parse_never_panics(s in any::<String>()) {
        let _ = Authorization::parse(&s);
        let _ = Authorization::parse(&format!("{SIGNATURE_TYPE} {s}"));
    }

    #[test]
    fn authorization_parse_never_panics_on_near_misses(
        parts in proptest::collection::vec(
            ("(mchid|nonce_str|signature|timestamp|serial_no|x|)", "[ =\",\\\\a-zA-Z0-9+/é\u{1F600}]{0,12}"),
            0..8,
        ),
        sep in "[ ,\t]{0,3}",
    ) {
        let body: Vec<String> = parts.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let _ = Authorization::parse(&format!("{SIGNATURE_TYPE} {}", body.join(&sep)));
        let raw: Vec<String> = parts.iter().map(|(k, v)| format!("{k}{v}")).collect();
        let _ = Authorization::parse(&format!("{SIGNATURE_TYPE} {}", raw.join(&sep)));
    }

    #[test]
    fn json_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Notification::from_slice(&bytes);
        let _ = serde_json::from_slice::<Transaction>(&bytes);
        let _ = serde_json::from_slice::<RefundNotification>(&bytes);
    }

    #[test]
    fn validate_never_panics(
        ts in ".{0,24}", n in ".{0,40}", sig in ".{0,400}", serial in ".{0,60}",
        body in proptest::collection::vec(any::<u8>(), 0..64), now in any::<i64>(),
    ) {
        let h = SignedHeaders { timestamp: ts, nonce: n, signature: sig, serial };
        prop_assert!(validate(verifier(), &h, &body, now).is_err());
    }

    #[test]
    fn resource_decrypt_never_panics(
        ct in ".{0,200}", nonce in ".{0,16}", ad in proptest::option::of(".{0,16}"), alg in "(AEAD_AES_256_GCM|.{0,20})",
    ) {
        let key = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
        let r = EncryptedResource { original_type: None, algorithm: alg, ciphertext: ct, associated_data: ad, nonce };
        prop_assert!(r.decrypt(&key).is_err());
    }
}

/// Structured JSON that looks like a notification, with random field values, never panics and
/// round-trips when it parses.
#[test]
fn notification_shapes() {
    let ok = br#"{"id":"EV-1","create_time":"2015-05-20T13:29:35+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"","nonce":"n"}}"#;
    let n = Notification::from_slice(ok).unwrap();
    assert_eq!(
        Notification::from_slice(&serde_json::to_vec(&n).unwrap()).unwrap(),
        n
    );
    for bad in [
        &b"null"[..],
        b"[]",
        b"{\"id\":1}",
        b"{\"resource\":null}",
        b"\"x\"",
    ] {
        assert!(Notification::from_slice(bad).is_err());
    }
}
