//! Official APIv3 vectors (shared/vectors/v3.json) reproduced bit for bit.

use std::path::PathBuf;

use serde_json::Value;
use wxpay_proto::ProtoError;
use wxpay_proto::v3::aead::{self, ApiV3Key};
use wxpay_proto::v3::auth::{
    Authorization, MerchantSigner, SIGNATURE_TYPE, app_pay_message, jsapi_pay_message,
    request_message, response_message,
};
use wxpay_proto::v3::rsa::{RsaPrivateKey, RsaPublicKey};
use wxpay_proto::v3::verify::{PublicKeyVerifier, SignedHeaders, VerifyError, validate};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}

/// Reads a file below shared/vectors/, panicking with a clear message if it is missing.
fn read_vector_file(rel: &str) -> String {
    let path = vectors_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "test vector file {} is missing or unreadable ({e}); the shared/ folder must sit beside the \
             work tree (CARGO_MANIFEST_DIR/../../../shared/vectors)",
            path.display()
        )
    })
}

fn v3() -> Value {
    serde_json::from_str(&read_vector_file("v3.json")).expect("v3.json is valid JSON")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("v3.json: missing string field {k}"))
}

fn merchant_key(v: &Value) -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(&read_vector_file(s(v, "private_key")))
        .expect("official_test_key.pem parses")
}

#[test]
fn request_signature_message_signature_and_header() {
    let all = v3();
    let v = &all["request_signature"];
    let key = merchant_key(v);
    let ts: i64 = s(v, "timestamp").parse().unwrap();
    let msg = request_message(
        s(v, "method"),
        s(v, "url"),
        ts,
        s(v, "nonce"),
        s(v, "body").as_bytes(),
    );
    assert_eq!(String::from_utf8(msg.clone()).unwrap(), s(v, "message"));
    assert_eq!(key.sign_sha256_base64(&msg), s(v, "signature"));

    let signer = MerchantSigner::new(s(v, "mchid"), s(v, "serial_no"), key.clone());
    let header = signer.authorization(
        s(v, "method"),
        s(v, "url"),
        ts,
        s(v, "nonce"),
        s(v, "body").as_bytes(),
    );
    assert_eq!(
        header,
        format!(
            "{SIGNATURE_TYPE} mchid=\"{}\",nonce_str=\"{}\",signature=\"{}\",timestamp=\"{}\",serial_no=\"{}\"",
            s(v, "mchid"),
            s(v, "nonce"),
            s(v, "signature"),
            s(v, "timestamp"),
            s(v, "serial_no")
        )
    );
    let parsed = Authorization::parse(&header).unwrap();
    assert_eq!(parsed.mchid, s(v, "mchid"));
    assert_eq!(parsed.nonce_str, s(v, "nonce"));
    assert_eq!(parsed.signature, s(v, "signature"));
    assert_eq!(parsed.timestamp, ts);
    assert_eq!(parsed.serial_no, s(v, "serial_no"));
    // The sandbox side: the parsed header verifies with the merchant public key ...
    let pk = key.public_key();
    assert!(parsed.verify(&pk, s(v, "method"), s(v, "url"), s(v, "body").as_bytes()));
    // ... and not for another body, URL or method.
    assert!(!parsed.verify(&pk, s(v, "method"), s(v, "url"), b"{}"));
    assert!(!parsed.verify(
        &pk,
        s(v, "method"),
        "/v3/pay/transactions/app",
        s(v, "body").as_bytes()
    ));
    assert!(!parsed.verify(&pk, "GET", s(v, "url"), s(v, "body").as_bytes()));

    // Dropping the trailing newline (common mistake #1) gives a different signature.
    let m = s(v, "message");
    assert_ne!(
        key.sign_sha256_base64(&m.as_bytes()[..m.len() - 1]),
        s(v, "signature")
    );
    assert!(!pk.verify_sha256_base64(&m.as_bytes()[..m.len() - 1], s(v, "signature")));
}

#[test]
fn jsapi_pay_sign_and_app_pay_sign() {
    let all = v3();
    let v = &all["jsapi_pay_sign"];
    let key = merchant_key(v);
    let message = s(v, "message");
    assert_eq!(
        key.sign_sha256_base64(message.as_bytes()),
        s(v, "signature")
    );

    // The same message built from its parts.
    let parts: Vec<&str> = message.trim_end_matches('\n').split('\n').collect();
    let ts: i64 = parts[1].parse().unwrap();
    let prepay_id = parts[3].strip_prefix("prepay_id=").unwrap();
    assert_eq!(
        jsapi_pay_message(parts[0], ts, parts[2], prepay_id),
        message.as_bytes()
    );
    let signer = MerchantSigner::new(
        "1900007291",
        "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB",
        key.clone(),
    );
    assert_eq!(
        signer.jsapi_pay_sign(parts[0], ts, parts[2], prepay_id),
        s(v, "signature")
    );

    // APP: the bare prepay id on line 4; verifies with the public key.
    let app_sign = signer.app_pay_sign(parts[0], ts, parts[2], prepay_id);
    assert_ne!(app_sign, s(v, "signature"));
    let pk = key.public_key();
    let app_msg = app_pay_message(parts[0], ts, parts[2], prepay_id);
    assert_eq!(
        app_msg,
        format!("{}\n{ts}\n{}\n{prepay_id}\n", parts[0], parts[2]).as_bytes()
    );
    assert!(pk.verify_sha256_base64(&app_msg, &app_sign));
    assert!(!pk.verify_sha256_base64(message.as_bytes(), &app_sign));

    let params = signer.app_pay_params(parts[0], prepay_id, ts, parts[2]);
    assert_eq!(params.sign, app_sign);
    assert_eq!(params.package, "Sign=WXPay");
    assert_eq!(params.partnerid, "1900007291");
    assert_eq!(params.prepayid, prepay_id);
    assert_eq!(params.timestamp, "1554208460");
}

