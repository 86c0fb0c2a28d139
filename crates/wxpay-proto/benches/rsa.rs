//! RSA-2048 PKCS#1 v1.5 / SHA-256 sign and verify: aws-lc-rs (what wxpay-proto uses) versus the
//! pure-Rust `rsa` crate, with the official demo merchant key.
//!
//! `cargo bench -p wxpay-proto --bench rsa -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding as _, Signer as _, Verifier as _};
use wxpay_proto::v3::rsa::RsaPrivateKey;

/// The request-signature message of shared/vectors/v3.json (a typical JSAPI order body).
const MESSAGE: &str = "POST\n/v3/pay/transactions/jsapi\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{\"appid\":\"wxd678efh567hg6787\",\"mchid\":\"1900007291\",\"description\":\"Image形象店-深圳腾大-QQ公仔\",\"out_trade_no\":\"1217752501201407033233368018\",\"notify_url\":\"https://www.weixin.qq.com/wxpay/pay.php\",\"amount\":{\"total\":100,\"currency\":\"CNY\"},\"payer\":{\"openid\":\"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o\"}}\n";

fn key_pem() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors/keys/official_test_key.pem");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn bench(c: &mut Criterion) {
    let pem = key_pem();
    let msg = MESSAGE.as_bytes();

    // aws-lc-rs through wxpay-proto's wrapper
    let lc = RsaPrivateKey::from_pkcs8_pem(&pem).expect("aws-lc-rs parses the key");
    let lc_pub = lc.public_key();
    let lc_sig = lc.sign_sha256(msg);

    // RustCrypto `rsa`
    let rc = rsa::PrivateKey::from_pkcs8_pem(&pem).expect("rsa parses the key");
    let rc_sign = rsa::pkcs1v15::SigningKey::<Sha256>::new(rc.clone());
    let rc_verify = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(rc.to_public_key());
    let rc_sig = rc_sign.sign(msg);
    assert_eq!(
        rc_sig.to_vec(),
        lc_sig,
        "both libraries produce the same deterministic signature"
    );
    assert!(lc_pub.verify_sha256(msg, &lc_sig));
    assert!(rc_verify.verify(msg, &rc_sig).is_ok());

    let mut g = c.benchmark_group("rsa2048_pkcs1v15_sha256");
    g.bench_function("aws-lc-rs/sign", |b| {
        b.iter(|| lc.sign_sha256(black_box(msg)))
    });
    g.bench_function("aws-lc-rs/verify", |b| {
        b.iter(|| assert!(lc_pub.verify_sha256(black_box(msg), black_box(&lc_sig))))
    });
    g.bench_function("rsa/sign", |b| b.iter(|| rc_sign.sign(black_box(msg))));
    g.bench_function("rsa/verify", |b| {
        b.iter(|| assert!(rc_verify.verify(black_box(msg), black_box(&rc_sig)).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
