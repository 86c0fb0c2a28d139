//! APIv3 notifications: the envelope is encrypted once; every attempt is signed afresh.

use serde::Serialize;
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::auth::{SIGNATURE_TYPE, response_message};
use wxpay_proto::v3::model::{EncryptedResource, Notification as Envelope};

use super::rfc3339;
use crate::Inner;
use crate::error::SandboxError;
use crate::notify::{Notification, NotificationKind, Prepare, PreparedRequest, Variant};
use crate::state::State as SbState;

struct V3Source {
    mchid: String,
    url: String,
    body: Vec<u8>,
}

impl Prepare for V3Source {
    fn prepare(&self, inner: &Inner, variant: Variant) -> Result<PreparedRequest, String> {
        let (ts, nonce, probe) = {
            let mut st = inner.lock();
            (inner.now(), st.random_upper(32), st.random_alnum(172))
        };
        let msg = response_message(ts, &nonce, &self.body);
        let signed = match variant {
            Variant::Genuine => inner.v3.sign(&self.mchid, &msg, None),
            Variant::Forged => inner.v3.sign_forged(&self.mchid, &msg),
            Variant::Signtest => inner
                .v3
                .signing_serial(&self.mchid)
                .map(|s| (s, format!("WECHATPAY/SIGNTEST/{probe}"))),
        };
        let (serial, signature) = signed.ok_or_else(|| format!("no keys for {}", self.mchid))?;
        Ok(PreparedRequest {
            url: self.url.clone(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Wechatpay-Timestamp".into(), ts.to_string()),
                ("Wechatpay-Nonce".into(), nonce),
                ("Wechatpay-Signature".into(), signature),
                ("Wechatpay-Serial".into(), serial),
                ("Wechatpay-Signature-Type".into(), SIGNATURE_TYPE.into()),
            ],
            body: self.body.clone(),
        })
    }
}

/// Build an encrypted, ready-to-sign notification.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    inner: &Inner,
    st: &mut SbState,
    mchid: &str,
    url: &str,
    kind: NotificationKind,
    event_type: &str,
    summary: &str,
    original_type: &str,
    resource: &impl Serialize,
    out_trade_no: &str,
    out_refund_no: Option<&str>,
) -> Result<Notification, SandboxError> {
    let m = inner
        .config
        .v3_by_mchid(mchid)
        .ok_or_else(|| SandboxError::NotFound(format!("v3 merchant {mchid}")))?;
    let key = ApiV3Key::new(&m.apiv3_key)?;
    let plain = serde_json::to_vec(resource).map_err(|e| SandboxError::Config(e.to_string()))?;
    let nonce = st.random_alnum(12);
    let resource =
        EncryptedResource::encrypt(&key, &nonce, original_type, Some(original_type), &plain)?;
    let id = format!(
        "{}-{}-{}-{}-{}",
        st.random_hex(8),
        st.random_hex(4),
        st.random_hex(4),
        st.random_hex(4),
        st.random_hex(12)
    );
    let envelope = Envelope {
        id: id.clone(),
        create_time: rfc3339(inner.now()),
        resource_type: "encrypt-resource".into(),
        event_type: event_type.into(),
        summary: Some(summary.into()),
        resource,
    };
    let body = serde_json::to_vec(&envelope).map_err(|e| SandboxError::Config(e.to_string()))?;
    Ok(Notification {
        id,
        kind,
        event_type: event_type.into(),
        merchant: mchid.into(),
        fault_ids: vec![mchid.into()],
        out_trade_no: out_trade_no.into(),
        out_refund_no: out_refund_no.map(str::to_string),
        source: Box::new(V3Source {
            mchid: mchid.into(),
            url: url.into(),
            body,
        }),
    })
}

/// `TRANSACTION.SUCCESS` for a freshly paid order.
pub(crate) fn transaction_notification(
    inner: &Inner,
    st: &mut SbState,
    idx: usize,
) -> Result<Notification, SandboxError> {
    let o = st.orders[idx].clone();
    let t = super::pay::transaction(&o);
    build(
        inner,
        st,
        &o.merchant,
        &o.notify_url,
        NotificationKind::Transaction,
        "TRANSACTION.SUCCESS",
        "支付成功",
        "transaction",
        &t,
        &o.out_trade_no,
        None,
    )
}
