#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| coffer::keys::kms::fuzz::config(data));
