//! The APIv2 flat XML parser on arbitrary text; whatever parses must survive a to_xml round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_proto::v2::{parse_xml, to_xml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = parse_xml(text) {
        // Keys that came out of a parsed document are XML names, so they re-serialize.
        assert_eq!(parse_xml(&to_xml(&map)).as_ref(), Ok(&map));
    }
});
