//! The store's key records in its descriptor: the private key, the name key and (format 2)
//! the write key, each sealed under a sub-key of a master-key version; unlocking them, and
//! re-sealing them under a new master key for a rotation.
//!
//! From format 3 on, every seal's associated data names the format, so no code path of an
//! earlier format opens them: a descriptor rewritten to say an earlier format does not
//! unlock, and is named for what it is (`StoreError::Downgraded`).

use super::descriptor::{self, Descriptor, MasterKeyRecord};
use super::StoreError;
use crate::crypto::{self, MasterKey, NameKey, PrivateKey, Secret32, WriteKey};
use crate::format::{RECORDS_VERSION, STORE_VERSION};

/// What a store is opened with.
pub struct StoreKeys {
    /// None on a backup-only host: it can write new files and read none of the old ones.
    pub private: Option<PrivateKey>,
    pub names: NameKey,
    /// The write key of a format-2 store; None for a format-1 store, which has none.
    pub writer: Option<WriteKey>,
}

/// The associated data of a key seal of store format `format`: format 1 and 2 seals carry
/// the labels they always had; later ones a label of their own and the format itself.
fn seal_aad(format: u32, label: &str, store_id: &[u8; 16], version: u32) -> Vec<u8> {
    let mut a = match format {
        f if f >= RECORDS_VERSION => format!("coffer/v3/{label}").into_bytes(),
        _ if label == "write-key" => b"coffer/v2/write-key".to_vec(),
        _ => format!("coffer/v1/{label}").into_bytes(),
    };
    a.extend_from_slice(store_id);
    a.extend_from_slice(&version.to_le_bytes());
    if format >= RECORDS_VERSION {
        a.extend_from_slice(&format.to_le_bytes());
    }
    a
}

fn priv_aad(format: u32, store_id: &[u8; 16], version: u32, public_der: &[u8]) -> Vec<u8> {
    let mut a = seal_aad(format, "private-key", store_id, version);
    a.extend_from_slice(blake3::hash(public_der).as_bytes());
    a
}

fn kek(context: &'static str, master: &MasterKey) -> Secret32 {
    crypto::derive_subkey(context, master.secret())
}

const PRIV_KEK: &str = "coffer 2026-11 private key wrap";
const NAME_KEK: &str = "coffer 2026-11 name key wrap";
const WRITE_KEK: &str = "coffer 2026-12 write key wrap";

/// A descriptor record for master-key `version` of a store of format `format`: the private
/// key, the name key and the write key (if any) sealed under sub-keys of `master`, bound to
/// the store, the version, the public key and (format 3 on) the format.
pub(super) fn seal_master_record(
    format: u32,
    store_id: &[u8; 16],
    version: u32,
    public_der: &[u8],
    keys: &StoreKeys,
    master: &MasterKey,
    uid: Option<String>,
) -> Result<MasterKeyRecord, StoreError> {
    let private = keys.private.as_ref().ok_or(StoreError::NoPrivateKey)?;
    let der = private.to_der()?;
    let seal = |ctx, aad: &[u8], k: &Secret32| {
        descriptor::b64(&crypto::seal_key(&kek(ctx, master), aad, k))
    };
    Ok(MasterKeyRecord {
        version,
        key_id: crypto::master_key_id(master),
        uid,
        private_key: descriptor::b64(&crypto::seal_vec(
            &kek(PRIV_KEK, master),
            &priv_aad(format, store_id, version, public_der),
            &der,
        )),
        name_key: seal(
            NAME_KEK,
            &seal_aad(format, "name-key", store_id, version),
            keys.names.secret(),
        ),
        write_key: keys.writer.as_ref().map(|w| {
            seal(
                WRITE_KEK,
                &seal_aad(format, "write-key", store_id, version),
                w.secret(),
            )
        }),
    })
}

