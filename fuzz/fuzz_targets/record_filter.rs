//! Arbitrary bytes through the record filter: no panic, no unknown field, no other User's
//! identity, metadata or payload. The check lives in `satgate::views::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| satgate::views::fuzz::check_filter(data));
