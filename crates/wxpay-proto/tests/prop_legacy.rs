//! Property tests of the 2014 protocol, APIv2 XML, the trade bill and money.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use wxpay_proto::bill::{
    TradeBill, TradeBillRow, TradeBillSummary, parse_trade_bill, render_trade_bill,
};
use wxpay_proto::form::{self, parse_query, percent_decode, percent_encode};
use wxpay_proto::legacy::{
    NotifyUser, ParsedPackage, build_notify_query, build_notify_xml, encode_package, md5_sign,
    parse_package, verify_notify,
};
use wxpay_proto::v2::{self, SignType};
use wxpay_proto::{Charset, Fen, SecretString};

const PARTNER_KEY: &str = "8934e7d15453e97507ef794cf7b0519d";
const APP_KEY: &str = "L8LrMqqeGRxST5reouB0K66CaYAWpqhAVsq7ggKkxHCOastWksvuX1uvmvQclxaHoYd3ElNBrNO2DHnnzgfVG9Qs473M3DTOZug5er46FhuGofumV8H2FVR9qkjSlC5K";

fn pk() -> SecretString {
    SecretString::from(PARTNER_KEY)
}

fn ak() -> SecretString {
    SecretString::from(APP_KEY)
}

/// Parameter names: never `sign` / `input_charset`, which have a role of their own.
fn key() -> impl Strategy<Value = String> {
    "[a-z][a-z_]{0,11}".prop_filter("reserved name", |k| k != "sign" && k != "input_charset")
}

/// Text GBK can encode: ASCII plus some Chinese and full-width punctuation.
fn gbk_text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            proptest::char::range(' ', '~'),
            Just('支'),
            Just('付'),
            Just('测'),
            Just('试'),
            Just('，'),
            Just('€'),
            Just('\n'),
        ],
        0..24,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn charset() -> impl Strategy<Value = Charset> {
    prop_oneof![Just(Charset::Utf8), Just(Charset::Gbk)]
}

fn params_for(cs: Charset) -> BoxedStrategy<BTreeMap<String, String>> {
    match cs {
        Charset::Utf8 => btree_map(key(), any::<String>(), 1..8).boxed(),
        Charset::Gbk => btree_map(key(), gbk_text(), 1..8).boxed(),
    }
}

fn cs_and_params() -> impl Strategy<Value = (Charset, BTreeMap<String, String>)> {
    charset().prop_flat_map(|cs| (Just(cs), params_for(cs)))
}

/// Inputs made of protocol-looking tokens, to get past the first byte of each parser.
fn query_like() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            Just("&".to_owned()),
            Just("=".to_owned()),
            Just("%".to_owned()),
            Just("%E6%94%AF".to_owned()),
            Just("%D6%A7".to_owned()),
            Just("+".to_owned()),
            Just("sign=".to_owned()),
            Just("sign_type=MD5".to_owned()),
            Just("input_charset=GBK".to_owned()),
            Just("input_charset=UTF-8".to_owned()),
            Just("total_fee=".to_owned()),
            Just("discount=".to_owned()),
            Just("trade_state=0".to_owned()),
            "[0-9]{1,20}",
            any::<String>(),
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

fn xml_like() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            Just("<xml>".to_owned()),
            Just("</xml>".to_owned()),
            Just("<OpenId>".to_owned()),
            Just("</OpenId>".to_owned()),
            Just("<AppSignature>".to_owned()),
            Just("</AppSignature>".to_owned()),
            Just("<a/>".to_owned()),
            Just("<![CDATA[".to_owned()),
            Just("]]>".to_owned()),
            Just("&amp;".to_owned()),
            Just("&#x".to_owned()),
            Just("&#".to_owned()),
            Just(";".to_owned()),
            Just("<?xml version=\"1.0\"?>".to_owned()),
            Just("<!DOCTYPE".to_owned()),
            Just("<!--".to_owned()),
            Just("-->".to_owned()),
            any::<String>(),
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

fn csv_like() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            Just(",".to_owned()),
            Just("`".to_owned()),
            Just("\"".to_owned()),
            Just("\r\n".to_owned()),
            Just("\n".to_owned()),
            Just("`0.29".to_owned()),
            Just("`1e3".to_owned()),
            Just("`-0.01".to_owned()),
            Just("`99999999999999999999.99".to_owned()),
            Just(wxpay_proto::bill::TRADE_BILL_HEADER.join(",")),
            Just(wxpay_proto::bill::TRADE_BILL_SUMMARY_HEADER.join(",")),
            Just(",`".repeat(26)),
            Just(",`0.00".repeat(6)),
            any::<String>(),
        ],
        0..20,
    )
    .prop_map(|parts| parts.concat())
}

