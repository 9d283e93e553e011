//! A store on disk: its layout, its descriptor, and the unlocked key context that the mount
//! and fsck work with.
//!
//! Owns: `init` (create a store), `unlock` (master key -> private key and name key), batch
//! keys (made per writer session, RSA-wrapped, recorded durably before any file uses them),
//! and the batch-key cache for reading. Does not own: where the master key comes from (keys).

mod descriptor;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use descriptor::{Descriptor, MasterKeyRecord, RecoveryRecord, DESCRIPTOR};

use crate::catalog::{BatchRecord, Catalog, CatalogError, CatalogOp, CatalogWriter};
use crate::crypto::{
    self, BatchKey, CryptoError, FileKey, MasterKey, NameKey, PrivateKey, PublicKey, Secret32,
};
use crate::format::{Header, NameCodec, DIRIV_LEN, DIRIV_NAME};

pub const CATALOG: &str = "catalog";
pub const DATA: &str = "data";
pub const BATCHES: &str = "batches";
pub const LOCK: &str = "lock";
/// Files wrapped under one batch key before a new one is made.
const FILES_PER_BATCH: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not a coffer store (no coffer.store in it)")]
    NotAStore(PathBuf),
    #[error("{0} is not empty: coffer init needs an absent or empty directory")]
    NotEmpty(PathBuf),
    #[error("store is damaged: {0}")]
    Damaged(String),
    #[error("{0}")]
    Keys(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("catalog {0} is missing or damaged ({1}); run `coffer fsck --repair` on the store to rebuild it")]
    Catalog(PathBuf, CatalogError),
    #[error("the master key does not open this store (key id {0})")]
    WrongKey(String),
    #[error("cannot read: this mount holds no private key")]
    NoPrivateKey,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("store {0} is in use{1}; unmount it first")]
    Busy(PathBuf, String),
}

/// An exclusive lock on a store: held by a mount's daemon for its lifetime, and by fsck.
/// The lock file records the holder's pid and mount point (no secrets).
pub struct StoreLock {
    file: std::fs::File,
    /// The process that wrote the record, 0 if none. A mount's parent process hands the lock
    /// to the daemon it forks; only the daemon may clear the record.
    recorded_by: std::sync::atomic::AtomicU32,
}

