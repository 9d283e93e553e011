//! A KMS's answers, as bytes: reading one whole TTLV message, checking its shape, dropping
//! attributes coffer does not read, and taking out the one payload, a key's state and labels,
//! or its key. Pure functions, so the fuzzer (fuzz.rs) runs exactly what a real answer runs.

use std::io::Read;

use kmip_protocol::types::common::{AttributeValue, KeyMaterial, Operation, State};
use kmip_protocol::types::response::{
    GetAttributesResponsePayload, GetResponsePayload, ManagedObject, ResponseMessage,
    ResponsePayload, ResultReason, ResultStatus,
};
use zeroize::{Zeroize, Zeroizing};

use super::types::{KeyInfo, KeyState, NS_COPY, NS_POLICY, NS_STORE, NS_VERSION};
use super::KmsError;
use crate::crypto::MasterKey;

/// Responses larger than this are refused before they are read: a Get of a 256-bit key is a
/// few hundred bytes, a Locate of a thousand UIDs some tens of kilobytes.
const MAX_RESPONSE: usize = 1 << 20;

/// The server's own words, trimmed to one short line.
fn server_reason(m: &str) -> String {
    let one = m.replace(['\n', '\r'], " ");
    let one = one.trim();
    if one.chars().count() > 200 {
        format!("{}...", one.chars().take(200).collect::<String>())
    } else {
        one.to_string()
    }
}

pub(crate) enum MessageError {
    Io(std::io::Error),
    Kms(KmsError),
}

/// One TTLV message from `r`, whole, into a buffer that is wiped when dropped.
pub(crate) fn read_message(
    endpoint: &str,
    op: &'static str,
    r: &mut impl Read,
) -> Result<Zeroizing<Vec<u8>>, MessageError> {
    // Tag (3 bytes), type (1), length (4, big-endian), then the value.
    let mut head = [0u8; 8];
    r.read_exact(&mut head).map_err(MessageError::Io)?;
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if head[..4] != [0x42, 0x00, 0x7B, 0x01] || len > MAX_RESPONSE {
        return Err(MessageError::Kms(KmsError::Protocol {
            endpoint: endpoint.into(),
            op,
            detail: "the answer is not a KMIP response message".into(),
        }));
    }
    let mut msg = Zeroizing::new(vec![0u8; 8 + len]);
    msg[..8].copy_from_slice(&head);
    r.read_exact(&mut msg[8..]).map_err(MessageError::Io)?;
    Ok(msg)
}

/// The one payload of a response message to `operation`, or what the KMS said instead.
pub(crate) fn parse_response(
    endpoint: &str,
    op: &'static str,
    operation: Operation,
    uid: Option<&str>,
    msg: &[u8],
) -> Result<ResponsePayload, KmsError> {
    let protocol = |detail: &str| KmsError::Protocol {
        endpoint: endpoint.into(),
        op,
        detail: detail.into(),
    };
    // kmip-ttlv recurses without a bound on some malformed input (the fuzzer found a
    // 768-byte answer that overflows the stack), so the shape is checked here first.
    if !ttlv_well_formed(msg, 0) {
        return Err(protocol("the answer is not well-formed TTLV"));
    }
    // kmip-protocol also recurses forever on an attribute it does not know whose value is
    // a structure (a vendor's attribute, say); coffer reads only a few, so the others go.
    let msg = keep_known_attributes(msg);
    // Parse errors can quote bytes of the answer: never pass them on.
    let res: ResponseMessage = kmip_ttlv::de::from_slice(&msg)
        .map_err(|_| protocol("the answer was not the KMIP this client understands"))?;
    let mut items = res.batch_items;
    if items.len() != 1 {
        return Err(protocol("the answer did not hold exactly one batch item"));
    }
    let item = items.remove(0);
    match item.result_status {
        ResultStatus::Success => {}
        ResultStatus::OperationFailed => {
            return Err(match (item.result_reason, uid) {
                (Some(ResultReason::ItemNotFound), Some(uid)) => KmsError::UnknownUid {
                    endpoint: endpoint.into(),
                    uid: uid.to_string(),
                },
                _ => KmsError::Refused {
                    endpoint: endpoint.into(),
                    op,
                    detail: server_reason(
                        item.result_message.as_deref().unwrap_or("no reason given"),
                    ),
                },
            })
        }
        _ => {
            return Err(protocol(
                "the KMS answered 'pending' or 'undone', which coffer does not wait for",
            ))
        }
    }
    if item.operation != Some(operation) {
        return Err(protocol(
            "the KMS answered with another operation's payload",
        ));
    }
    item.payload
        .ok_or_else(|| protocol("the answer held no payload"))
}

