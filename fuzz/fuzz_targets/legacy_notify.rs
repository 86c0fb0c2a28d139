//! The 2014 notify verifier on attacker-controlled input: the query string and the XML body
//! arrive from the network. The input is split at the first NUL byte: query before, body after.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_proto::SecretString;
use wxpay_proto::legacy::verify_notify;

const PARTNER_KEY: &str = "8934e7d15453e97507ef794cf7b0519d";
const APP_KEY: &str = "L8LrMqqeGRxST5reouB0K66CaYAWpqhAVsq7ggKkxHCOastWksvuX1uvmvQclxaHoYd3ElNBrNO2DHnnzgfVG9Qs473M3DTOZug5er46FhuGofumV8H2FVR9qkjSlC5K";

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let partner_key = SecretString::from(PARTNER_KEY);
    let app_key = SecretString::from(APP_KEY);
    if let Ok(n) = verify_notify(query, body, &partner_key, &app_key) {
        // Whatever verified must have a non-negative integer amount.
        assert!(n.total_fee.get() >= 0);
    }
});
