#![no_main]
// The body is gridwork_tests::fuzz_targets::enrolment_uri (tests/src/fuzz_targets.rs), which
// tests/tests/fuzz_regressions.rs replays on stable.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gridwork_tests::fuzz_targets::enrolment_uri(data));
