//! Creating a store: an absent or empty directory becomes a store with its key pair, name
//! key and write key sealed under the first master key, its data and batches directories and
//! an empty catalog; the descriptor is written last, since its presence marks a complete
//! store. If anything fails, nothing is left behind.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::descriptor::{self, Descriptor, KeyHome, RecoveryRecord, DESCRIPTOR};
use super::keys::{self, StoreKeys};
use super::{StoreError, BATCHES, CATALOG, DATA, LOCK};
use crate::catalog::Catalog;
use crate::crypto::{self, MasterKey, NameKey, PrivateKey, WriteKey};
use crate::format::inode::{InodeRecord, RecordCodec, RecordKind, RECORD_USER};
use crate::format::{DIRIV_LEN, DIRIV_NAME};

#[derive(Clone)]
pub struct InitOptions {
    pub rsa_bits: usize,
    pub block_shift: u8,
    pub policy: Option<String>,
    pub copy: Option<String>,
    pub provider: KeyHome,
    /// The KMS (host:port) that holds the master key, for a kms store.
    pub kms: Option<String>,
}

/// The first master key of a new store, made by its provider before the store exists: a
/// KMS labels its key with the store id, so the id is chosen first.
pub struct FirstMaster {
    pub store_id: [u8; 16],
    pub key: MasterKey,
    /// The provider's reference to the key (a KMS UID).
    pub uid: Option<String>,
}

impl FirstMaster {
    /// A random store id and master key (the local keystore's way).
    pub fn random() -> FirstMaster {
        FirstMaster {
            store_id: crypto::random_id(),
            key: MasterKey::random(),
            uid: None,
        }
    }
}

/// Check STORE is absent or an empty directory, and create it (0700).
fn prepare_dir(store: &Path) -> Result<bool, StoreError> {
    match std::fs::read_dir(store) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(StoreError::NotEmpty(store.to_path_buf()));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(store)
                .map_err(|e| StoreError::Io(store.to_path_buf(), e))?;
            Ok(true)
        }
        Err(e) => Err(StoreError::Io(store.to_path_buf(), e)),
    }
}

/// What `init` asks of its caller about the new master key, before the descriptor (whose
/// presence marks a complete store) is written.
pub type CallerError = Box<dyn std::error::Error + Send + Sync>;
pub type SaveMaster<'a> = Box<dyn FnOnce(&Descriptor, &MasterKey) -> Result<(), CallerError> + 'a>;
pub type SealRecovery<'a> =
    Box<dyn FnOnce(&Descriptor, &MasterKey) -> Result<Option<RecoveryRecord>, CallerError> + 'a>;

