//! The KMIP client: kmip-protocol's request and response types, serialized as TTLV by
//! kmip-ttlv, over a TLS stream that we open ourselves with the project's rustls. The crate's
//! own client exists only behind its TLS features, which pin rustls 0.19 and ring 0.16, so
//! the one exchange it does (write a request message, read one response message, check the
//! batch item) is written here. One connection per command; every read and write has the
//! configuration's timeout.
//!
//! What crosses this module's edge is coarse on purpose: a UID, a state, our own labels, or
//! a `MasterKey`. A response is read whole into a zeroizing buffer before it is parsed, key
//! bytes from a Get move into a zeroizing key at once, and no response is ever formatted
//! into an error or a log line.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;

use kmip_protocol::types::common::{
    ApplicationData, ApplicationNamespace, AttributeIndex, AttributeName, AttributeValue,
    CompromiseOccurrenceDate, CryptographicAlgorithm, KeyCompressionType, KeyFormatType,
    KeyMaterial, ObjectType, Operation, RevocationMessage, RevocationReasonCode, State,
    UniqueIdentifier,
};
use kmip_protocol::types::request::{
    Attribute, KeyWrappingSpecification, RequestPayload, RevocationReason, TemplateAttribute,
};
use kmip_protocol::types::response::{
    GetAttributesResponsePayload, GetResponsePayload, ManagedObject, ResponseMessage,
    ResponsePayload, ResultReason, ResultStatus,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use zeroize::{Zeroize, Zeroizing};

use super::{KmsConfig, KmsError};
use crate::crypto::MasterKey;

/// Responses larger than this are refused before they are read: a Get of a 256-bit key is a
/// few hundred bytes, a Locate of a thousand UIDs some tens of kilobytes.
const MAX_RESPONSE: usize = 1 << 20;

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Application Specific Information namespaces that carry coffer's attributes (PyKMIP refuses
/// custom `x-` attributes, and ASI is standard KMIP 1.0: every KMS keeps and searches it).
pub const NS_STORE: &str = "x-store-id";
pub const NS_POLICY: &str = "x-policy";
pub const NS_COPY: &str = "x-copy";
pub const NS_VERSION: &str = "x-key-version";
/// Object Group of every key coffer creates, so an operator can list them from the console.
pub const GROUP: &str = "coffer";
/// Encrypt | Decrypt | Wrap Key | Unwrap Key (KMIP 1.0, 9.1.3.3.1).
const USAGE_MASK: i32 = 0x04 | 0x08 | 0x10 | 0x20;

/// What coffer records with a master key in the KMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLabels {
    pub store_id: String,
    pub version: u32,
    pub policy: Option<String>,
    pub copy: Option<String>,
}

impl KeyLabels {
    /// The key's Name: unique per store and version, readable in a KMS console.
    pub fn name(&self) -> String {
        format!("coffer-{}-v{}", self.store_id, self.version)
    }
}

/// The lifecycle state of a managed object (KMIP 1.0, 3.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    PreActive,
    Active,
    Deactivated,
    Compromised,
    Destroyed,
    DestroyedCompromised,
    /// A state of a later KMIP version than this client knows.
    Unknown,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::PreActive => "pre-active",
            KeyState::Active => "active",
            KeyState::Deactivated => "deactivated",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
            KeyState::DestroyedCompromised => "destroyed (compromised)",
            KeyState::Unknown => "in a state coffer does not know",
        }
    }
}

/// One key as the KMS describes it: its state and the labels coffer gave it.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub uid: String,
    pub state: KeyState,
    pub name: Option<String>,
    pub store_id: Option<String>,
    pub version: Option<u32>,
    pub policy: Option<String>,
    pub copy: Option<String>,
}

pub struct KmsClient {
    endpoint: String,
    timeout: std::time::Duration,
    stream: RefCell<Tls>,
}

