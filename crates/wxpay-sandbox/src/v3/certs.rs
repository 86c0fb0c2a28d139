//! `GET /v3/certificates` (platform-certificate mode only).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use serde_json::Value;
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::model::{CertificateEntry, CertificatesResponse, EncryptedResource};

use super::{ApiError, ApiResult, Caller, ok_json, rfc3339};
use crate::Inner;
use crate::config::VerifyMode;

pub(crate) async fn list(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    if inner.v3.mode(&caller.mchid) != Some(VerifyMode::PlatformCertificate) {
        return Err(ApiError::new(
            404,
            "RESOURCE_NOT_EXISTS",
            "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥",
        ));
    }
    let m = inner
        .config
        .v3_by_mchid(&caller.mchid)
        .ok_or_else(ApiError::system_error)?;
    let key = ApiV3Key::new(&m.apiv3_key).map_err(|_| ApiError::system_error())?;
    let mut data = Vec::new();
    for c in inner.v3.platform_certs(&caller.mchid) {
        let nonce = inner.lock().random_alnum(12);
        let enc = EncryptedResource::encrypt(&key, &nonce, "certificate", None, c.pem.as_bytes())
            .map_err(|_| ApiError::system_error())?;
        data.push(CertificateEntry {
            serial_no: c.serial.clone(),
            effective_time: rfc3339(c.not_before),
            expire_time: rfc3339(c.not_after),
            encrypt_certificate: enc,
        });
    }
    ok_json(&serde_json::to_value(CertificatesResponse { data }).unwrap_or(Value::Null))
}
