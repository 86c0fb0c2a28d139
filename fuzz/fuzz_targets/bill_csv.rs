//! The APIv3 trade bill parser on arbitrary text; whatever parses must round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_proto::bill::{parse_trade_bill, render_trade_bill};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bill) = parse_trade_bill(text) {
        assert_eq!(
            parse_trade_bill(&render_trade_bill(&bill)).as_ref(),
            Ok(&bill)
        );
    }
});
