//! Endpoint faults: answer chosen endpoints with 500 / 429 or hang.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use crate::Inner;
use crate::faults::EndpointFaultKind;
use crate::http_util::{json_response, query_map};

/// The identifiers a per-merchant fault set may be keyed by, for this request.
fn merchant_ids(inner: &Inner, req: &Request) -> Vec<String> {
    if let Some(c) = req.extensions().get::<crate::v3::Caller>() {
        return vec![c.mchid.clone()];
    }
    let q = query_map(req.uri().query());
    let appid = match (q.get("appid"), q.get("access_token")) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(t)) => inner.lock().token_index.get(t).map(|e| e.appid.clone()),
        _ => None,
    };
    let mut ids = Vec::new();
    if let Some(a) = appid {
        if let Some(m) = inner.config.legacy_by_appid(&a) {
            ids.push(m.partner.clone());
        }
        ids.push(a);
    }
    ids
}

pub(crate) async fn endpoint_faults(
    State(inner): State<Arc<Inner>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let ids = merchant_ids(&inner, &req);
    let hit = {
        let mut st = inner.lock();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let rules = st.faults.for_merchant(&id_refs).endpoints.clone();
        let rule = rules.into_iter().find(|r| {
            path.starts_with(&r.path)
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(&method))
        });
        match rule {
            Some(r) if st.draw(r.probability) => {
                st.count(r.kind.counter());
                Some(r)
            }
            _ => None,
        }
    };
    let Some(rule) = hit else {
        return next.run(req).await;
    };
    let v3 = path.starts_with("/v3/");
    let kind = match rule.kind {
        EndpointFaultKind::Hang => {
            tokio::time::sleep(Duration::from_millis(rule.hang_ms.unwrap_or(30_000))).await;
            EndpointFaultKind::SystemError
        }
        k => k,
    };
    match (kind, v3) {
        (EndpointFaultKind::FrequencyLimited, true) => json_response(
            429,
            &json!({"code": "FREQUENCY_LIMITED", "message": "频率超限"}),
        ),
        (EndpointFaultKind::FrequencyLimited, false) => json_response(
            429,
            &json!({"errcode": 45011, "errmsg": "api minute-quota reach limit"}),
        ),
        (_, true) => json_response(500, &json!({"code": "SYSTEM_ERROR", "message": "系统错误"})),
        (_, false) => json_response(500, &json!({"errcode": -1, "errmsg": "system error"})),
    }
}