/// State and coffer's labels from a Get Attributes answer.
pub(crate) fn key_info(
    endpoint: &str,
    uid: &str,
    r: GetAttributesResponsePayload,
) -> Result<KeyInfo, KmsError> {
    let mut info = KeyInfo {
        uid: uid.to_string(),
        state: KeyState::PreActive,
        name: None,
        store_id: None,
        version: None,
        policy: None,
        copy: None,
    };
    let mut state = None;
    for a in r.attributes.unwrap_or_default() {
        match a.value {
            AttributeValue::State(s) => {
                state = Some(match s {
                    State::PreActive => KeyState::PreActive,
                    State::Active => KeyState::Active,
                    State::Deactivated => KeyState::Deactivated,
                    State::Compromised => KeyState::Compromised,
                    State::Destroyed => KeyState::Destroyed,
                    State::DestroyedCompromised => KeyState::DestroyedCompromised,
                    _ => KeyState::Unknown,
                })
            }
            AttributeValue::Name(n, _) => info.name = Some(n.0),
            AttributeValue::ApplicationSpecificInformation(ns, data) => match ns.0.as_str() {
                NS_STORE => info.store_id = Some(data.0),
                NS_VERSION => info.version = data.0.parse().ok(),
                NS_POLICY => info.policy = Some(data.0),
                NS_COPY => info.copy = Some(data.0),
                _ => {}
            },
            _ => {}
        }
    }
    info.state = state.ok_or_else(|| KmsError::Protocol {
        endpoint: endpoint.into(),
        op: "Get Attributes",
        detail: format!("the KMS gave no State for {uid}"),
    })?;
    Ok(info)
}

/// The 256-bit key of a Get answer, moved into a zeroizing key.
pub(crate) fn key_material(
    endpoint: &str,
    uid: &str,
    r: GetResponsePayload,
) -> Result<MasterKey, KmsError> {
    let wrong = |detail: &str| KmsError::Protocol {
        endpoint: endpoint.into(),
        op: "Get",
        detail: format!("{uid} {detail}"),
    };
    let ManagedObject::SymmetricKey(sk) = r.cryptographic_object else {
        return Err(wrong("is not a symmetric key"));
    };
    let mut bytes = match sk.key_block.key_value.key_material {
        KeyMaterial::Bytes(b) => b,
        KeyMaterial::TransparentSymmetricKey(t) => t.key,
        _ => return Err(wrong("came in a key format coffer does not read")),
    };
    let key = MasterKey::from_slice(&bytes);
    bytes.zeroize();
    key.ok_or_else(|| wrong("is not a 256-bit key"))
}

/// Deepest nesting of structures accepted in an answer; coffer's answers nest 6 deep.
const MAX_DEPTH: usize = 16;

/// Whether `b` is a sequence of well-formed TTLV items (KMIP 1.0, 9.1): every length fits
/// its type and its parent, padding included, and structures nest at most `MAX_DEPTH` deep.
/// Recursion here is bounded by that depth.
fn ttlv_well_formed(b: &[u8], depth: usize) -> bool {
    let mut at = 0;
    while at < b.len() {
        if b.len() - at < 8 {
            return false;
        }
        let ty = b[at + 3];
        let len = u32::from_be_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]) as usize;
        let val = at + 8;
        let padded = match ty {
            // Structure: its length is that of the items in it, each a multiple of 8.
            0x01 if len.is_multiple_of(8) => len,
            // Integer, Enumeration, Interval: 4 bytes and 4 of padding.
            0x02 | 0x05 | 0x0A if len == 4 => 8,
            // Long Integer, Boolean, Date-Time.
            0x03 | 0x06 | 0x09 if len == 8 => 8,
            // Big Integer: a multiple of 8.
            0x04 if len.is_multiple_of(8) => len,
            // Text and Byte String: padded to a multiple of 8.
            0x07 | 0x08 => match len.checked_add(7) {
                Some(n) => n & !7,
                None => return false,
            },
            _ => return false,
        };
        if b.len() - val < padded {
            return false;
        }
        if ty == 0x01 && (depth >= MAX_DEPTH || !ttlv_well_formed(&b[val..val + len], depth + 1)) {
            return false;
        }
        at = val + padded;
    }
    true
}

/// Attribute names whose values kmip-protocol reads by name; other attributes are dropped
/// from an answer before it is parsed.
const KNOWN_ATTRIBUTES: &[&[u8]] = &[
    b"State",
    b"Name",
    b"Application Specific Information",
    b"Object Type",
    b"Cryptographic Algorithm",
    b"Object Group",
    b"Contact Information",
];
const TAG_ATTRIBUTE: [u8; 3] = [0x42, 0x00, 0x08];
const TAG_ATTRIBUTE_NAME: [u8; 3] = [0x42, 0x00, 0x0A];