/// The descriptor's record for `master` (found by the key's id), and that id.
fn record_of<'a>(
    desc: &'a Descriptor,
    master: &MasterKey,
) -> Result<(&'a MasterKeyRecord, String), StoreError> {
    let key_id = crypto::master_key_id(master);
    let rec = desc
        .master_keys
        .iter()
        .find(|m| m.key_id == key_id)
        .ok_or_else(|| StoreError::WrongKey(key_id.clone()))?;
    Ok((rec, key_id))
}

/// The write key sealed in `rec`, which a format-2 record must hold.
fn open_write_key(
    format: u32,
    store_id: &[u8; 16],
    rec: &MasterKeyRecord,
    master: &MasterKey,
) -> Result<WriteKey, StoreError> {
    let broken =
        |what: &str| StoreError::SealBroken(format!("{what} (master-key version {})", rec.version));
    let sealed = rec
        .write_key
        .as_deref()
        .ok_or_else(|| broken("write key, which is missing"))?;
    let bytes = descriptor::unb64(sealed).map_err(|_| broken("sealed write key"))?;
    crypto::open_key(
        &kek(WRITE_KEK, master),
        &seal_aad(format, "write-key", store_id, rec.version),
        &bytes,
    )
    .map(WriteKey::from_secret)
    .map_err(|_| broken("sealed write key"))
}

/// Unwrap the private key, the name key and the write key of `desc` with `master`; for a
/// format-2 store, also check the descriptor's seals, so that no field a host without the key
/// changed (the recovery record, the block size, a label, a KMS UID) is ever acted on. A
/// descriptor that claims an earlier format than its seals were made for is refused as the
/// downgrade it is.
pub fn unlock_keys(desc: &Descriptor, master: &MasterKey) -> Result<StoreKeys, StoreError> {
    let store_id = desc.store_id_bytes()?;
    let public_der = desc.public_key_der()?;
    let (rec, _) = record_of(desc, master)?;
    let format = desc.version;
    // The record names this very key (its id is a hash of the key), so a seal that does not
    // open means the descriptor itself was changed, not that the key is wrong.
    let damaged =
        |what: &str| StoreError::SealBroken(format!("{what} (master-key version {})", rec.version));
    let open = |ctx, aad: &[u8], sealed: &str, what: &str| {
        let bytes = descriptor::unb64(sealed).map_err(|_| damaged(what))?;
        crypto::open_key(&kek(ctx, master), aad, &bytes).map_err(|_| damaged(what))
    };
    let sealed = descriptor::unb64(&rec.private_key).map_err(|_| damaged("sealed private key"))?;
    let open_private = |f: u32| {
        crypto::open_vec(
            &kek(PRIV_KEK, master),
            &priv_aad(f, &store_id, rec.version, &public_der),
            &sealed,
        )
        .map(zeroize::Zeroizing::new)
    };
    let der = match open_private(format) {
        Ok(der) => der,
        Err(_) => {
            // Sealed for a later format than the descriptor says: it was rewritten to take
            // the store back to a format whose checks are fewer.
            let later = (format + 1).max(RECORDS_VERSION)..=STORE_VERSION;
            if let Some(was) = later.into_iter().find(|f| open_private(*f).is_ok()) {
                return Err(StoreError::Downgraded { says: format, was });
            }
            return Err(damaged("sealed private key"));
        }
    };
    let private = PrivateKey::from_der(&der)?;
    let public = crypto::PublicKey::from_der(&public_der)
        .map_err(|_| StoreError::Damaged("descriptor public key is malformed".into()))?;
    if !private.public().same_as(&public) {
        return Err(StoreError::Damaged(
            "descriptor public key does not match the private key".into(),
        ));
    }
    let names = NameKey::from_secret(open(
        NAME_KEK,
        &seal_aad(format, "name-key", &store_id, rec.version),
        &rec.name_key,
        "sealed name key",
    )?);
    let writer = desc
        .authenticated()
        .then(|| open_write_key(format, &store_id, rec, master))
        .transpose()?;
    if let Some(w) = &writer {
        if !desc.verify_master_seal(master) || !desc.verify_writer_seal(w) {
            return Err(damaged("seal over its fields"));
        }
    }
    Ok(StoreKeys {
        private: Some(private),
        names,
        writer,
    })
}

