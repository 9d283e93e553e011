//! A store on disk: its layout, its descriptor, and the unlocked key context that the mount
//! and fsck work with.
//!
//! Owns: `init` (create a store), `unlock` (master key -> private key and name key), batch
//! keys (made per writer session, RSA-wrapped, recorded durably before any file uses them),
//! and the batch-key cache for reading. Does not own: where the master key comes from (keys).

mod batch;
mod descriptor;
mod keys;
mod lock;
pub mod upgrade;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use batch::{
    ids_on_disk as batch_ids_on_disk, read_file as read_batch_file, write_file as write_batch_file,
};
pub use descriptor::{Descriptor, MasterKeyRecord, RecoveryRecord, DESCRIPTOR};
pub use keys::{check_for_rotation, credential_keys, reseal, rewrap, unlock_keys, StoreKeys};
pub use lock::{KeyRecordsLock, StoreLock};

use crate::catalog::{BatchRecord, Catalog, CatalogError, CatalogOp, CatalogWriter};
use crate::crypto::{
    self, BatchKey, CryptoError, FileKey, MasterKey, NameKey, PrivateKey, PublicKey, WriteKey,
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
    #[error(
        "batch {0} does not authenticate: it was not written by a holder of this store's keys"
    )]
    BatchForged(String),
    #[error(
        "coffer.store was changed or damaged: its {0} does not verify under its own master key; \
         nothing was acted on; restore coffer.store from a copy of the store"
    )]
    SealBroken(String),
    #[error(
        "this store is format 2, and the key this host holds for it carries no write key \
         (a backup credential made before the store's upgrade); ask for a new one with \
         `coffer keys backup-credential`"
    )]
    NoWriteKey,
    #[error(
        "coffer.store holds a recovery record for certificate {0}, and format 1 cannot show \
         that it is yours: give --recovery-cert with that certificate to keep it (it is sealed \
         afresh), or --drop-recovery; nothing was changed"
    )]
    RecoveryUnconfirmed(String),
    #[error(
        "store {0} is format 1, whose descriptor fields (its recovery record above all) nothing \
         authenticates; run `coffer upgrade` on it first; nothing was changed"
    )]
    NeedsUpgrade(String),
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
    let keys = StoreKeys {
        private: Some(private),
        names: NameKey::random(),
        writer: Some(WriteKey::random()),
    };
    let record = keys::seal_master_record(&store_id, 1, &public_der, &keys, &master, uid)?;
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
        seal: None,
        writer_seal: None,
    };
    let data = store.join(DATA);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .map_err(io(data.clone()))?;
    write_diriv(store, Path::new(DATA))?;
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
    if let Some(w) = &keys.writer {
        desc.seal(&master, w);
    }
    save_master(&desc, &master).map_err(StoreError::Keys)?;
    // The descriptor goes last: its presence marks a complete store.
    desc.save(store)?;
    Ok(desc)
}

/// Write a fresh random directory IV into the ciphertext directory `rel` below the store's
/// root (every component opened without following a symlink).
pub fn write_diriv(root: &Path, rel: &Path) -> Result<[u8; DIRIV_LEN], StoreError> {
    let mut iv = [0u8; DIRIV_LEN];
    crypto::random_bytes(&mut iv);
    let p = root.join(rel).join(DIRIV_NAME);
    let d = crate::within::open_dir(root, rel).map_err(|e| StoreError::Io(p.clone(), e))?;
    crate::within::write_atomic_at(&d, std::ffi::OsStr::new(DIRIV_NAME), &iv, 0o400)
        .map_err(|e| StoreError::Io(p, e))?;
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
    /// Format 2: tags new batch records and checks every recorded one.
    write_key: Option<WriteKey>,
    read_cache: Mutex<HashMap<[u8; 16], Arc<BatchKey>>>,
    writing: Mutex<Option<WriteBatch>>,
    writer: std::sync::OnceLock<CatalogWriter>,
}

struct WriteBatch {
    id: [u8; 16],
    key: Arc<BatchKey>,
    files: u64,
}

impl OpenStore {
    /// Open a store with its keys. The catalog must open cleanly.
    pub fn open(root: &Path, desc: Descriptor, keys: StoreKeys) -> Result<OpenStore, StoreError> {
        let store_id = desc.store_id_bytes()?;
        let catalog_path = root.join(CATALOG);
        let catalog = Catalog::open(&catalog_path, &store_id)
            .map_err(|e| StoreError::Catalog(catalog_path, e))?;
        Self::with_catalog(root, desc, keys, Arc::new(catalog))
    }

    pub fn with_catalog(
        root: &Path,
        desc: Descriptor,
        keys: StoreKeys,
        catalog: Arc<Catalog>,
    ) -> Result<OpenStore, StoreError> {
        let store_id = desc.store_id_bytes()?;
        let StoreKeys {
            private,
            names,
            writer,
        } = keys;
        // A format-2 store checks every batch under its write key; a format-1 one has none.
        let write_key = match (desc.authenticated(), writer) {
            (true, None) => return Err(StoreError::NoWriteKey),
            (true, w) => w,
            (false, _) => None,
        };
        let public = PublicKey::from_der(&desc.public_key_der()?)
            .map_err(|_| StoreError::Damaged("descriptor public key is malformed".into()))?;
        Ok(OpenStore {
            root: root.to_path_buf(),
            store_id,
            catalog,
            names: NameCodec::new(&names),
            public,
            private,
            write_key,
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
        let record = batch::seal_record(self.write_key.as_ref(), &self.store_id, &id, &wrapped);
        batch::write_file(&self.root, &id, &record)?;
        self.catalog
            .put_batch(
                &id,
                &BatchRecord {
                    wrapped: record,
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
        let record = batch::recorded(&self.catalog, &self.root, id)?;
        // The tag is checked before RSA ever sees the wrap: a host without the write key
        // can make no batch read, nor have chosen ciphertext decrypted.
        let wrapped = batch::open_record(self.write_key.as_ref(), &self.store_id, id, &record)?;
        let key = Arc::new(private.unwrap_batch_key(wrapped)?);
        self.read_cache
            .lock()
            .map_err(|_| StoreError::Damaged("cache lock poisoned".into()))?
            .insert(*id, key.clone());
        Ok(key)
    }

    /// Check batch `id`'s record (from the catalog or batches/) as a read would, without RSA.
    pub fn check_batch(&self, id: &[u8; 16]) -> Result<(), StoreError> {
        let record = batch::recorded(&self.catalog, &self.root, id)?;
        batch::open_record(self.write_key.as_ref(), &self.store_id, id, &record).map(|_| ())
    }

    /// Unwrap a file's key from its header.
    pub fn file_key(&self, header: &Header) -> Result<FileKey, StoreError> {
        let batch = self.batch_key(&header.batch_id)?;
        Ok(header.unwrap_key(&self.store_id, &batch)?)
    }
}
