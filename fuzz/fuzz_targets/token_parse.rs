#![no_main]
//! Bearer tokens: arbitrary bytes as the header, as the claims of a correctly signed token, and
//! as the JOSE header of one. The check lives in `satgate::auth::fuzz::fuzz_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satgate::auth::fuzz::fuzz_check(data));
