//! `wxpay demo`, run in-process: both merchants' walk-throughs must hold.

use wxpay_server::demo::{DemoOptions, run};

#[tokio::test]
async fn the_demo_tells_the_whole_story_and_succeeds() {
    let mut out: Vec<u8> = Vec::new();
    let result = run(DemoOptions::default(), &mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let report = result.unwrap_or_else(|e| panic!("the demo failed: {e}\n{text}"));
    assert_eq!(
        report
            .orders
            .iter()
            .map(|(m, _, s)| (m.as_str(), s.as_str()))
            .collect::<Vec<_>>(),
        vec![("legacy-demo", "PAID"), ("v3-demo", "PARTIALLY_REFUNDED")]
    );
    for needle in [
        "access_token: fetched once",
        "verifies with the appkey",
        "verifies with the merchant's public key",
        "a hint, not proof",
        "outcome=paid",
        "one transition",
        "PARTIALLY_REFUNDED",
        "steps held",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(!text.contains("FAILED"), "{text}");
    // The demo's own secrets are never printed (the API key only with --keep-running).
    use wxpay_sandbox::config as sb;
    for secret in [
        sb::DEMO_LEGACY_APP_SECRET,
        sb::DEMO_LEGACY_PARTNER_KEY,
        sb::DEMO_LEGACY_APP_KEY,
        sb::DEMO_V3_APIV3_KEY,
    ] {
        assert!(!text.contains(secret), "a secret was printed:\n{text}");
    }
}
