//! Unit tests of the 2014 protocol. Expected hashes that are not in vectors/legacy.json were
//! computed independently with python3 (`hashlib`, `urllib.parse.quote(..., safe='')`).

use super::*;

const PARTNER_KEY: &str = "8934e7d15453e97507ef794cf7b0519d";
const APP_KEY: &str = "L8LrMqqeGRxST5reouB0K66CaYAWpqhAVsq7ggKkxHCOastWksvuX1uvmvQclxaHoYd3ElNBrNO2DHnnzgfVG9Qs473M3DTOZug5er46FhuGofumV8H2FVR9qkjSlC5K";

fn pk() -> SecretString {
    SecretString::from(PARTNER_KEY)
}

fn ak() -> SecretString {
    SecretString::from(APP_KEY)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn doc_package(cs: Charset) -> Package {
    Package {
        bank_type: "WX".into(),
        body: "支付测试".into(),
        attach: None,
        partner: "1900000109".into(),
        out_trade_no: "7240b65810859cbf2a8d9f76a638c0a3".into(),
        total_fee: Fen::new(1),
        fee_type: "1".into(),
        notify_url: "http://weixin.qq.com".into(),
        spbill_create_ip: "196.168.1.1".into(),
        time_start: None,
        time_expire: None,
        transport_fee: None,
        product_fee: None,
        goods_tag: None,
        input_charset: cs,
    }
}

// ----- package -----

#[test]
fn gbk_package_hashes_and_encodes_gbk_bytes() {
    let signed = doc_package(Charset::Gbk).sign(&pk()).unwrap();
    // python3: md5(string_to_sign.encode('gbk')).hexdigest().upper()
    assert_eq!(signed.sign, "78A6B4F68AEEAA38847F081169F2C832");
    assert_eq!(
        signed.package,
        "bank_type=WX&body=%D6%A7%B8%B6%B2%E2%CA%D4&fee_type=1&input_charset=GBK\
         &notify_url=http%3A%2F%2Fweixin.qq.com&out_trade_no=7240b65810859cbf2a8d9f76a638c0a3\
         &partner=1900000109&spbill_create_ip=196.168.1.1&total_fee=1\
         &sign=78A6B4F68AEEAA38847F081169F2C832"
    );
    // The UTF-8 hash of the same text differs: hashing in the wrong charset is a real bug.
    let utf8_of_gbk_text = md5_sign(&doc_package(Charset::Gbk).params(), &pk(), Charset::Utf8);
    assert_ne!(utf8_of_gbk_text.unwrap(), signed.sign);
}

#[test]
fn utf8_package_matches_the_documented_example() {
    let signed = doc_package(Charset::Utf8).sign(&pk()).unwrap();
    assert_eq!(signed.sign, "7F77B507B755B3262884291517E380F8");
    assert!(
        signed
            .package
            .starts_with("bank_type=WX&body=%E6%94%AF%E4%BB%98%E6%B5%8B%E8%AF%95&")
    );
    assert!(
        signed
            .package
            .ends_with("&sign=7F77B507B755B3262884291517E380F8")
    );
}

#[test]
fn empty_values_are_skipped() {
    let mut p = doc_package(Charset::Utf8);
    p.attach = Some(String::new());
    p.goods_tag = Some(String::new());
    let params = p.params();
    assert!(!params.contains_key("attach"));
    assert!(!params.contains_key("goods_tag"));
    let signed = p.sign(&pk()).unwrap();
    assert_eq!(signed.sign, "7F77B507B755B3262884291517E380F8");
    assert!(!signed.package.contains("attach"));
    // Also at the map level: an explicit empty value changes nothing.
    let mut m = doc_package(Charset::Utf8).params();
    m.insert("attach".into(), String::new());
    assert_eq!(
        md5_sign(&m, &pk(), Charset::Utf8).unwrap(),
        "7F77B507B755B3262884291517E380F8"
    );
}

#[test]
fn string_to_sign_contains_raw_values_and_key() {
    let s = package_string_to_sign(&doc_package(Charset::Utf8).params(), &pk());
    assert!(s.expose_secret().contains("body=支付测试&"));
    assert!(
        s.expose_secret()
            .ends_with("&key=8934e7d15453e97507ef794cf7b0519d")
    );
    assert!(
        !format!("{s:?}").contains(PARTNER_KEY),
        "Debug must not print the key"
    );
}

#[test]
fn parse_package_round_trip_both_charsets() {
    for cs in [Charset::Utf8, Charset::Gbk] {
        let mut p = doc_package(cs);
        p.attach = Some("a&b=c 附加".into());
        p.transport_fee = Some(Fen::new(0));
        p.product_fee = Some(Fen::new(1));
        p.time_start = Some("20140508100936".into());
        p.time_expire = Some("20140508110936".into());
        let signed = p.sign(&pk()).unwrap();
        let parsed = parse_package(&signed.package).unwrap();
        assert_eq!(parsed.charset, cs);
        assert_eq!(parsed.sign, signed.sign);
        assert!(parsed.verify(&pk()));
        assert!(!parsed.verify(&SecretString::from("wrong")));
        // transport_fee "0" is a non-empty value and survives.
        assert_eq!(parsed.to_package().unwrap(), p);
    }
}

#[test]
fn parse_package_detects_tampering() {
    let signed = doc_package(Charset::Utf8).sign(&pk()).unwrap();
    let tampered = signed.package.replace("total_fee=1", "total_fee=2");
    assert!(!parse_package(&tampered).unwrap().verify(&pk()));
    let bad_sign = signed.package.replace("&sign=7F77", "&sign=7F78");
    assert!(!parse_package(&bad_sign).unwrap().verify(&pk()));
    // lower-case hex sign is accepted
    let lower = signed.package.replace(
        "7F77B507B755B3262884291517E380F8",
        "7f77b507b755b3262884291517e380f8",
    );
    assert!(parse_package(&lower).unwrap().verify(&pk()));
}

#[test]
fn parse_package_rejections() {
    assert!(parse_package("bank_type=WX").is_err(), "missing sign");
    assert!(parse_package("a=1&a=2&sign=X").is_err(), "duplicate key");
    assert!(
        parse_package("input_charset=LATIN1&sign=X").is_err(),
        "unknown charset"
    );
    assert!(parse_package("body=%ZZ&sign=X").is_err(), "bad escape");
    assert!(
        parse_package("input%5Fcharset=UTF-8&sign=X").is_err(),
        "an encoded key must not change the charset behind our back"
    );
    // absent input_charset means GBK
    let p = parse_package("body=%D6%A7&sign=X").unwrap();
    assert_eq!(p.charset, Charset::Gbk);
    assert_eq!(p.params["body"], "支");
    let no_total = parse_package("bank_type=WX&sign=X").unwrap();
    assert!(matches!(
        no_total.to_package(),
        Err(ProtoError::InvalidField { .. })
    ));
}

#[test]
fn validate_rejections() {
    type Edit = fn(&mut Package);
    let cases: &[(&str, Edit)] = &[
        ("bank_type", |p| p.bank_type = "CMB".into()),
        ("body", |p| p.body = String::new()),
        ("body", |p| p.body = "x".repeat(128)),
        ("body", |p| p.body = "支".repeat(43)), // 129 bytes in UTF-8
        ("attach", |p| p.attach = Some("x".repeat(128))),
        ("partner", |p| p.partner = "19000x0109".into()),
        ("out_trade_no", |p| p.out_trade_no = String::new()),
        ("out_trade_no", |p| p.out_trade_no = "x".repeat(33)),
        ("out_trade_no", |p| p.out_trade_no = "abc/def".into()),
        ("total_fee", |p| p.total_fee = Fen::ZERO),
        ("total_fee", |p| p.total_fee = Fen::new(-1)),
        ("fee_type", |p| p.fee_type = "CNY".into()),
        ("notify_url", |p| {
            p.notify_url = "weixin.qq.com/notify".into()
        }),
        ("notify_url", |p| {
            p.notify_url = "ftp://weixin.qq.com".into()
        }),
        ("notify_url", |p| {
            p.notify_url = "http://weixin.qq.com/n?x=1".into()
        }),
        ("notify_url", |p| p.notify_url = "http:///path".into()),
        ("notify_url", |p| {
            p.notify_url = format!("http://a.cn/{}", "x".repeat(250))
        }),
        ("spbill_create_ip", |p| p.spbill_create_ip = "::1".into()),
        ("spbill_create_ip", |p| {
            p.spbill_create_ip = "256.1.1.1".into()
        }),
        ("time_start", |p| p.time_start = Some("2014-05-08".into())),
        ("time_expire", |p| {
            p.time_expire = Some("20140231000000".into())
        }),
        ("time_expire", |p| {
            p.time_start = Some("20140508100936".into());
            p.time_expire = Some("20140508100936".into());
        }),
        ("total_fee", |p| {
            p.transport_fee = Some(Fen::new(1));
            p.product_fee = Some(Fen::new(1));
        }),
        ("transport_fee", |p| {
            p.transport_fee = Some(Fen::new(-1));
            p.product_fee = Some(Fen::new(2));
        }),
    ];
    for (field, edit) in cases {
        let mut p = doc_package(Charset::Utf8);
        edit(&mut p);
        match p.validate() {
            Err(ProtoError::InvalidField { field: f, .. }) => assert_eq!(&f, field),
            other => panic!("expected {field} to be rejected, got {other:?}"),
        }
        assert!(p.sign(&pk()).is_err(), "sign must validate first ({field})");
    }
    // GBK measures bytes in GBK: 64 Chinese characters are 128 bytes in GBK → too long;
    // 63 are 126 bytes → fine (although 189 bytes in UTF-8).
    let mut p = doc_package(Charset::Gbk);
    p.body = "支".repeat(63);
    assert!(p.validate().is_ok());
    p.body = "支".repeat(64);
    assert!(p.validate().is_err());
    // Text GBK cannot encode is rejected instead of being silently replaced.
    p.body = "pay 😀".into();
    assert!(matches!(p.validate(), Err(ProtoError::InvalidField { field, .. }) if field == "body"));
    // The happy case with every optional field.
    let mut ok = doc_package(Charset::Utf8);
    ok.notify_url = "https://example.com/notify/legacy".into();
    ok.total_fee = Fen::new(101);
    ok.transport_fee = Some(Fen::new(1));
    ok.product_fee = Some(Fen::new(100));
    ok.goods_tag = Some("tag".into());
    ok.attach = Some("x".repeat(127));
    assert_eq!(ok.validate(), Ok(()));
}

// ----- app signature and request types -----

#[test]
fn app_signature_excludes_appkey_from_the_wire() {
    let req = GenPrepayRequest::new(
        "wxd930ea5d5a258f4f",
        "test_1399514976",
        "e7d161ac8d8a76529d39d9f5b4249ccb",
        "bank_type=WX&sign=X",
        1399514976,
        &ak(),
    );
    assert_eq!(req.timestamp, "1399514976");
    assert_eq!(req.sign_method, "sha1");
    assert_eq!(req.app_signature.len(), 40);
    assert!(req.app_signature.bytes().all(|b| !b.is_ascii_uppercase()));
    assert!(!req.signed_fields().contains_key("appkey"));
    let json = serde_json::to_string(&req).unwrap();
    assert!(!json.contains(APP_KEY) && !json.contains("appkey"));
    assert!(req.verify(&ak()));
    let mut tampered = req.clone();
    tampered.noncestr.push('x');
    assert!(!tampered.verify(&ak()));
    assert!(!req.verify(&SecretString::from("other")));
}

#[test]
fn app_signature_puts_appkey_in_sorted_position() {
    // python3: sha1 over "appid=...&appkey=...&issubscribe=1&noncestr=...&openid=...&timestamp=..."
    let f = map(&[
        ("appid", "wxd930ea5d5a258f4f"),
        ("issubscribe", "1"),
        ("noncestr", "e7d161ac8d8a76529d39d9f5b4249ccb"),
        ("openid", "oDF3iY9P32sK_5GgYiRkjsCo45bk"),
        ("timestamp", "1399514976"),
    ]);
    assert_eq!(
        app_signature(&f, &ak()),
        "fa6d37c13a2e40a4cdbc95c54d006336fe2454c2"
    );
    // A caller-supplied appkey entry is ignored in favour of the real key.
    let mut g = f.clone();
    g.insert("appkey".into(), "attacker".into());
    assert_eq!(
        app_signature(&g, &ak()),
        "fa6d37c13a2e40a4cdbc95c54d006336fe2454c2"
    );
    assert!(verify_app_signature(
        &f,
        &ak(),
        "FA6D37C13A2E40A4CDBC95C54D006336FE2454C2"
    ));
    assert!(!verify_app_signature(
        &f,
        &ak(),
        "fa6d37c13a2e40a4cdbc95c54d006336fe2454c3"
    ));
}

#[test]
fn order_query_request_round_trip() {
    let r = OrderQueryRequest::new(
        "wxd930ea5d5a258f4f",
        "1900000109",
        "order-1_2",
        1399514976,
        &pk(),
        &ak(),
    );
    let sign = hex::encode_upper(Md5::digest(
        format!("out_trade_no=order-1_2&partner=1900000109&key={PARTNER_KEY}").as_bytes(),
    ));
    assert_eq!(
        r.package,
        format!("out_trade_no=order-1_2&partner=1900000109&sign={sign}")
    );
    assert_eq!(
        r.signed_fields().keys().collect::<Vec<_>>(),
        ["appid", "package", "timestamp"]
    );
    let target = r.verify(&pk(), &ak()).unwrap();
    assert_eq!(
        target,
        OrderQueryTarget {
            partner: "1900000109".into(),
            out_trade_no: "order-1_2".into()
        }
    );
    assert!(matches!(
        r.verify(&pk(), &SecretString::from("x")),
        Err(ProtoError::BadSignature { .. })
    ));
    assert!(matches!(
        r.verify(&SecretString::from("x"), &ak()),
        Err(ProtoError::BadSignature { .. })
    ));
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains(APP_KEY) && !json.contains(PARTNER_KEY));
}

