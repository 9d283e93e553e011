//! Who a request is authorised as, and what it may ask for: the peer's grant, and for a
//! relayed request (`X-Coffer-For`) the relay right of the peer and the original requester's
//! own grant, with the scopes of both. Decided from the request's head alone, before any body
//! is read; every refusal is audited.

use super::{ApiError, KeyServer, Request, Rights, FOR};
use crate::crypto::PublicKey;

/// What an admitted request asks for.
pub(super) enum Route<'a> {
    Health,
    /// The chain, asked by this peer (a child's heartbeat, when its Via names only itself).
    Chain(&'a str),
    List(Caller<'a>),
    Push(Caller<'a>),
    Fetch(&'a str, &'a PublicKey, Caller<'a>),
}

/// Who a request is authorised as: the peer, and (relayed) the original requester.
pub(super) struct Caller<'a> {
    pub(super) peer_fp: &'a str,
    pub(super) peer: Rights,
    /// The original requester and its rights here; the peer itself when not relayed.
    pub(super) requester_fp: &'a str,
    pub(super) requester: Rights,
}

impl Caller<'_> {
    /// Both the relaying peer and the original requester reach this key.
    pub(super) fn covers(&self, store_id: &str, key_id: &str) -> bool {
        self.peer.covers(store_id, key_id) && self.requester.covers(store_id, key_id)
    }
}

impl KeyServer {
    /// Refuse, audited.
    fn refuse(&self, req: &Request, key: Option<&str>, fp: Option<&str>, e: ApiError) -> ApiError {
        let detail = format!("{} {}: {e}", req.method, req.path);
        if let (Some(fp), Some(via)) = (fp, req.header(super::VIA)) {
            self.peers.child_refused(fp, via, req.peer_addr.as_deref());
        }
        self.audit
            .refusal("request", key, None, fp, "refused", Some(&detail));
        e
    }

    /// Who the request is authorised as: the peer's grant, and for a relayed request (one
    /// naming its original requester) the peer's relay right and the requester's own grant.
    fn caller<'a>(&'a self, req: &'a Request, fp: &'a str) -> Result<Caller<'a>, ApiError> {
        let grant = |fp: &str| self.grants.read().ok().and_then(|g| g.get(fp).cloned());
        let Some(peer) = grant(fp) else {
            let e = ApiError::UnknownCertificate(fp.to_string());
            return Err(self.refuse(req, None, Some(fp), e));
        };
        let Some(orig) = req.header(FOR).filter(|o| *o != fp) else {
            return Ok(Caller {
                peer_fp: fp,
                peer: peer.clone(),
                requester_fp: fp,
                requester: peer,
            });
        };
        if !peer.relay {
            let e = ApiError::NoRelay {
                peer: fp.to_string(),
                requester: orig.to_string(),
            };
            return Err(self.refuse(req, None, Some(fp), e));
        }
        let Some(requester) = grant(orig) else {
            let e = ApiError::UnknownRequester {
                peer: fp.to_string(),
                requester: orig.to_string(),
            };
            return Err(self.refuse(req, None, Some(orig), e));
        };
        Ok(Caller {
            peer_fp: fp,
            peer,
            requester_fp: orig,
            requester,
        })
    }

    /// Decide what a request is and whether it is allowed, from its method, path and headers
    /// alone: the serving layer calls this before it reads a body.
    pub(super) fn route<'a>(
        &'a self,
        req: &'a Request,
        peer: Option<&'a (PublicKey, String)>,
    ) -> Result<Route<'a>, ApiError> {
        if req.method == "GET" && req.path == "/healthz" {
            return Ok(Route::Health);
        }
        let Some((peer_key, fp)) = peer else {
            return Err(self.refuse(req, None, None, ApiError::NoCertificate));
        };
        let caller = self.caller(req, fp)?;
        let need = |ok: bool, right: &'static str, key: Option<&str>| {
            if ok {
                return Ok(());
            }
            let who = caller.requester_fp;
            Err(self.refuse(
                req,
                key,
                Some(who),
                ApiError::LacksRight(who.to_string(), right),
            ))
        };
        let r = caller.requester.clone();
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/chain") => Ok(Route::Chain(caller.peer_fp)),
            ("GET", "/v1/keys") => {
                need(r.read || r.write, "read", None).map(|_| Route::List(caller))
            }
            ("POST", "/v1/keys") => need(r.write, "write", None).map(|_| Route::Push(caller)),
            ("GET", p) if p.starts_with("/v1/keys/") => {
                let key_id = &p["/v1/keys/".len()..];
                need(r.use_, "use", Some(key_id))?;
                Ok(Route::Fetch(key_id, peer_key, caller))
            }
            _ => Err(ApiError::NoEndpoint),
        }
    }

    /// Refuse a request before its body is read, if it is to be refused (audited).
    pub fn admit(
        &self,
        req: &Request,
        peer: Option<&(PublicKey, String)>,
    ) -> Option<(u16, serde_json::Value)> {
        let e = self.route(req, peer).err()?;
        let endpoint = super::metrics::endpoint(&req.method, &req.path);
        self.metrics.request(endpoint, e.status(), Some(&e));
        Some((e.status(), e.body()))
    }
}
