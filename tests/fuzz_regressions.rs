//! Every input the fuzzer keeps (fuzz/seeds, fuzz/corpus) and every crash it ever found
//! (fuzz/regressions, once fixed) goes through its entry point again on each test run: none
//! may panic. tools/fuzz.sh does the fuzzing itself.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("ciphertext_file", coffer::fuzzing::ciphertext_file),
    ("block", coffer::fuzzing::block),
    ("header", coffer::fuzzing::header),
    ("name", coffer::fuzzing::name),
    ("catalog_record", coffer::fuzzing::catalog_record),
    ("export_file", coffer::fuzzing::export_file),
    ("descriptor", coffer::fuzzing::descriptor),
    ("keystore", coffer::fuzzing::keystore),
    ("kms_response", coffer::keys::kms::fuzz::response),
    ("kms_config", coffer::keys::kms::fuzz::config),
    ("keyserver_http", coffer::fuzzing::keyserver_http),
];

#[test]
fn every_kept_fuzz_input_runs_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seen = 0;
    for (name, run) in TARGETS {
        let mut seeds = 0;
        for kind in ["seeds", "corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                continue;
            };
            for e in dir.flatten() {
                let bytes = std::fs::read(e.path()).expect("read");
                run(&bytes);
                seen += 1;
                if kind == "seeds" {
                    seeds += 1;
                }
            }
        }
        assert!(seeds > 0, "fuzz/seeds/{name} is empty");
    }
    assert!(seen >= TARGETS.len());
}

/// The shapes that most often break parsers: nothing, one byte, a header's worth of zeros,
/// a length field that claims more than there is.
#[test]
fn edge_inputs_run_without_a_panic() {
    let mut claims_too_much = vec![0x42, 0x00, 0x7B, 0x01, 0xFF, 0xFF, 0xFF, 0xF0];
    claims_too_much.extend_from_slice(&[0; 16]);
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![0; 132],
        vec![1; 4096 + 28 + 1],
        vec![0xFF; 300],
        claims_too_much,
        b"{}".to_vec(),
        b"{\"format\":\"coffer-store\",\"version\":1}".to_vec(),
    ];
    for (_, run) in TARGETS {
        for i in &inputs {
            run(i);
        }
    }
}