/// The keys of a backup-only host, from its credential. A format-2 descriptor must carry a
/// writer seal that holds under the credential's write key: a backup host acts on the block
/// size and the public key, so it believes them only once they are shown to be the key
/// holders'.
pub fn credential_keys(
    desc: &Descriptor,
    names: NameKey,
    writer: Option<WriteKey>,
) -> Result<StoreKeys, StoreError> {
    // A credential with a write key was made for format 2 or later: a descriptor that says
    // format 1 (which has none to check) was put there to be believed unchecked.
    if writer.is_some() && !desc.authenticated() {
        return Err(StoreError::Downgraded {
            says: desc.version,
            was: 2,
        });
    }
    if !desc.authenticated() {
        return Ok(StoreKeys {
            private: None,
            names,
            writer: None,
        });
    }
    let w = writer.ok_or(StoreError::NoWriteKey)?;
    if !desc.verify_writer_seal(&w) {
        return Err(StoreError::SealBroken(
            "seal over its fields (checked with the backup credential's write key)".into(),
        ));
    }
    Ok(StoreKeys {
        private: None,
        names,
        writer: Some(w),
    })
}

/// What a rotation or sync checks before it makes or adopts anything (a new KMS key, say):
/// the store is format 2, and its descriptor verifies under the current master key, so that
/// a refused rotation changes nothing anywhere.
pub fn check_for_rotation(desc: &Descriptor, current: &MasterKey) -> Result<(), StoreError> {
    // Unlocked first: a descriptor rewritten to say format 1 is refused as the downgrade it
    // is, not asked to be upgraded.
    let keys = unlock_keys(desc, current)?;
    if !desc.authenticated() {
        return Err(StoreError::NeedsUpgrade(desc.store_id.clone()));
    }
    drop(keys);
    Ok(())
}

/// Rotation: a descriptor whose only master-key version is `version`, under `new_master`.
/// The private key, the name key and the write key are unsealed with `current` and sealed
/// again; no data, batch key or catalog record changes. The older records are dropped, so the
/// store as it is now opens only with the new key; older copies of the descriptor (an
/// auxiliary copy made before) still name the old version, which the provider keeps readable.
/// The caller may change the recovery record, then seals the result with [`reseal`].
pub fn rewrap(
    desc: &Descriptor,
    current: &MasterKey,
    new_master: &MasterKey,
    version: u32,
    uid: Option<String>,
) -> Result<Descriptor, StoreError> {
    check_for_rotation(desc, current)?;
    if version <= desc.current_master().version {
        return Err(StoreError::NotNewer {
            version,
            current: desc.current_master().version,
        });
    }
    let keys = unlock_keys(desc, current)?;
    let store_id = desc.store_id_bytes()?;
    let public_der = desc.public_key_der()?;
    let record = seal_master_record(
        desc.version,
        &store_id,
        version,
        &public_der,
        &keys,
        new_master,
        uid,
    )?;
    let mut out = desc.clone();
    out.master_keys = vec![record];
    if let Some(w) = &keys.writer {
        out.seal(new_master, w);
    }
    // Prove the new record opens before anyone saves it.
    unlock_keys(&out, new_master)?;
    Ok(out)
}

/// Seal a descriptor that this process itself changed after [`rewrap`] (a recovery record
/// re-made for the new key) under `master`, whose write key it holds.
pub fn reseal(desc: &mut Descriptor, master: &MasterKey) -> Result<(), StoreError> {
    if !desc.authenticated() {
        return Ok(());
    }
    let store_id = desc.store_id_bytes()?;
    let (rec, _) = record_of(desc, master)?;
    let w = open_write_key(desc.version, &store_id, rec, master)?;
    desc.seal(master, &w);
    Ok(())
}