#[test]
fn order_info_accepts_loose_json_types() {
    let json = r#"{"errcode":0,"errmsg":"ok","order_info":{"ret_code":0,"ret_msg":"","input_charset":"GBK",
        "trade_state":"0","trade_mode":"1","partner":"1900000109","bank_type":"CMB_FP","bank_billno":"207029722724",
        "total_fee":"1","fee_type":"1","transaction_id":"1900000109201307020305773741","out_trade_no":"2986872580246457300",
        "is_split":false,"is_refund":"false","attach":"","time_end":"20130702175943","transport_fee":"0",
        "product_fee":"1","discount":"0","rmb_total_fee":null}}"#;
    let r: OrderQueryResponse = serde_json::from_str(json).unwrap();
    let info = r.order_info.unwrap();
    assert_eq!(info.ret_code, "0");
    assert_eq!(info.is_split, "false");
    assert_eq!(info.rmb_total_fee, "");
    assert!(info.is_paid());
    assert_eq!(info.total_fee_fen().unwrap(), Fen::new(1));
    assert_eq!(info.discount_fen().unwrap(), Some(Fen::ZERO));
    let none: OrderQueryResponse =
        serde_json::from_str(r#"{"errcode":40001,"errmsg":"invalid credential"}"#).unwrap();
    assert!(none.order_info.is_none());
    let bad = OrderInfo {
        total_fee: "1.00".into(),
        ..OrderInfo::default()
    };
    assert!(bad.total_fee_fen().is_err());
}

