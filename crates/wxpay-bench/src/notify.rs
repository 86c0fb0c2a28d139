//! Valid signed notifications, built as WeChat builds them (WeChat's side of the work, done before
//! the timed window): legacy 2014 (MD5-signed query + SHA-1-signed XML body) and APIv3 (AES-GCM
//! encrypted resource, RSA-signed headers, with a WeChat Pay key pair made for the run).

use std::collections::BTreeMap;

use bytes::Bytes;
use secrecy::SecretString;
use wxpay_proto::Charset;
use wxpay_proto::legacy::{NotifyUser, build_notify_query, build_notify_xml};
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::model::{
    EncryptedResource, Notification, Payer, Transaction, TransactionAmount,
};
use wxpay_proto::v3::rsa::RsaPrivateKey;
use wxpay_proto::v3::verify::SignedHeaders;
use wxpay_sandbox::config as sb;

/// The id under which the server knows the run's WeChat Pay public key (merchant `v3-bench`).
pub const BENCH_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0100000000000000000000000BENCH";

/// One ready request: path and query, headers, body.
#[derive(Clone)]
pub struct Prepared {
    pub path_and_query: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// The legacy notification of a paid `out_trade_no` (1 fen) for merchant `legacy-demo`.
pub fn legacy(out_trade_no: &str, now_secs: i64) -> Result<Prepared, String> {
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_string(), v);
    };
    put("service_version", "1.0".into());
    put("sign_key_index", "1".into());
    put("trade_mode", "1".into());
    put("trade_state", "0".into());
    put("pay_info", String::new());
    put("partner", sb::DEMO_LEGACY_PARTNER.into());
    put("bank_type", "WX".into());
    put("bank_billno", format!("20{out_trade_no:0>14}"));
    put("total_fee", "1".into());
    put("fee_type", "1".into());
    put("notify_id", format!("bench-notify-{out_trade_no}"));
    put("transaction_id", format!("1900000109{out_trade_no:0>18}"));
    put("out_trade_no", out_trade_no.to_string());
    put("time_end", wxpay_proto::legacy::format_time(now_secs));
    put("discount", "0".into());
    let query = build_notify_query(
        &f,
        &SecretString::from(sb::DEMO_LEGACY_PARTNER_KEY),
        Charset::Utf8,
    )
    .map_err(|e| format!("legacy notify query: {e}"))?;
    let user = NotifyUser {
        open_id: "oBenchUser0000000000000000000".into(),
        app_id: sb::DEMO_LEGACY_APPID.into(),
        is_subscribe: true,
        timestamp: now_secs,
        nonce_str: format!("n{out_trade_no}"),
    };
    let xml = build_notify_xml(&user, &SecretString::from(sb::DEMO_LEGACY_APP_KEY));
    Ok(Prepared {
        path_and_query: format!("/notify/legacy-demo?{query}"),
        headers: vec![("content-type", "text/xml; charset=UTF-8".into())],
        body: Bytes::from(xml.into_bytes()),
    })
}

/// The APIv3 `TRANSACTION.SUCCESS` notification of a paid `out_trade_no` (1 fen) for merchant
/// `v3-bench`, signed with `wechat_key` (known to the server under [`BENCH_PUBLIC_KEY_ID`]).
pub fn v3(
    out_trade_no: &str,
    now_secs: i64,
    wechat_key: &RsaPrivateKey,
    apiv3_key: &ApiV3Key,
) -> Result<Prepared, String> {
    let t = Transaction {
        appid: sb::DEMO_V3_APPID.into(),
        mchid: sb::DEMO_V3_MCHID.into(),
        out_trade_no: out_trade_no.to_string(),
        transaction_id: Some(format!("4200{out_trade_no:0>24}")),
        trade_type: Some("APP".into()),
        trade_state: "SUCCESS".into(),
        trade_state_desc: Some("支付成功".into()),
        bank_type: Some("OTHERS".into()),
        success_time: Some("2024-01-01T12:00:00+08:00".into()),
        payer: Some(Payer {
            openid: "oBenchUser0000000000000000000".into(),
        }),
        amount: Some(TransactionAmount {
            total: 1,
            payer_total: Some(1),
            currency: Some("CNY".into()),
            payer_currency: Some("CNY".into()),
        }),
        ..Default::default()
    };
    let plain = serde_json::to_vec(&t).map_err(|e| e.to_string())?;
    let digits = format!("{out_trade_no:0>12}");
    let nonce = &digits[digits.len() - 12..];
    let resource =
        EncryptedResource::encrypt(apiv3_key, nonce, "transaction", Some("transaction"), &plain)
            .map_err(|e| format!("encrypting the resource: {e}"))?;
    let envelope = Notification {
        id: format!("bench-{out_trade_no}"),
        create_time: "2024-01-01T12:00:00+08:00".into(),
        resource_type: "encrypt-resource".into(),
        event_type: "TRANSACTION.SUCCESS".into(),
        summary: Some("支付成功".into()),
        resource,
    };
    let body = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
    let signed = SignedHeaders::sign(
        wechat_key,
        BENCH_PUBLIC_KEY_ID,
        now_secs,
        &format!("BENCHNONCE{out_trade_no:0>22}"),
        &body,
    );
    let mut headers = vec![("content-type", "application/json".to_string())];
    headers.extend(signed.to_header_pairs());
    Ok(Prepared {
        path_and_query: "/notify/v3-bench".into(),
        headers,
        body: Bytes::from(body),
    })
}

/// Builds `keys.len()` notifications on every core (v3 costs one RSA signature each).
pub fn build_all(
    keys: &[String],
    v3_key: Option<(&RsaPrivateKey, &ApiV3Key)>,
) -> Result<Vec<Prepared>, String> {
    let now = unix_now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = keys.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<Prepared>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|k| match v3_key {
                            Some((wk, ak)) => v3(k, now, wk, ak),
                            None => legacy(k, now),
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("builder thread panicked".into()))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(keys.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