impl StoreLock {
    pub fn acquire(root: &Path) -> Result<StoreLock, StoreError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let p = root.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .map_err(|e| StoreError::Io(p.clone(), e))?;
        // SAFETY: the fd is owned by `file` and open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = match Self::holder(root) {
                Some((pid, mnt)) if !mnt.is_empty() => format!(" (mounted at {mnt} by pid {pid})"),
                Some((pid, _)) => format!(" (by pid {pid})"),
                None => String::new(),
            };
            return Err(StoreError::Busy(root.to_path_buf(), holder));
        }
        Ok(StoreLock {
            file,
            recorded_by: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Record who holds the lock, where, and in which mode.
    pub fn record(&self, pid: u32, mountpoint: &str, mode: &str) {
        use std::io::{Seek, Write};
        let mut f = &self.file;
        let _ = f.set_len(0);
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = write!(f, "{pid}\n{mountpoint}\n{mode}\n");
        self.recorded_by
            .store(std::process::id(), std::sync::atomic::Ordering::SeqCst);
    }

    /// (pid, mount point) of the holder, if recorded and not yet released.
    pub fn holder(root: &Path) -> Option<(u32, String)> {
        Self::holder_mode(root).map(|(pid, mnt, _)| (pid, mnt))
    }

    /// (pid, mount point, mode) of the last holder, if recorded.
    pub fn holder_mode(root: &Path) -> Option<(u32, String, String)> {
        let s = std::fs::read_to_string(root.join(LOCK)).ok()?;
        let mut lines = s.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let mnt = lines.next().unwrap_or("").to_string();
        Some((pid, mnt, lines.next().unwrap_or("read-write").to_string()))
    }
}

/// A clean release empties the record, so a store at rest has the same bytes after every
/// mount (an auxiliary rsync copy then has nothing to resend). A killed holder leaves its
/// record behind, which helps whoever finds the stale lock.
impl Drop for StoreLock {
    fn drop(&mut self) {
        if *self.recorded_by.get_mut() == std::process::id() {
            let _ = self.file.set_len(0);
        }
    }
}

#[derive(Clone)]
pub struct InitOptions {
    pub rsa_bits: usize,
    pub block_shift: u8,
    pub policy: Option<String>,
    pub copy: Option<String>,
    pub provider: String,
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

fn priv_aad(store_id: &[u8; 16], version: u32, public_der: &[u8]) -> Vec<u8> {
    let mut a = b"coffer/v1/private-key".to_vec();
    a.extend_from_slice(store_id);
    a.extend_from_slice(&version.to_le_bytes());
    a.extend_from_slice(blake3::hash(public_der).as_bytes());
    a
}

fn name_aad(store_id: &[u8; 16], version: u32) -> Vec<u8> {
    let mut a = b"coffer/v1/name-key".to_vec();
    a.extend_from_slice(store_id);
    a.extend_from_slice(&version.to_le_bytes());
    a
}

fn priv_kek(master: &MasterKey) -> Secret32 {
    crypto::derive_subkey("coffer 2026-11 private key wrap", master.secret())
}

fn name_kek(master: &MasterKey) -> Secret32 {
    crypto::derive_subkey("coffer 2026-11 name key wrap", master.secret())
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
pub type SaveMaster<'a> = Box<dyn FnOnce(&Descriptor, &MasterKey) -> Result<(), String> + 'a>;
pub type SealRecovery<'a> =
    Box<dyn FnOnce(&Descriptor, &MasterKey) -> Result<Option<RecoveryRecord>, String> + 'a>;

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
    let names = NameKey::random();
    let record = seal_master_record(&store_id, 1, &public_der, &private, &names, &master, uid)?;
    let (format, fversion) = Descriptor::new_format();
    let desc = Descriptor {
        format,
        version: fversion,
        store_id: hex::encode(store_id),
        created: crate::unix_now(),
        block_shift: opts.block_shift,
        provider: opts.provider.clone(),
        kms: opts.kms.clone(),
        policy: opts.policy.clone(),
        copy: opts.copy.clone(),
        rsa_bits: opts.rsa_bits,
        public_key: descriptor::b64(&public_der),
        master_keys: vec![record],
        recovery: None,
    };
    let data = store.join(DATA);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .map_err(io(data.clone()))?;
    write_diriv(&data)?;
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
    desc.recovery = seal_recovery(&desc, &master).map_err(StoreError::Keys)?;
    save_master(&desc, &master).map_err(StoreError::Keys)?;
    // The descriptor goes last: its presence marks a complete store.
    desc.save(store)?;
    Ok(desc)
}

/// A descriptor record for master-key `version`: the private key and the name key sealed
/// under sub-keys of `master`, bound to the store, the version and the public key.
fn seal_master_record(
    store_id: &[u8; 16],
    version: u32,
    public_der: &[u8],
    private: &PrivateKey,
    names: &NameKey,
    master: &MasterKey,
    uid: Option<String>,
) -> Result<MasterKeyRecord, StoreError> {
    let der = private.to_der()?;
    Ok(MasterKeyRecord {
        version,
        key_id: crypto::master_key_id(master),
        uid,
        private_key: descriptor::b64(&crypto::seal_vec(
            &priv_kek(master),
            &priv_aad(store_id, version, public_der),
            &der,
        )),
        name_key: descriptor::b64(&crypto::seal_key(
            &name_kek(master),
            &name_aad(store_id, version),
            names.secret(),
        )),
    })
}

/// Rotation: a descriptor whose only master-key version is `version`, under `new_master`.
/// The private key and the name key are unsealed with `current` and sealed again; no data,
/// batch key or catalog record changes. The older records are dropped, so the store as it is
/// now opens only with the new key; older copies of the descriptor (an auxiliary copy made
/// before) still name the old version, which the provider keeps readable.
pub fn rewrap(
    desc: &Descriptor,
    current: &MasterKey,
    new_master: &MasterKey,
    version: u32,
    uid: Option<String>,
) -> Result<Descriptor, StoreError> {
    if version <= desc.current_master().version {
        return Err(StoreError::Keys(format!(
            "master-key version {version} is not newer than the store's version {}",
            desc.current_master().version
        )));
    }
    let (private, names) = unlock_keys(desc, current)?;
    let store_id = desc.store_id_bytes()?;
    let public_der = desc.public_key_der()?;
    let record = seal_master_record(
        &store_id,
        version,
        &public_der,
        &private,
        &names,
        new_master,
        uid,
    )?;
    let mut out = desc.clone();
    out.master_keys = vec![record];
    // Prove the new record opens before anyone saves it.
    unlock_keys(&out, new_master)?;
    Ok(out)
}

/// An exclusive lock on a store's key records (its descriptor) for a rotation or sync: flock
/// on the store directory itself, so no file is added to the store.
pub struct KeyRecordsLock {
    _dir: std::fs::File,
}

impl KeyRecordsLock {
    pub fn acquire(root: &Path) -> Result<KeyRecordsLock, StoreError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(root).map_err(|e| StoreError::Io(root.to_path_buf(), e))?;
        // SAFETY: the fd is owned by `f` and open.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Busy(
                root.to_path_buf(),
                " (another key rotation or sync is running)".into(),
            ));
        }
        Ok(KeyRecordsLock { _dir: f })
    }
}