fn fen() -> impl Strategy<Value = Fen> {
    any::<i64>().prop_map(Fen::new)
}

fn bill_row() -> impl Strategy<Value = TradeBillRow> {
    (vec(any::<String>(), 19), vec(fen(), 6)).prop_map(|(t, f)| TradeBillRow {
        trade_time: t[0].clone(),
        appid: t[1].clone(),
        mchid: t[2].clone(),
        sub_mchid: t[3].clone(),
        device_info: t[4].clone(),
        transaction_id: t[5].clone(),
        out_trade_no: t[6].clone(),
        openid: t[7].clone(),
        trade_type: t[8].clone(),
        trade_state: t[9].clone(),
        bank_type: t[10].clone(),
        currency: t[11].clone(),
        settlement_total: f[0],
        coupon_amount: f[1],
        refund_id: t[12].clone(),
        out_refund_no: t[13].clone(),
        refund_amount: f[2],
        recharge_coupon_refund: f[3],
        refund_type: t[14].clone(),
        refund_status: t[15].clone(),
        body: t[16].clone(),
        attach: t[17].clone(),
        fee: t[18].clone(),
        fee_rate: "0.60%".into(),
        order_amount: f[4],
        requested_refund: f[5],
        fee_remark: String::new(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn yuan_string_round_trips(x in any::<i64>()) {
        let f = Fen::new(x);
        prop_assert_eq!(Fen::parse_yuan(&f.to_yuan_string()), Ok(f));
        prop_assert_eq!(Fen::parse_fen(&f.to_string()), Ok(f));
    }

    #[test]
    fn parse_yuan_never_panics(s in any::<String>()) {
        let _ = Fen::parse_yuan(&s);
        let _ = Fen::parse_fen(&s);
    }

    #[test]
    fn md5_sign_then_verify_round_trips((cs, params) in cs_and_params()) {
        let mut params = params;
        params.insert("input_charset".into(), cs.as_str().into());
        let sign = md5_sign(&params, &pk(), cs).unwrap();
        let package = encode_package(&params, &sign, cs).unwrap();
        let parsed = parse_package(&package).unwrap();
        prop_assert_eq!(parsed.charset, cs);
        let non_empty: BTreeMap<_, _> =
            params.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(&parsed.params, &non_empty);
        prop_assert!(parsed.verify(&pk()));
        prop_assert!(!parsed.verify(&SecretString::from("another key")));
    }

    #[test]
    fn any_changed_value_fails_verify(
        (cs, params) in cs_and_params(),
        pick in any::<prop::sample::Index>(),
        pos in any::<prop::sample::Index>(),
        replacement in prop_oneof![Just('x'), Just('0'), Just('支'), Just(' ')],
    ) {
        let sign = md5_sign(&params, &pk(), cs).unwrap();
        let (k, v) = params.iter().nth(pick.index(params.len())).unwrap();
        let mut chars: Vec<char> = v.chars().collect();
        let changed: String = if chars.is_empty() {
            replacement.to_string()
        } else {
            let i = pos.index(chars.len());
            chars[i] = if chars[i] == replacement { 'y' } else { replacement };
            chars.into_iter().collect()
        };
        let mut tampered = params.clone();
        tampered.insert(k.clone(), changed);
        let parsed = ParsedPackage { params: tampered, sign, charset: cs };
        prop_assert!(!parsed.verify(&pk()));
    }

    #[test]
    fn notify_round_trips_and_tampering_fails(
        cs in charset(),
        total in 1i64..1_000_000_000,
        attach in gbk_text(),
        out_trade_no in "[0-9A-Za-z_-]{1,32}",
        open_id in "[0-9A-Za-z_-]{1,40}",
        nonce in "[0-9a-z]{1,32}",
        ts in 0i64..4_000_000_000,
        subscribed in any::<bool>(),
    ) {
        let fields: BTreeMap<String, String> = [
            ("trade_mode", "1".to_owned()), ("trade_state", "0".to_owned()),
            ("partner", "1900000109".to_owned()), ("total_fee", total.to_string()),
            ("transaction_id", "1900000109201307020305773741".to_owned()),
            ("out_trade_no", out_trade_no.clone()), ("attach", attach.clone()),
        ].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let q = build_notify_query(&fields, &pk(), cs).unwrap();
        let user = NotifyUser { open_id, app_id: "wxd930ea5d5a258f4f".into(), is_subscribe: subscribed, timestamp: ts, nonce_str: nonce };
        let xml = build_notify_xml(&user, &ak());
        let n = verify_notify(&q, xml.as_bytes(), &pk(), &ak()).unwrap();
        prop_assert!(n.is_success());
        prop_assert_eq!(n.total_fee, Fen::new(total));
        prop_assert_eq!(&n.out_trade_no, &out_trade_no);
        prop_assert_eq!(n.attach.unwrap_or_default(), attach);
        prop_assert_eq!(n.user, Some(user));

        let tampered = q.replacen(&format!("total_fee={total}&"), &format!("total_fee={}&", total + 1), 1);
        prop_assert!(verify_notify(&tampered, xml.as_bytes(), &pk(), &ak()).is_err());
        prop_assert!(verify_notify(&q, xml.as_bytes(), &pk(), &SecretString::from("k")).is_err());
    }

    #[test]
    fn notify_never_panics(q in query_like(), body in any::<Vec<u8>>()) {
        let _ = verify_notify(&q, &body, &pk(), &ak());
    }

    #[test]
    fn notify_never_panics_on_xml_like_bodies(q in query_like(), body in xml_like()) {
        let _ = verify_notify(&q, body.as_bytes(), &pk(), &ak());
    }

    #[test]
    fn query_parsers_never_panic(q in query_like()) {
        let _ = parse_query(&q, Charset::Utf8);
        let _ = parse_query(&q, Charset::Gbk);
        let _ = percent_decode(&q, Charset::Gbk);
        let _ = parse_package(&q);
    }

    #[test]
    fn percent_encoding_round_trips(s in any::<String>(), g in gbk_text()) {
        let e = percent_encode(&s, Charset::Utf8).unwrap();
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
        prop_assert_eq!(percent_decode(&e, Charset::Utf8).unwrap(), s);
        let e = percent_encode(&g, Charset::Gbk).unwrap();
        prop_assert_eq!(percent_decode(&e, Charset::Gbk).unwrap(), g);
    }

    #[test]
    fn v2_xml_never_panics(s in xml_like()) {
        let _ = v2::parse_xml(&s);
    }

    #[test]
    fn v2_xml_round_trips(params in btree_map("[a-z][a-z_0-9]{0,15}", any::<String>(), 0..10)) {
        prop_assert_eq!(v2::parse_xml(&v2::to_xml(&params)).unwrap(), params);
    }

    #[test]
    fn v2_sign_verify_round_trips(
        params in btree_map(key(), any::<String>(), 1..10),
        hmac in any::<bool>(),
    ) {
        let key = SecretString::from("192006250b4c09247ec02edce69f6a2d");
        let mut p = params;
        let t = if hmac { SignType::HmacSha256 } else { SignType::Md5 };
        v2::sign_params(&mut p, &key, t);
        prop_assert!(v2::verify(&p, &key));
        prop_assert!(!v2::verify(&p, &SecretString::from("0".repeat(32))));
        let back = v2::parse_xml(&v2::to_xml(&p)).unwrap();
        prop_assert!(v2::verify(&back, &key));
    }

    #[test]
    fn bill_parser_never_panics(s in csv_like()) {
        let _ = parse_trade_bill(&s);
    }

    #[test]
    fn bill_round_trips(rows in vec(bill_row(), 0..4), count in any::<u64>(), totals in vec(fen(), 5), fee_total in any::<String>()) {
        let bill = TradeBill {
            rows,
            summary: TradeBillSummary {
                total_count: count,
                settlement_total: totals[0],
                refund_total: totals[1],
                recharge_coupon_refund_total: totals[2],
                fee_total,
                order_total: totals[3],
                requested_refund_total: totals[4],
            },
        };
        prop_assert_eq!(parse_trade_bill(&render_trade_bill(&bill)).unwrap(), bill);
    }

    #[test]
    fn ct_eq_agrees_with_eq(a in "[0-9A-Fa-f]{0,4}", b in "[0-9A-Fa-f]{0,4}") {
        prop_assert_eq!(form::ct_eq(&a, &b), a == b);
        prop_assert_eq!(form::ct_eq_ignore_ascii_case(&a, &b), a.eq_ignore_ascii_case(&b));
    }
}
