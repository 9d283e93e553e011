//! The KMIP client: kmip-protocol's request and response types, serialized as TTLV by
//! kmip-ttlv, over a TLS stream that we open ourselves with the project's rustls. The crate's
//! own client exists only behind its TLS features, which pin rustls 0.19 and ring 0.16, so
//! the one exchange it does (write a request message, read one response message, check the
//! batch item) is written here, with the reading of answers in answer.rs. One connection per
//! command; every read and write has the configuration's timeout.
//!
//! What crosses this module's edge is coarse on purpose: a UID, a state, our own labels, or
//! a `MasterKey`. A response is read whole into a zeroizing buffer before it is parsed, key
//! bytes from a Get move into a zeroizing key at once, and no response is ever formatted
//! into an error or a log line.

use std::cell::RefCell;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;

use kmip_protocol::types::common::{
    ApplicationData, ApplicationNamespace, AttributeIndex, AttributeName, AttributeValue,
    CompromiseOccurrenceDate, CryptographicAlgorithm, KeyCompressionType, KeyFormatType,
    ObjectType, RevocationMessage, RevocationReasonCode, UniqueIdentifier,
};
use kmip_protocol::types::request::{
    Attribute, KeyWrappingSpecification, RequestPayload, RevocationReason, TemplateAttribute,
};
use kmip_protocol::types::response::ResponsePayload;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use zeroize::Zeroizing;

use super::answer::MessageError;
use super::answer::{key_info, key_material, parse_response, read_message};
use super::types::{
    KeyInfo, KeyLabels, KeyState, GROUP, NS_COPY, NS_POLICY, NS_STORE, NS_VERSION, USAGE_MASK,
};
use super::{KmsConfig, KmsError};
use crate::crypto::MasterKey;

type Tls = StreamOwned<ClientConnection, TcpStream>;

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