/// Create a store. `save_master` keeps the new master key (in a keystore); `seal_recovery`
/// may seal it to a recovery certificate. If anything fails, nothing is left behind.
pub fn init(
    store: &Path,
    opts: &InitOptions,
    first: FirstMaster,
    save_master: SaveMaster<'_>,
    seal_recovery: SealRecovery<'_>,
) -> Result<Descriptor, StoreError> {
    let created_dir = prepare_dir(store)?;
    let result = init_inner(store, opts, first, save_master, seal_recovery);
    if result.is_err() {
        // Leave no half-made store: remove what we made, and the directory if we made it.
        for name in [DESCRIPTOR, CATALOG, DATA, BATCHES, LOCK] {
            let p = store.join(name);
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        if created_dir {
            let _ = std::fs::remove_dir(store);
        }
    }
    result
}

fn init_inner(
    store: &Path,
    opts: &InitOptions,
    first: FirstMaster,
    save_master: SaveMaster<'_>,
    seal_recovery: SealRecovery<'_>,
) -> Result<Descriptor, StoreError> {
    let io = |p: PathBuf| move |e| StoreError::Io(p, e);
    let FirstMaster {
        store_id,
        key: master,
        uid,
    } = first;
    let private = PrivateKey::generate(opts.rsa_bits)?;
    let public_der = private.public().to_der()?;
    let keys = StoreKeys {
        private: Some(private),
        names: NameKey::random(),
        writer: Some(WriteKey::random()),
    };
    let record = keys::seal_master_record(
        crate::format::STORE_VERSION,
        &store_id,
        1,
        &public_der,
        &keys,
        &master,
        uid,
    )?;
    let (format, fversion) = Descriptor::new_format();
    let desc = Descriptor {
        format,
        version: fversion,
        store_id: hex::encode(store_id),
        created: crate::unix_now(),
        block_shift: opts.block_shift,
        provider: opts.provider,
        kms: opts.kms.clone(),
        policy: opts.policy.clone(),
        copy: opts.copy.clone(),
        rsa_bits: opts.rsa_bits,
        public_key: descriptor::b64(&public_der),
        master_keys: vec![record],
        recovery: None,
        seal: None,
        writer_seal: None,
    };
    let data = store.join(DATA);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .map_err(io(data.clone()))?;
    let iv = write_diriv(store, Path::new(DATA))?;
    if let Some(w) = &keys.writer {
        write_root_record(store, &RecordCodec::new(w, store_id), iv, None)?;
    }
    let batches = store.join(BATCHES);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&batches)
        .map_err(io(batches.clone()))?;
    drop(
        Catalog::create(&store.join(CATALOG), &store_id)
            .map_err(|e| StoreError::Catalog(store.join(CATALOG), e))?,
    );
    let mut desc = desc;
    desc.recovery = seal_recovery(&desc, &master).map_err(StoreError::Caller)?;
    if let Some(w) = &keys.writer {
        desc.seal(&master, w);
    }
    save_master(&desc, &master).map_err(StoreError::Caller)?;
    // The descriptor goes last: its presence marks a complete store.
    desc.save(store)?;
    Ok(desc)
}

/// Seal the root directory's record (format 3) onto `data/`: its IV, the root's place, and
/// the mode and owner of `found` (a stat of it, for an upgrade, which vouches for what it
/// finds), or 0700 and this process's user and group (a new store).
pub fn write_root_record(
    root: &Path,
    codec: &RecordCodec,
    iv: [u8; DIRIV_LEN],
    found: Option<(&libc::stat, Vec<[u8; 16]>)>,
) -> Result<(), StoreError> {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (me, group) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (mode, uid, gid, xattrs) = match &found {
        Some((st, x)) => (st.st_mode, st.st_uid, st.st_gid, x.clone()),
        None => (0o700, me, group, Vec::new()),
    };
    let rec = InodeRecord {
        id: iv,
        kind: RecordKind::Dir,
        mode: (mode & 0o7777) as u16,
        uid,
        gid,
        rdev: 0,
        target: None,
        places: vec![codec.root_place()],
        xattrs,
        adopted: found.is_some(),
    };
    let p = root.join(DATA);
    let sealed = codec
        .seal(&rec)
        .map_err(|e| StoreError::Damaged(format!("{}: {e}", p.display())))?;
    let d =
        crate::within::open_dir(root, Path::new(DATA)).map_err(|e| StoreError::Io(p.clone(), e))?;
    crate::within::set_xattr_fd(&d, RECORD_USER, &sealed, 0).map_err(|e| StoreError::Io(p, e))
}

/// Write a fresh random directory IV into the ciphertext directory `rel` below the store's
/// root (every component opened without following a symlink).
pub fn write_diriv(root: &Path, rel: &Path) -> Result<[u8; DIRIV_LEN], StoreError> {
    let mut iv = [0u8; DIRIV_LEN];
    crypto::random_bytes(&mut iv);
    write_diriv_as(root, rel, iv)?;
    Ok(iv)
}

/// Write the directory IV `iv` (a format-3 directory's, from its record) into `rel`.
pub fn write_diriv_as(root: &Path, rel: &Path, iv: [u8; DIRIV_LEN]) -> Result<(), StoreError> {
    let p = root.join(rel).join(DIRIV_NAME);
    let d = crate::within::open_dir(root, rel).map_err(|e| StoreError::Io(p.clone(), e))?;
    crate::within::write_atomic_at(&d, std::ffi::OsStr::new(DIRIV_NAME), &iv, 0o400)
        .map_err(|e| StoreError::Io(p, e))
}
