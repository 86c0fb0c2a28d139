//! The 2014 protocol vectors (shared/vectors/legacy.json) reproduced bit for bit.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use wxpay_proto::legacy::{
    GenPrepayRequest, Package, app_signature, encode_package, md5_sign, package_string_to_sign,
    parse_package,
};
use wxpay_proto::{Charset, ExposeSecret, Fen, SecretString};

/// Reads shared/vectors/legacy.json, panicking with a clear message if it is missing.
fn legacy() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/legacy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "test vector file {} is missing or unreadable ({e}); the shared/ folder must sit beside \
             the work tree (CARGO_MANIFEST_DIR/../../../shared/vectors)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("legacy.json is valid JSON")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("legacy.json: missing string field {k}"))
}

fn params(v: &Value) -> BTreeMap<String, String> {
    v["params"]
        .as_object()
        .expect("legacy.json: params is an object")
        .iter()
        .map(|(k, x)| {
            (
                k.clone(),
                x.as_str().expect("params are strings").to_owned(),
            )
        })
        .collect()
}

#[test]
fn package_md5_from_the_raw_params() {
    let v = legacy();
    let p = &v["package_md5"];
    let key = SecretString::from(s(p, "partner_key"));
    let params = params(p);
    assert_eq!(
        package_string_to_sign(&params, &key).expose_secret(),
        s(p, "string_to_sign")
    );
    let sign = md5_sign(&params, &key, Charset::Utf8).unwrap();
    assert_eq!(sign, s(p, "sign"));
    assert_eq!(sign, "7F77B507B755B3262884291517E380F8");
    assert_eq!(
        encode_package(&params, &sign, Charset::Utf8).unwrap(),
        s(p, "package")
    );
}

#[test]
fn package_md5_through_the_typed_package() {
    let v = legacy();
    let p = &v["package_md5"];
    let m = params(p);
    let pkg = Package {
        bank_type: m["bank_type"].clone(),
        body: m["body"].clone(),
        attach: None,
        partner: m["partner"].clone(),
        out_trade_no: m["out_trade_no"].clone(),
        total_fee: Fen::parse_fen(&m["total_fee"]).unwrap(),
        fee_type: m["fee_type"].clone(),
        notify_url: m["notify_url"].clone(),
        spbill_create_ip: m["spbill_create_ip"].clone(),
        time_start: None,
        time_expire: None,
        transport_fee: None,
        product_fee: None,
        goods_tag: None,
        input_charset: Charset::parse(&m["input_charset"]).unwrap(),
    };
    assert_eq!(pkg.params(), m);
    let signed = pkg.sign(&SecretString::from(s(p, "partner_key"))).unwrap();
    assert_eq!(signed.sign, s(p, "sign"));
    assert_eq!(signed.package, s(p, "package"));
}

#[test]
fn sandbox_side_parses_and_verifies_the_documented_package() {
    let v = legacy();
    let p = &v["package_md5"];
    let parsed = parse_package(s(p, "package")).unwrap();
    assert_eq!(parsed.charset, Charset::Utf8);
    assert_eq!(parsed.params, params(p));
    assert_eq!(parsed.sign, s(p, "sign"));
    assert!(parsed.verify(&SecretString::from(s(p, "partner_key"))));
    assert!(!parsed.verify(&SecretString::from("192006250b4c09247ec02edce69f6a2d")));
}

#[test]
fn genprepay_app_signature() {
    let v = legacy();
    let g = &v["genprepay_app_signature"];
    let m = params(g);
    let app_key = SecretString::from(m["appkey"].as_str());
    let req = GenPrepayRequest::new(
        &m["appid"],
        &m["traceid"],
        &m["noncestr"],
        &m["package"],
        m["timestamp"].parse().unwrap(),
        &app_key,
    );
    assert_eq!(req.app_signature, s(g, "app_signature"));
    assert_eq!(
        req.app_signature,
        "8893870b9004ead28691b60db97a8d2c80dbfdc6"
    );
    // The package in this vector is exactly the transmitted package of the MD5 vector.
    assert_eq!(req.package, s(&v["package_md5"], "package"));
    // Not the doc's copy error (the package MD5 lower-cased).
    assert_ne!(req.app_signature, "7f77b507b755b3262884291517e380f8");
    // The appkey is hashed but never transmitted.
    let json = serde_json::to_string(&req).unwrap();
    assert!(
        !json.contains(&m["appkey"]),
        "serialized request leaks the appkey: {json}"
    );
    assert!(!json.contains("appkey"));
    let back: serde_json::Map<String, Value> = serde_json::from_str(&json).unwrap();
    let mut keys: Vec<&str> = back.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "app_signature",
            "appid",
            "noncestr",
            "package",
            "sign_method",
            "timestamp",
            "traceid"
        ]
    );
    assert_eq!(back["sign_method"], "sha1");
    assert!(req.verify(&app_key));

    // The bare function over the vector's params (appkey given as a field is replaced by the key).
    let mut fields = m.clone();
    fields.remove("appkey");
    assert_eq!(app_signature(&fields, &app_key), s(g, "app_signature"));
}
