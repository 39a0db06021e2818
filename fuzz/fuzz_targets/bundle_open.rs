#![no_main]
//! Bundle parsing: arbitrary bytes as a bundle archive (after the signature check, which a
//! signer's mistake or a stolen key gets past) and as a signature file. The check lives in
//! `satgate::bundle::fuzz_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satgate::bundle::fuzz_check(data));
