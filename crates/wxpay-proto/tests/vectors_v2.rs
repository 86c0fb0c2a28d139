//! The APIv2 signing example (shared/vectors/v2.json, PROTOCOL.md C) reproduced bit for bit.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use wxpay_proto::v2::{SignType, parse_xml, sign, string_to_sign, to_xml, verify};
use wxpay_proto::{ExposeSecret, SecretString};

/// The HMAC-SHA256 signature of the same example. It is not in v2.json; PROTOCOL.md section C
/// ("Official example [verified]") gives it.
const HMAC_SHA256_FROM_PROTOCOL_C: &str =
    "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6";

/// Reads shared/vectors/v2.json, panicking with a clear message if it is missing.
fn v2() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/v2.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "test vector file {} is missing or unreadable ({e}); the shared/ folder must sit beside \
             the work tree (CARGO_MANIFEST_DIR/../../../shared/vectors)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("v2.json is valid JSON")
}

fn example() -> (BTreeMap<String, String>, SecretString, Value) {
    let v = v2();
    let sv = v["sign"].clone();
    let params = sv["params"]
        .as_object()
        .expect("v2.json: sign.params is an object")
        .iter()
        .map(|(k, x)| {
            (
                k.clone(),
                x.as_str().expect("params are strings").to_owned(),
            )
        })
        .collect();
    let key = SecretString::from(sv["key"].as_str().expect("v2.json: sign.key"));
    (params, key, sv)
}

#[test]
fn md5_example() {
    let (params, key, sv) = example();
    assert_eq!(
        string_to_sign(&params, &key).expose_secret(),
        sv["string_to_sign"].as_str().unwrap()
    );
    let md5 = sign(&params, &key, SignType::Md5);
    assert_eq!(md5, sv["md5"].as_str().unwrap());
    assert_eq!(md5, "9A0A8659F005D6984697E2CA0A9CF3B7");
}

#[test]
fn hmac_sha256_example() {
    let (params, key, _) = example();
    assert_eq!(
        sign(&params, &key, SignType::HmacSha256),
        HMAC_SHA256_FROM_PROTOCOL_C
    );
}

#[test]
fn verify_picks_the_algorithm_by_length() {
    let (mut params, key, sv) = example();
    params.insert("sign".into(), sv["md5"].as_str().unwrap().into());
    assert!(verify(&params, &key));
    params.insert("sign".into(), HMAC_SHA256_FROM_PROTOCOL_C.into());
    assert!(verify(&params, &key));
    params.insert(
        "sign".into(),
        HMAC_SHA256_FROM_PROTOCOL_C.to_ascii_lowercase(),
    );
    assert!(verify(&params, &key));
    params.insert("body".into(), "test2".into());
    assert!(!verify(&params, &key));
}

#[test]
fn example_survives_the_xml_wire_format() {
    let (mut params, key, _) = example();
    params.insert("sign".into(), sign(&params, &key, SignType::Md5));
    let xml = to_xml(&params);
    let back = parse_xml(&xml).unwrap();
    assert_eq!(back, params);
    assert!(verify(&back, &key));
}
