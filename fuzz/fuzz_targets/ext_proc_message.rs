#![no_main]
//! Messages from Envoy's ext_proc filter: arbitrary bytes decoded as a `ProcessingRequest`, then
//! read as `satgate ext-proc` reads them (headers, modes, the verified token payload). The checks
//! live in `satgate::server::extproc::fuzz::fuzz_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satgate::server::extproc::fuzz::fuzz_check(data));
