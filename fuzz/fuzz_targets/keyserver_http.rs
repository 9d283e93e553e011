#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| coffer::fuzzing::keyserver_http(data));