#[test]
fn small_response_types_parse() {
    let ok: GenPrepayResponse = serde_json::from_str(
        r#"{"prepayid":"1101000000140415649af9fc314aa427","errcode":0,"errmsg":"Success"}"#,
    )
    .unwrap();
    assert_eq!(
        ok.prepayid.as_deref(),
        Some("1101000000140415649af9fc314aa427")
    );
    let err: GenPrepayResponse =
        serde_json::from_str(r#"{"errcode":48001,"errmsg":"api unauthorized"}"#).unwrap();
    assert_eq!((err.prepayid, err.errcode), (None, 48001));
    let tok: AccessTokenResponse =
        serde_json::from_str(r#"{"access_token":"T","expires_in":7200}"#).unwrap();
    assert_eq!(
        (tok.access_token.as_deref(), tok.expires_in, tok.errcode),
        (Some("T"), Some(7200), None)
    );
    let tok_err: AccessTokenResponse =
        serde_json::from_str(r#"{"errcode":40013,"errmsg":"invalid appid"}"#).unwrap();
    assert_eq!(tok_err.errcode, Some(40013));
    assert_eq!(
        serde_json::to_string(&tok_err).unwrap(),
        r#"{"errcode":40013,"errmsg":"invalid appid"}"#
    );
    let e: ErrResponse = serde_json::from_str(r#"{"errcode":0,"errmsg":"ok"}"#).unwrap();
    assert_eq!(
        e,
        ErrResponse {
            errcode: 0,
            errmsg: "ok".into()
        }
    );
}

#[test]
fn pay_req_uses_literal_package_and_seconds() {
    let r = PayReq::new(
        "wxd930ea5d5a258f4f",
        "1900000109",
        "1101000000140415649af9fc314aa427",
        "n0nce",
        1399514976,
        &ak(),
    );
    assert_eq!(r.package, "Sign=WXPay");
    assert_eq!(r.timestamp, "1399514976");
    let expected = hex::encode(Sha1::digest(
        format!(
            "appid=wxd930ea5d5a258f4f&appkey={APP_KEY}&noncestr=n0nce&package=Sign=WXPay\
             &partnerid=1900000109&prepayid=1101000000140415649af9fc314aa427&timestamp=1399514976"
        )
        .as_bytes(),
    ));
    assert_eq!(r.sign, expected);
    assert!(r.verify(&ak()));
    let mut other = r.clone();
    other.package = "prepay_id=1101000000140415649af9fc314aa427".into();
    other.sign = app_signature(&other.signed_fields(), &ak());
    assert!(
        !other.verify(&ak()),
        "package must be the literal Sign=WXPay"
    );
    let mut t = r.clone();
    t.timestamp = "1399514976000".into();
    assert!(!t.verify(&ak()));
    assert!(!serde_json::to_string(&r).unwrap().contains(APP_KEY));
}

// ----- notify -----

/// Built with python3 (GBK, `quote(v.encode('gbk'), safe='')`, MD5 upper).
const PY_NOTIFY_QUERY: &str = "attach=%B8%BD%BC%D3%20%CA%FD%BE%DD&bank_billno=207029722724&bank_type=CMB_FP\
&discount=1&fee_type=1&input_charset=GBK&notify_id=abc&out_trade_no=7240b65810859cbf2a8d9f76a638c0a3\
&partner=1900000109&sign_type=MD5&time_end=20140508101936&total_fee=99&trade_mode=1&trade_state=0\
&transaction_id=1900000109201307020305773741&sign=E2CA6A1392C30DB6299EC2EAED515C90";

fn notify_fields() -> BTreeMap<String, String> {
    map(&[
        ("trade_mode", "1"),
        ("trade_state", "0"),
        ("partner", "1900000109"),
        ("bank_type", "CMB_FP"),
        ("bank_billno", "207029722724"),
        ("total_fee", "99"),
        ("discount", "1"),
        ("fee_type", "1"),
        ("notify_id", "abc"),
        ("transaction_id", "1900000109201307020305773741"),
        ("out_trade_no", "7240b65810859cbf2a8d9f76a638c0a3"),
        ("attach", "附加 数据"),
        ("time_end", "20140508101936"),
        ("pay_info", ""),
    ])
}

fn user() -> NotifyUser {
    NotifyUser {
        open_id: "oDF3iY9P32sK_5GgYiRkjsCo45bk".into(),
        app_id: "wxd930ea5d5a258f4f".into(),
        is_subscribe: true,
        timestamp: 1399514976,
        nonce_str: "e7d161ac8d8a76529d39d9f5b4249ccb".into(),
    }
}

#[test]
fn notify_query_matches_independent_implementation() {
    let q = build_notify_query(&notify_fields(), &pk(), Charset::Gbk).unwrap();
    assert_eq!(q, PY_NOTIFY_QUERY);
    let xml = build_notify_xml(&user(), &ak());
    assert!(xml.contains(
        "<AppSignature><![CDATA[fa6d37c13a2e40a4cdbc95c54d006336fe2454c2]]></AppSignature>"
    ));
    assert!(xml.contains("<IsSubscribe>1</IsSubscribe><TimeStamp>1399514976</TimeStamp>"));
    assert!(xml.contains("<SignMethod><![CDATA[sha1]]></SignMethod>"));
}

#[test]
fn notify_round_trip_parses_fields() {
    for cs in [Charset::Gbk, Charset::Utf8] {
        let q = build_notify_query(&notify_fields(), &pk(), cs).unwrap();
        let xml = build_notify_xml(&user(), &ak());
        let n = verify_notify(&q, xml.as_bytes(), &pk(), &ak()).unwrap();
        assert!(n.is_success());
        assert_eq!(n.partner, "1900000109");
        assert_eq!(n.total_fee, Fen::new(99));
        assert_eq!(n.discount, Some(Fen::new(1)));
        assert_eq!(n.requested_total(), Some(Fen::new(100)));
        assert_eq!(n.out_trade_no, "7240b65810859cbf2a8d9f76a638c0a3");
        assert_eq!(n.transaction_id, "1900000109201307020305773741");
        assert_eq!(n.attach.as_deref(), Some("附加 数据"));
        assert_eq!(n.time_end.as_deref(), Some("20140508101936"));
        assert_eq!(n.bank_type.as_deref(), Some("CMB_FP"));
        assert_eq!(n.notify_id.as_deref(), Some("abc"));
        assert_eq!(n.params["input_charset"], cs.as_str());
        assert!(!n.params.contains_key("sign"));
        assert_eq!(n.user, Some(user()));
        // The body is optional: the result is in the query.
        let q_only = verify_notify(&q, b"", &pk(), &ak()).unwrap();
        assert_eq!(q_only.user, None);
        assert_eq!(q_only.total_fee, Fen::new(99));
    }
    // The python-built query verifies too, with a leading '?'.
    let n = verify_notify(&format!("?{PY_NOTIFY_QUERY}"), b"  \r\n", &pk(), &ak()).unwrap();
    assert_eq!(n.attach.as_deref(), Some("附加 数据"));
}

#[test]
fn notify_not_paid_is_verified_but_not_success() {
    let mut f = notify_fields();
    f.insert("trade_state".into(), "1".into());
    let q = build_notify_query(&f, &pk(), Charset::Utf8).unwrap();
    let n = verify_notify(&q, b"", &pk(), &ak()).unwrap();
    assert!(!n.is_success());
    f.insert("trade_state".into(), "0".into());
    f.insert("trade_mode".into(), "2".into());
    let q = build_notify_query(&f, &pk(), Charset::Utf8).unwrap();
    assert!(!verify_notify(&q, b"", &pk(), &ak()).unwrap().is_success());
}

fn bad_sig(r: Result<VerifiedNotify, ProtoError>) -> &'static str {
    match r {
        Err(ProtoError::BadSignature { what }) => what,
        other => panic!("expected a signature failure, got {other:?}"),
    }
}

#[test]
fn notify_tampering_is_rejected_and_named() {
    let q = build_notify_query(&notify_fields(), &pk(), Charset::Utf8).unwrap();
    let xml = build_notify_xml(&user(), &ak());
    let body = xml.as_bytes();

    // a query value
    let t = q.replace("total_fee=99", "total_fee=1");
    assert!(bad_sig(verify_notify(&t, body, &pk(), &ak())).contains("MD5"));
    // an added query parameter
    let t = q.replace("&sign=", "&extra=1&sign=");
    assert!(bad_sig(verify_notify(&t, body, &pk(), &ak())).contains("MD5"));
    // the sign itself
    let sign = q.rsplit("sign=").next().unwrap();
    let mut flipped = sign.to_string();
    flipped.replace_range(0..1, if sign.starts_with('0') { "1" } else { "0" });
    let t = q.replace(sign, &flipped);
    assert!(bad_sig(verify_notify(&t, body, &pk(), &ak())).contains("MD5"));
    // wrong partner key
    assert!(bad_sig(verify_notify(&q, body, &SecretString::from("k"), &ak())).contains("MD5"));
    // an XML field
    let t = xml.replace(
        "oDF3iY9P32sK_5GgYiRkjsCo45bk",
        "oDF3iY9P32sK_5GgYiRkjsCo45bX",
    );
    assert!(bad_sig(verify_notify(&q, t.as_bytes(), &pk(), &ak())).contains("AppSignature"));
    let t = xml.replace("<IsSubscribe>1<", "<IsSubscribe>0<");
    assert!(bad_sig(verify_notify(&q, t.as_bytes(), &pk(), &ak())).contains("AppSignature"));
    // an added XML element is covered too
    let t = xml.replace("</xml>", "<ProductId>1</ProductId></xml>");
    assert!(bad_sig(verify_notify(&q, t.as_bytes(), &pk(), &ak())).contains("AppSignature"));
    // wrong app key
    assert!(
        bad_sig(verify_notify(&q, body, &pk(), &SecretString::from("k"))).contains("AppSignature")
    );
}

#[test]
fn notify_structural_rejections() {
    let q = build_notify_query(&notify_fields(), &pk(), Charset::Utf8).unwrap();
    let field = |r: Result<VerifiedNotify, ProtoError>| match r {
        Err(ProtoError::InvalidField { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    };
    // no sign
    let unsigned = q.split("&sign=").next().unwrap();
    assert_eq!(field(verify_notify(unsigned, b"", &pk(), &ak())), "sign");
    // sign_type other than MD5
    let mut f = notify_fields();
    f.insert("sign_type".into(), "SHA1".into());
    let mut m = f.clone();
    m.insert("input_charset".into(), "UTF-8".into());
    let sign = md5_sign(&m, &pk(), Charset::Utf8).unwrap();
    let sha = encode_package(&m, &sign, Charset::Utf8).unwrap();
    assert_eq!(field(verify_notify(&sha, b"", &pk(), &ak())), "sign_type");
    // XML without AppSignature
    let xml = build_notify_xml(&user(), &ak());
    let start = xml.find("<AppSignature>").unwrap();
    let end = xml.find("</AppSignature>").unwrap() + "</AppSignature>".len();
    let no_sig = format!("{}{}", &xml[..start], &xml[end..]);
    assert_eq!(
        field(verify_notify(&q, no_sig.as_bytes(), &pk(), &ak())),
        "AppSignature"
    );
    // broken XML and non-UTF-8 bodies
    assert!(matches!(
        verify_notify(&q, b"<xml><OpenId>", &pk(), &ak()),
        Err(ProtoError::Malformed { .. })
    ));
    assert!(matches!(
        verify_notify(&q, b"\xff\xfe<xml/>", &pk(), &ak()),
        Err(ProtoError::Malformed { .. })
    ));
    // signed but non-integer amount
    let mut f = notify_fields();
    f.insert("total_fee".into(), "0.99".into());
    let q = build_notify_query(&f, &pk(), Charset::Utf8).unwrap();
    assert_eq!(field(verify_notify(&q, b"", &pk(), &ak())), "total_fee");
    let mut f = notify_fields();
    f.remove("out_trade_no");
    let q = build_notify_query(&f, &pk(), Charset::Utf8).unwrap();
    assert_eq!(field(verify_notify(&q, b"", &pk(), &ak())), "out_trade_no");
    // unknown charset
    assert!(verify_notify("input_charset=EBCDIC&sign=X", b"", &pk(), &ak()).is_err());
}

#[test]
fn unencodable_notify_fields_are_an_error_not_a_panic() {
    let mut f = notify_fields();
    f.insert("attach".into(), "😀".into());
    assert_eq!(
        build_notify_query(&f, &pk(), Charset::Gbk),
        Err(ProtoError::Unencodable { charset: "GBK" })
    );
}

// ----- time -----

#[test]
fn beijing_time_format_and_parse() {
    // Expected values from python3 datetime with a +08:00 zone.
    for (unix, s) in [
        (1_399_514_976, "20140508100936"),
        (0, "19700101080000"),
        (-1, "19700101075959"),
        (951_782_400, "20000229080000"),
        (253_402_271_999, "99991231235959"),
    ] {
        assert_eq!(format_time(unix), s);
        assert_eq!(parse_time(s).unwrap(), unix);
    }
    assert_eq!(parse_time("20000229235959").unwrap(), 951_839_999);
    assert_eq!(format_time(i64::MAX), "99991231235959");
    assert_eq!(format_time(i64::MIN), "00000101000000");
    for bad in [
        "",
        "2014050810093",
        "201405081009360",
        "2014-05-08 10:09",
        "20140230000000",
        "19000229000000",
        "20141301000000",
        "20140500000000",
        "20140508240000",
        "20140508106000",
        "20140508100960",
        "２０14050810093６",
    ] {
        assert!(parse_time(bad).is_err(), "{bad:?}");
    }
}
