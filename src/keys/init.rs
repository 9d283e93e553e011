//! Creating a store with its first master key, where the store's keys are made: this host's
//! keystore (local) or a KMIP server (kms).
//!
//! A kms store's host also keeps a backup credential for the store in its keystore when it has
//! one: the master key never rests on that host, so when the KMS is down the credential is
//! what lets `mount --fallback backup-only` go on taking backups (docs/keys.md).

use std::path::PathBuf;

use super::export::credential_of;
use super::kms::KeyLabels;
use super::recovery::{key_entry, seal as seal_recovery};
use super::transport::BackupCredential;
use super::{Chain, KeyError};
use crate::crypto::{MasterKey, PublicKey};
use crate::store::{self, Descriptor, FirstMaster, InitOptions, KeyHome};

/// What `init` is asked to make.
pub struct NewStore {
    pub root: PathBuf,
    pub options: InitOptions,
    /// An organisation recovery certificate (its key and PEM) to seal the master key to.
    pub recovery: Option<(PublicKey, String)>,
}

/// Whether the new store's host keeps a backup credential for it, and why not when it does not.
pub enum CredentialKept {
    /// Kept in this keystore (a kms store).
    Kept(PathBuf),
    /// Not needed: the master key itself is in this keystore (a local store).
    NotNeeded,
    /// A kms store on a host without a keystore: none kept.
    NoKeystore(PathBuf),
}

pub struct Created {
    pub desc: Descriptor,
    pub credential: CredentialKept,
}

/// Create the store. If anything fails, nothing is left behind: no store directory, and no
/// key in the KMS.
pub fn init(chain: &Chain, new: &NewStore) -> Result<Created, KeyError> {
    // Fail on a non-empty directory before asking for a passphrase or calling a KMS.
    if let Ok(mut it) = std::fs::read_dir(&new.root) {
        if it.next().is_some() {
            return Err(store::StoreError::NotEmpty(new.root.clone()).into());
        }
    }
    match new.options.provider {
        KeyHome::Local => Ok(Created {
            desc: init_local(chain, new)?,
            credential: CredentialKept::NotNeeded,
        }),
        KeyHome::Kms => {
            // The keystore that will keep the credential is opened before anything is made,
            // so that a wrong passphrase leaves nothing behind.
            let ks = match chain.keystore_exists() {
                true => Some(chain.keystore()?),
                false => None,
            };
            let (desc, cred) = init_kms(chain, new, ks.is_some())?;
            let credential = match (ks, cred) {
                (Some(ks), Some(cred)) => {
                    ks.add_credential(&cred, "init (kms store)", None)?;
                    CredentialKept::Kept(ks.dir().to_path_buf())
                }
                _ => CredentialKept::NoKeystore(chain.keystore_dir().to_path_buf()),
            };
            Ok(Created { desc, credential })
        }
    }
}

fn init_local(chain: &Chain, new: &NewStore) -> Result<Descriptor, KeyError> {
    let ks = chain.keystore_or_create()?;
    let save = Box::new(|desc: &Descriptor, master: &MasterKey| {
        let rec = desc.current_master();
        ks.add(key_entry(desc, rec.version, &rec.key_id, "created"), master)
            .map(|_| ())
            .map_err(|e| e.into())
    });
    let seal = Box::new(
        |desc: &Descriptor, master: &MasterKey| match &new.recovery {
            Some((pk, pem)) => seal_recovery(desc, master, pk, pem, ks.audit())
                .map(Some)
                .map_err(|e| e.into()),
            None => Ok(None),
        },
    );
    Ok(store::init(
        &new.root,
        &new.options,
        FirstMaster::random(),
        save,
        seal,
    )?)
}

/// The KMS creates the key (pre-active), labelled with the new store's id; coffer reads it,
/// builds the store, activates the key just before the descriptor (which marks a complete
/// store) is written, and takes the key out of service again if anything fails.
fn init_kms(
    chain: &Chain,
    new: &NewStore,
    want_credential: bool,
) -> Result<(Descriptor, Option<BackupCredential>), KeyError> {
    let kms = chain.kms()?;
    let store_id = crate::crypto::random_id();
    let labels = KeyLabels {
        store_id: hex::encode(store_id),
        version: 1,
        policy: new.options.policy.clone(),
        copy: new.options.copy.clone(),
    };
    let endpoint = kms.config().endpoint();
    let uid = match kms.client().and_then(|c| c.create_master(&labels)) {
        Ok(uid) => uid,
        Err(e) => {
            let why = format!("failed: {e}");
            let sid = Some(labels.store_id.as_str());
            kms.audit()
                .refusal("kms-create", None, sid, None, &why, Some(&endpoint));
            return Err(e.into());
        }
    };
    let made = KmsKey {
        kms,
        uid: &uid,
        detail: format!("uid {uid} at {endpoint}"),
        activated: std::cell::Cell::new(false),
        credential: std::cell::RefCell::new(None),
    };
    match build_kms_store(new, store_id, &made, want_credential) {
        Ok(desc) => Ok((desc, made.credential.into_inner())),
        // Nothing refers to the key: take it out of the KMS again.
        Err(e) => Err(super::versions::undo_kms_key(
            kms,
            &labels.store_id,
            &uid,
            made.activated.get(),
            e,
            &made.detail,
        )),
    }
}

/// A master key the KMS made for a new store, and what happened to it since.
struct KmsKey<'a> {
    kms: &'a super::kms::KmsProvider,
    uid: &'a str,
    detail: String,
    activated: std::cell::Cell<bool>,
    credential: std::cell::RefCell<Option<BackupCredential>>,
}

/// Build the store under the KMS's key `made`; the key is activated (audited) just before
/// the descriptor is written, and a backup credential made from the keys if wanted.
fn build_kms_store(
    new: &NewStore,
    store_id: [u8; 16],
    made: &KmsKey<'_>,
    want_credential: bool,
) -> Result<Descriptor, KeyError> {
    let (client, audit) = (made.kms.client()?, made.kms.audit());
    let key = client.get_master(made.uid)?;
    let key_id = crate::crypto::master_key_id(&key);
    let sid = hex::encode(store_id);
    audit.record(
        "kms-create",
        Some(&key_id),
        Some(&sid),
        "ok",
        Some(&made.detail),
    )?;
    let first = FirstMaster {
        store_id,
        key,
        uid: Some(made.uid.to_string()),
    };
    let save = Box::new(|desc: &Descriptor, master: &MasterKey| {
        if want_credential {
            let keys = store::unlock_keys(desc, master)?;
            *made.credential.borrow_mut() = Some(credential_of(desc, keys)?);
        }
        client.activate(made.uid)?;
        made.activated.set(true);
        let rec = desc.current_master();
        let sid = Some(desc.store_id.as_str());
        audit.record(
            "kms-activate",
            Some(&rec.key_id),
            sid,
            "ok",
            Some(&made.detail),
        )?;
        Ok(())
    });
    let seal = Box::new(
        |desc: &Descriptor, master: &MasterKey| match &new.recovery {
            Some((pk, pem)) => seal_recovery(desc, master, pk, pem, audit)
                .map(Some)
                .map_err(|e| e.into()),
            None => Ok(None),
        },
    );
    let mut o = new.options.clone();
    o.kms = Some(made.kms.config().endpoint());
    Ok(store::init(&new.root, &o, first, save, seal)?)
}
