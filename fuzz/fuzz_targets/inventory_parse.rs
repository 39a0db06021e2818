#![no_main]
//! Inventory documents, as a file or an inventory service's answer. The check lives in
//! `satgate::ownership::fuzz::fuzz_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satgate::ownership::fuzz::fuzz_check(data));