/// Write a fresh random directory IV into a new ciphertext directory.
pub fn write_diriv(dir: &Path) -> Result<[u8; DIRIV_LEN], StoreError> {
    let mut iv = [0u8; DIRIV_LEN];
    crypto::random_bytes(&mut iv);
    let p = dir.join(DIRIV_NAME);
    crate::atomic_write(&p, &iv, 0o400).map_err(|e| StoreError::Io(p, e))?;
    Ok(iv)
}

/// What a mount or fsck works with once the keys are resolved.
pub struct OpenStore {
    pub root: PathBuf,
    pub desc: Descriptor,
    pub store_id: [u8; 16],
    pub catalog: Arc<Catalog>,
    pub names: NameCodec,
    pub public: PublicKey,
    private: Option<PrivateKey>,
    read_cache: Mutex<HashMap<[u8; 16], Arc<BatchKey>>>,
    writing: Mutex<Option<WriteBatch>>,
    writer: std::sync::OnceLock<CatalogWriter>,
}

struct WriteBatch {
    id: [u8; 16],
    key: Arc<BatchKey>,
    files: u64,
}

/// Unwrap the private key and name key of `desc` with `master`.
pub fn unlock_keys(
    desc: &Descriptor,
    master: &MasterKey,
) -> Result<(PrivateKey, NameKey), StoreError> {
    let store_id = desc.store_id_bytes()?;
    let public_der = desc.public_key_der()?;
    let key_id = crypto::master_key_id(master);
    let rec = desc
        .master_keys
        .iter()
        .find(|m| m.key_id == key_id)
        .ok_or_else(|| StoreError::WrongKey(key_id.clone()))?;
    // The record names this very key (its id is a hash of the key), so a seal that does not
    // open means the descriptor itself was changed, not that the key is wrong.
    let damaged = |what: &str| {
        StoreError::Damaged(format!(
            "the descriptor's sealed {what} (master-key version {}) does not open with its own key \
             {key_id}: coffer.store was changed or damaged; restore it from a copy of the store",
            rec.version
        ))
    };
    let sealed = descriptor::unb64(&rec.private_key).map_err(|_| damaged("private key"))?;
    let der = zeroize::Zeroizing::new(
        crypto::open_vec(
            &priv_kek(master),
            &priv_aad(&store_id, rec.version, &public_der),
            &sealed,
        )
        .map_err(|_| damaged("private key"))?,
    );
    let private = PrivateKey::from_der(&der)?;
    let public = PublicKey::from_der(&public_der)
        .map_err(|_| StoreError::Damaged("descriptor public key is malformed".into()))?;
    if !private.public().same_as(&public) {
        return Err(StoreError::Damaged(
            "descriptor public key does not match the private key".into(),
        ));
    }
    let names = crypto::open_key(
        &name_kek(master),
        &name_aad(&store_id, rec.version),
        &descriptor::unb64(&rec.name_key).map_err(|_| damaged("name key"))?,
    )
    .map(NameKey::from_secret)
    .map_err(|_| damaged("name key"))?;
    Ok((private, names))
}

impl OpenStore {
    /// Open a store with its keys. The catalog must open cleanly.
    pub fn open(
        root: &Path,
        desc: Descriptor,
        private: Option<PrivateKey>,
        names: NameKey,
    ) -> Result<OpenStore, StoreError> {
        let store_id = desc.store_id_bytes()?;
        let catalog_path = root.join(CATALOG);
        let catalog = Catalog::open(&catalog_path, &store_id)
            .map_err(|e| StoreError::Catalog(catalog_path, e))?;
        Self::with_catalog(root, desc, private, names, Arc::new(catalog))
    }

    pub fn with_catalog(
        root: &Path,
        desc: Descriptor,
        private: Option<PrivateKey>,
        names: NameKey,
        catalog: Arc<Catalog>,
    ) -> Result<OpenStore, StoreError> {
        let store_id = desc.store_id_bytes()?;
        let public = PublicKey::from_der(&desc.public_key_der()?)
            .map_err(|_| StoreError::Damaged("descriptor public key is malformed".into()))?;
        Ok(OpenStore {
            root: root.to_path_buf(),
            store_id,
            catalog,
            names: NameCodec::new(&names),
            public,
            private,
            desc,
            read_cache: Mutex::new(HashMap::new()),
            writing: Mutex::new(None),
            writer: std::sync::OnceLock::new(),
        })
    }

    /// Move catalog updates to a background thread (the mount does this; fsck does not).
    pub fn start_catalog_writer(&self) -> std::io::Result<()> {
        let w = CatalogWriter::spawn(self.catalog.clone())?;
        let _ = self.writer.set(w);
        Ok(())
    }

