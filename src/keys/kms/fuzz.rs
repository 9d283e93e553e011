//! Entry points for the fuzzer (fuzz/): what a hostile KMS or a damaged kms.toml can send
//! this client, through the same code a real answer takes.

use std::path::Path;

use kmip_protocol::types::common::Operation;
use kmip_protocol::types::response::ResponsePayload;

use super::answer::{key_info, key_material, parse_response, read_message};

/// Bytes as a KMS's answer to each operation coffer sends.
pub fn response(bytes: &[u8]) {
    let Ok(msg) = read_message("fuzz:0", "fuzz", &mut &bytes[..]) else {
        return;
    };
    for operation in [
        Operation::Create,
        Operation::Get,
        Operation::GetAttributes,
        Operation::Locate,
        Operation::Activate,
        Operation::Revoke,
        Operation::Destroy,
    ] {
        match parse_response("fuzz:0", "fuzz", operation, Some("1"), &msg) {
            Ok(ResponsePayload::Get(r)) => {
                let _ = key_material("fuzz:0", "1", r);
            }
            Ok(ResponsePayload::GetAttributes(r)) => {
                let _ = key_info("fuzz:0", "1", r);
            }
            _ => {}
        }
    }
}

/// Bytes as a kms.toml.
pub fn config(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = super::KmsConfig::parse(Path::new("/etc/coffer/kms.toml"), text);
    }
}
