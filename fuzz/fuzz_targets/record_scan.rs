//! Arbitrary bytes as one record line through the scanner and through the serde_json reference:
//! both accept exactly the same lines and extract the same bytes. The check lives in
//! `satgate::stream::fuzz::check_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| satgate::stream::fuzz::check_scan(data));