    /// Queue a catalog update, or apply it at once when no writer thread runs.
    pub fn catalog_op(&self, op: CatalogOp) {
        match self.writer.get() {
            Some(w) => w.send(op),
            None => {
                if let Err(e) = self.catalog.apply(&[op], true) {
                    tracing::error!("catalog update failed: {e}");
                }
            }
        }
    }

    /// Wait until every queued catalog update is durable; else the errno of the failure.
    pub fn catalog_sync(&self) -> Result<(), i32> {
        self.writer.get().map(|w| w.sync()).unwrap_or(Ok(()))
    }

    pub fn catalog_close(&self) -> Result<(), i32> {
        self.writer.get().map(|w| w.close()).unwrap_or(Ok(()))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join(DATA)
    }

    pub fn block_shift(&self) -> u8 {
        self.desc.block_shift
    }

    /// A header and key for a new file, wrapped under this session's batch key.
    pub fn new_file(&self) -> Result<(Header, FileKey), StoreError> {
        let (batch_id, batch) = self.write_batch()?;
        let key = FileKey::random();
        let header = Header::new(&self.store_id, self.block_shift(), batch_id, &batch, &key);
        Ok((header, key))
    }

    /// The bytes of a new, empty file: a header and an empty final block.
    pub fn empty_file(&self) -> Result<(Header, Vec<u8>), StoreError> {
        let (header, key) = self.new_file()?;
        let mut buf = vec![0u8; crate::format::HEADER_LEN + crate::format::BLOCK_OVERHEAD];
        buf[..crate::format::HEADER_LEN].copy_from_slice(&header.encode());
        crate::format::seal_block(
            &crypto::BlockCipher::new(key.secret()),
            &header.file_id,
            0,
            true,
            &[],
            &mut buf[crate::format::HEADER_LEN..],
        );
        Ok((header, buf))
    }

    fn write_batch(&self) -> Result<([u8; 16], Arc<BatchKey>), StoreError> {
        let mut w = self
            .writing
            .lock()
            .map_err(|_| StoreError::Damaged("batch lock poisoned".into()))?;
        if let Some(b) = w.as_mut() {
            if b.files < FILES_PER_BATCH {
                b.files += 1;
                return Ok((b.id, b.key.clone()));
            }
        }
        // One RSA wrap per batch; the record is durable (file and catalog) before any file
        // header refers to it.
        let key = Arc::new(BatchKey::random());
        let id = crypto::random_id();
        let wrapped = self.public.wrap_batch_key(&key)?;
        let p = self.root.join(BATCHES).join(hex::encode(id));
        crate::atomic_write(&p, &wrapped, 0o600).map_err(|e| StoreError::Io(p, e))?;
        self.catalog
            .put_batch(
                &id,
                &BatchRecord {
                    wrapped,
                    created: crate::unix_now(),
                },
            )
            .map_err(|e| StoreError::Catalog(self.root.join(CATALOG), e))?;
        self.read_cache
            .lock()
            .map_err(|_| StoreError::Damaged("cache lock poisoned".into()))?
            .insert(id, key.clone());
        *w = Some(WriteBatch {
            id,
            key: key.clone(),
            files: 1,
        });
        Ok((id, key))
    }

    /// The batch key `id`, from the cache, else unwrapped with RSA (once per batch).
    pub fn batch_key(&self, id: &[u8; 16]) -> Result<Arc<BatchKey>, StoreError> {
        if let Some(k) = self
            .read_cache
            .lock()
            .map_err(|_| StoreError::Damaged("cache lock poisoned".into()))?
            .get(id)
        {
            return Ok(k.clone());
        }
        let private = self.private.as_ref().ok_or(StoreError::NoPrivateKey)?;
        let wrapped = match self.catalog.batch(id) {
            Ok(Some(rec)) => rec.wrapped,
            // The batches/ directory keeps a copy of every batch record.
            _ => {
                let p = self.root.join(BATCHES).join(hex::encode(id));
                std::fs::read(&p).map_err(|e| StoreError::Io(p, e))?
            }
        };
        let key = Arc::new(private.unwrap_batch_key(&wrapped)?);
        self.read_cache
            .lock()
            .map_err(|_| StoreError::Damaged("cache lock poisoned".into()))?
            .insert(*id, key.clone());
        Ok(key)
    }

    /// Unwrap a file's key from its header.
    pub fn file_key(&self, header: &Header) -> Result<FileKey, StoreError> {
        let batch = self.batch_key(&header.batch_id)?;
        Ok(header.unwrap_key(&self.store_id, &batch)?)
    }
}