#[test]
fn response_verified_with_public_key_signtest_expiry_unknown_serial() {
    let all = v3();
    let v = &all["response_verify_public_key"];
    assert_eq!(v["must_verify"], Value::Bool(true));
    let pk =
        RsaPublicKey::from_spki_pem(&read_vector_file(s(v, "public_key"))).expect("pubkey parses");
    let verifier = PublicKeyVerifier::new(s(v, "serial"), pk.clone());
    let ts: i64 = s(v, "timestamp").parse().unwrap();
    let body = s(v, "body").as_bytes();
    let headers = SignedHeaders {
        timestamp: s(v, "timestamp").to_string(),
        nonce: s(v, "nonce").to_string(),
        signature: s(v, "signature").to_string(),
        serial: s(v, "serial").to_string(),
    };

    assert!(pk.verify_sha256_base64(
        &response_message(ts, s(v, "nonce"), body),
        s(v, "signature")
    ));
    assert_eq!(validate(&verifier, &headers, body, ts), Ok(()));
    assert_eq!(validate(&verifier, &headers, body, ts + 300), Ok(()));
    assert_eq!(validate(&verifier, &headers, body, ts - 300), Ok(()));

    // SIGNTEST probe: fails exactly like any bad signature.
    let mut probe = headers.clone();
    probe.signature = format!("WECHATPAY/SIGNTEST/{}", s(v, "signature"));
    assert_eq!(
        validate(&verifier, &probe, body, ts),
        Err(VerifyError::BadSignature)
    );

    // Replay window.
    assert_eq!(
        validate(&verifier, &headers, body, ts + 301),
        Err(VerifyError::Expired { skew: 301 })
    );
    assert_eq!(
        validate(&verifier, &headers, body, ts - 301),
        Err(VerifyError::Expired { skew: -301 })
    );

    // Unknown serial.
    let mut unknown = headers.clone();
    unknown.serial = "PUB_KEY_ID_0000000000000024101100397200000007".into();
    assert_eq!(
        validate(&verifier, &unknown, body, ts),
        Err(VerifyError::UnknownSerial(
            "PUB_KEY_ID_0000000000000024101100397200000007".into()
        ))
    );

    // Any other body fails.
    assert_eq!(
        validate(
            &verifier,
            &headers,
            br#"{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz2"}"#,
            ts
        ),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn aead_vector_decrypt_and_encrypt() {
    let all = v3();
    let v = &all["aead_aes_256_gcm"];
    let key = ApiV3Key::new(s(v, "key")).unwrap();
    let plain = aead::decrypt(
        &key,
        s(v, "nonce"),
        s(v, "associated_data"),
        s(v, "ciphertext_base64"),
    )
    .unwrap();
    assert_eq!(plain, s(v, "plaintext").as_bytes());
    let ct = aead::encrypt(
        &key,
        s(v, "nonce"),
        s(v, "associated_data"),
        s(v, "plaintext").as_bytes(),
    )
    .unwrap();
    assert_eq!(ct, s(v, "ciphertext_base64"));

    // Via the resource type of notifications.
    let res = wxpay_proto::v3::model::EncryptedResource {
        original_type: None,
        algorithm: "AEAD_AES_256_GCM".into(),
        ciphertext: s(v, "ciphertext_base64").into(),
        associated_data: Some(s(v, "associated_data").into()),
        nonce: s(v, "nonce").into(),
    };
    assert_eq!(res.decrypt(&key).unwrap(), s(v, "plaintext").as_bytes());
}

#[test]
fn apiv3_keys_of_31_and_33_bytes_are_rejected() {
    let all = v3();
    let k = s(&all["aead_aes_256_gcm"], "key");
    assert_eq!(k.len(), 32);
    for bad in [&k[..31], &format!("{k}x")[..]] {
        assert!(
            matches!(ApiV3Key::new(bad), Err(ProtoError::InvalidKey(_))),
            "{} bytes accepted",
            bad.len()
        );
    }
}