/// Every certificate in a PEM file; at least one.
fn pem_certs(
    cfg: &KmsConfig,
    what: &str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, KmsError> {
    let bad = |e: String| KmsError::Config {
        path: cfg.path.display().to_string(),
        detail: format!("{what} {}: {e}", path.display()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(certs)
}

fn tls_config(cfg: &KmsConfig) -> Result<ClientConfig, KmsError> {
    let bad = |what: &str, p: &std::path::Path, e: String| KmsError::Config {
        path: cfg.path.display().to_string(),
        detail: format!("{what} {}: {e}", p.display()),
    };
    let mut roots = RootCertStore::empty();
    for c in pem_certs(cfg, "CA certificate", &cfg.ca)? {
        roots
            .add(c)
            .map_err(|e| bad("CA certificate", &cfg.ca, e.to_string()))?;
    }
    let chain = pem_certs(cfg, "client certificate", &cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| bad("client key", &cfg.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad("TLS settings for", &cfg.path, e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("client certificate and key", &cfg.cert, e.to_string()))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

impl KmsClient {
    /// Connect and complete the TLS handshake, so a refused certificate shows here.
    pub fn connect(cfg: &KmsConfig) -> Result<KmsClient, KmsError> {
        let endpoint = cfg.endpoint();
        let config = tls_config(cfg)?;
        let name = cfg.server_name.clone().unwrap_or_else(|| cfg.host.clone());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| KmsError::Config {
            path: cfg.path.display().to_string(),
            detail: format!("'{name}' is not a host name or address"),
        })?;
        let unreachable = |detail: String| KmsError::Unreachable {
            endpoint: endpoint.clone(),
            detail,
        };
        let addrs: Vec<_> = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", cfg.host)))?
            .collect();
        let mut last = None;
        let mut sock = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, cfg.timeout) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let sock = sock.ok_or_else(|| match last {
            Some(e) if is_timeout(&e) => KmsError::Timeout {
                endpoint: endpoint.clone(),
                after: cfg.timeout,
            },
            Some(e) => unreachable(e.to_string()),
            None => unreachable(format!("{} has no address", cfg.host)),
        })?;
        let io = |e: std::io::Error| unreachable(e.to_string());
        sock.set_read_timeout(Some(cfg.timeout)).map_err(io)?;
        sock.set_write_timeout(Some(cfg.timeout)).map_err(io)?;
        let _ = sock.set_nodelay(true);
        let conn =
            ClientConnection::new(Arc::new(config), server_name).map_err(|e| KmsError::Tls {
                endpoint: endpoint.clone(),
                detail: e.to_string(),
            })?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                return Err(if is_timeout(&e) {
                    KmsError::Timeout {
                        endpoint,
                        after: cfg.timeout,
                    }
                } else {
                    KmsError::Tls {
                        endpoint,
                        detail: e.to_string(),
                    }
                });
            }
        }
        Ok(KmsClient {
            endpoint,
            timeout: cfg.timeout,
            stream: RefCell::new(tls),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn io_error(&self, op: &'static str, e: std::io::Error) -> KmsError {
        if is_timeout(&e) {
            KmsError::Timeout {
                endpoint: self.endpoint.clone(),
                after: self.timeout,
            }
        } else {
            KmsError::Connection {
                endpoint: self.endpoint.clone(),
                op,
                detail: e.to_string(),
            }
        }
    }

    fn read_message(
        &self,
        op: &'static str,
        tls: &mut Tls,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        read_message(&self.endpoint, op, tls).map_err(|e| match e {
            MessageError::Io(e) => self.io_error(op, e),
            MessageError::Kms(k) => k,
        })
    }

    /// Send one request and return its one response payload. `uid` names the object for a
    /// "not found" message.
    fn request(
        &self,
        op: &'static str,
        uid: Option<&str>,
        payload: RequestPayload,
    ) -> Result<ResponsePayload, KmsError> {
        let protocol = |detail: &str| KmsError::Protocol {
            endpoint: self.endpoint.clone(),
            op,
            detail: detail.into(),
        };
        let operation = payload.operation();
        let bytes = kmip_protocol::request::to_vec(payload, None)
            .map_err(|_| protocol("the request could not be encoded"))?;
        let mut tls = self.stream.borrow_mut();
        tls.write_all(&bytes)
            .and_then(|_| tls.flush())
            .map_err(|e| self.io_error(op, e))?;
        let msg = self.read_message(op, &mut tls)?;
        parse_response(&self.endpoint, op, operation, uid, &msg)
    }

    /// Create an AES-256 key with coffer's labels; it starts pre-active. Returns its UID.
    pub fn create_master(&self, labels: &KeyLabels) -> Result<String, KmsError> {
        let mut attrs = vec![
            Attribute::CryptographicAlgorithm(CryptographicAlgorithm::AES),
            Attribute(
                AttributeName("Cryptographic Length".into()),
                None,
                AttributeValue::Integer(256),
            ),
            Attribute(
                AttributeName("Cryptographic Usage Mask".into()),
                None,
                AttributeValue::Integer(USAGE_MASK),
            ),
            Attribute::Name(labels.name()),
            Attribute::ObjectGroup(GROUP.into()),
        ];
        let mut asi = vec![
            (NS_STORE, labels.store_id.clone()),
            (NS_VERSION, labels.version.to_string()),
        ];
        if let Some(p) = &labels.policy {
            asi.push((NS_POLICY, p.clone()));
        }
        if let Some(c) = &labels.copy {
            asi.push((NS_COPY, c.clone()));
        }
        // KMIP 1.x: several values of one attribute each carry an explicit index.
        for (i, (ns, data)) in asi.into_iter().enumerate() {
            attrs.push(Attribute(
                AttributeName("Application Specific Information".into()),
                Some(AttributeIndex(i as i32)),
                AttributeValue::ApplicationSpecificInformation(
                    ApplicationNamespace(ns.into()),
                    ApplicationData(data),
                ),
            ));
        }
        let payload =
            RequestPayload::Create(ObjectType::SymmetricKey, TemplateAttribute::unnamed(attrs));
        match self.request("Create", None, payload)? {
            ResponsePayload::Create(r) => Ok(r.unique_identifier.0),
            _ => Err(self.unexpected("Create")),
        }
    }

    pub fn activate(&self, uid: &str) -> Result<(), KmsError> {
        let payload = RequestPayload::Activate(Some(UniqueIdentifier(uid.into())));
        match self.request("Activate", Some(uid), payload)? {
            ResponsePayload::Activate(_) => Ok(()),
            _ => Err(self.unexpected("Activate")),
        }
    }

    /// Revoke: "cessation of operation" after a rotation, or "key compromise".
    pub fn revoke(&self, uid: &str, compromised: bool) -> Result<(), KmsError> {
        let (code, date) = if compromised {
            (
                RevocationReasonCode::KeyCompromise,
                Some(CompromiseOccurrenceDate(crate::unix_now())),
            )
        } else {
            (RevocationReasonCode::CessationOfOperation, None)
        };
        let payload = RequestPayload::Revoke(
            Some(UniqueIdentifier(uid.into())),
            RevocationReason(
                code,
                Some(RevocationMessage(
                    if compromised {
                        "coffer: key compromise"
                    } else {
                        "coffer: superseded by a newer master-key version"
                    }
                    .into(),
                )),
            ),
            date,
        );
        match self.request("Revoke", Some(uid), payload)? {
            ResponsePayload::Revoke(_) => Ok(()),
            _ => Err(self.unexpected("Revoke")),
        }
    }

    /// Destroy a key that was never used (an `init` that failed half-way).
    pub fn destroy(&self, uid: &str) -> Result<(), KmsError> {
        let payload = RequestPayload::Destroy(Some(UniqueIdentifier(uid.into())));
        match self.request("Destroy", Some(uid), payload)? {
            ResponsePayload::Destroy(_) => Ok(()),
            _ => Err(self.unexpected("Destroy")),
        }
    }

    /// Take a key that nothing refers to out of the KMS again (a failed init or rotation):
    /// an active key must be revoked before it can be destroyed.
    pub fn discard(&self, uid: &str, activated: bool) -> Result<(), KmsError> {
        if activated {
            self.revoke(uid, false)?;
        }
        self.destroy(uid)
    }

    /// State and labels of one key.
    pub fn info(&self, uid: &str) -> Result<KeyInfo, KmsError> {
        let names = ["State", "Name", "Application Specific Information"]
            .iter()
            .map(|n| AttributeName((*n).into()))
            .collect();
        let payload =
            RequestPayload::GetAttributes(Some(UniqueIdentifier(uid.into())), Some(names));
        let r = match self.request("Get Attributes", Some(uid), payload)? {
            ResponsePayload::GetAttributes(r) => r,
            _ => return Err(self.unexpected("Get Attributes")),
        };
        key_info(&self.endpoint, uid, r)
    }

    /// The key material of `uid`, refused when the KMS marks it compromised or destroyed.
    pub fn get_master(&self, uid: &str) -> Result<MasterKey, KmsError> {
        let info = self.info(uid)?;
        match info.state {
            KeyState::Compromised | KeyState::DestroyedCompromised => {
                return Err(KmsError::Compromised {
                    endpoint: self.endpoint.clone(),
                    uid: uid.into(),
                })
            }
            KeyState::Destroyed => {
                return Err(KmsError::Destroyed {
                    endpoint: self.endpoint.clone(),
                    uid: uid.into(),
                })
            }
            KeyState::Unknown => {
                return Err(KmsError::Protocol {
                    endpoint: self.endpoint.clone(),
                    op: "Get Attributes",
                    detail: format!("{uid} is in a state coffer does not know"),
                })
            }
            _ => {}
        }
        let payload = RequestPayload::Get(
            Some(UniqueIdentifier(uid.into())),
            Some(KeyFormatType::Raw),
            None::<KeyCompressionType>,
            None::<KeyWrappingSpecification>,
        );
        match self.request("Get", Some(uid), payload)? {
            ResponsePayload::Get(r) => key_material(&self.endpoint, uid, r),
            _ => Err(self.unexpected("Get")),
        }
    }

    /// UIDs of every object with coffer's store-id label `store_id`.
    pub fn locate_store(&self, store_id: &str) -> Result<Vec<String>, KmsError> {
        let payload = RequestPayload::Locate(vec![Attribute::ApplicationSpecificInformation(
            ApplicationNamespace(NS_STORE.into()),
            ApplicationData(store_id.into()),
        )]);
        match self.request("Locate", None, payload)? {
            ResponsePayload::Locate(r) => {
                Ok(r.unique_identifiers.into_iter().map(|u| u.0).collect())
            }
            _ => Err(self.unexpected("Locate")),
        }
    }

    fn unexpected(&self, op: &'static str) -> KmsError {
        KmsError::Protocol {
            endpoint: self.endpoint.clone(),
            op,
            detail: "the KMS answered with another operation's payload".into(),
        }
    }
}

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