/// A copy of a well-formed TTLV answer without the Attribute structures whose name is not
/// in `KNOWN_ATTRIBUTES`, enclosing lengths fixed up. Wiped on drop: it may hold a key.
fn keep_known_attributes(b: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    copy_items(b, &mut out);
    out
}

fn item_at(b: &[u8], at: usize) -> (u8, usize, usize) {
    let ty = b[at + 3];
    let len = u32::from_be_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]) as usize;
    let padded = match ty {
        0x01 | 0x04 => len,
        0x02 | 0x05 | 0x0A | 0x03 | 0x06 | 0x09 => 8,
        _ => (len + 7) & !7,
    };
    (ty, len, padded)
}

/// Whether the Attribute structure `value` names an attribute coffer keeps.
fn known_attribute(value: &[u8]) -> bool {
    let mut at = 0;
    while at + 8 <= value.len() {
        let (ty, len, padded) = item_at(value, at);
        if value[at..at + 3] == TAG_ATTRIBUTE_NAME && ty == 0x07 {
            let name = &value[at + 8..at + 8 + len];
            return KNOWN_ATTRIBUTES.contains(&name);
        }
        at += 8 + padded;
    }
    false
}

fn copy_items(b: &[u8], out: &mut Vec<u8>) {
    let mut at = 0;
    while at + 8 <= b.len() {
        let (ty, len, padded) = item_at(b, at);
        let value = &b[at + 8..at + 8 + padded];
        if ty == 0x01 {
            if b[at..at + 3] == TAG_ATTRIBUTE && !known_attribute(&value[..len]) {
                at += 8 + padded;
                continue;
            }
            let start = out.len();
            out.extend_from_slice(&b[at..at + 8]);
            copy_items(&value[..len], out);
            let new_len = (out.len() - start - 8) as u32;
            out[start + 4..start + 8].copy_from_slice(&new_len.to_be_bytes());
        } else {
            out.extend_from_slice(&b[at..at + 8 + padded]);
        }
        at += 8 + padded;
    }
}

#[cfg(test)]
mod tests {
    use super::{keep_known_attributes, ttlv_well_formed};

    fn item(ty: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![0x42, 0x00, 0x01, ty];
        v.extend_from_slice(&(value.len() as u32).to_be_bytes());
        v.extend_from_slice(value);
        while v.len() % 8 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn ttlv_shapes() {
        let int = item(0x02, &[0, 0, 0, 7]);
        let text = item(0x07, b"abc");
        let inner = item(0x01, &[int.clone(), text.clone()].concat());
        assert!(ttlv_well_formed(&item(0x01, &inner), 0));
        assert!(ttlv_well_formed(&item(0x01, &[]), 0), "an empty structure");
        // A length beyond its parent, a bad integer length, an unknown type, a cut item.
        let mut long = item(0x07, b"abc");
        long[7] = 200;
        assert!(!ttlv_well_formed(&long, 0));
        assert!(!ttlv_well_formed(&item(0x02, &[0, 0, 0, 0, 0]), 0));
        assert!(!ttlv_well_formed(&item(0x0B, &[0; 8]), 0));
        assert!(!ttlv_well_formed(&int[..12], 0));
        // Nesting: 16 deep is fine, 17 is not.
        let mut nested = int;
        for _ in 0..16 {
            nested = item(0x01, &nested);
        }
        assert!(ttlv_well_formed(&nested, 0));
        assert!(!ttlv_well_formed(&item(0x01, &nested), 0));
    }

    fn attribute(name: &str, value: Vec<u8>) -> Vec<u8> {
        let mut v = vec![0x42, 0x00, 0x0A, 0x07];
        v.extend_from_slice(&(name.len() as u32).to_be_bytes());
        v.extend_from_slice(name.as_bytes());
        while v.len() % 8 != 0 {
            v.push(0);
        }
        let mut a = item(0x01, &[v, value].concat());
        a[..3].copy_from_slice(&[0x42, 0x00, 0x08]);
        a
    }

    #[test]
    fn unknown_attributes_are_dropped_and_lengths_fixed() {
        let state = attribute("State", item(0x05, &[0, 0, 0, 2]));
        let vendor = attribute("x-vendor", item(0x01, &item(0x07, b"deep")));
        let payload = item(0x01, &[state.clone(), vendor].concat());
        let kept = keep_known_attributes(&payload);
        assert_eq!(&kept[..], &item(0x01, &state)[..]);
        assert!(ttlv_well_formed(&kept, 0));
    }
}
