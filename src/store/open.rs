//! An open store: what a mount or fsck works with once the keys are resolved. The catalog,
//! the name codec, and the batch keys: one per writer session (made and RSA-wrapped once,
//! recorded durably before any file uses it) and a cache of those unwrapped for reading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{batch, Descriptor, StoreError, StoreKeys, CATALOG, DATA};
use crate::catalog::{BatchRecord, Catalog, CatalogOp, CatalogWriter, CommitFailure};
use crate::crypto::{self, BatchKey, FileKey, PrivateKey, PublicKey, WriteKey};
use crate::format::inode::{InodeRecord, RecordCodec, RecordKind, RECORD_MAX, RECORD_USER};
use crate::format::xattr::XattrCodec;
use crate::format::{Header, NameCodec};

/// Files wrapped under one batch key before a new one is made.
const FILES_PER_BATCH: u64 = 100_000;

/// What a mount or fsck works with once the keys are resolved.
pub struct OpenStore {
    pub root: PathBuf,
    pub desc: Descriptor,
    pub store_id: [u8; 16],
    pub catalog: Arc<Catalog>,
    pub names: NameCodec,
    /// Seals and opens extended attributes (under the name key, like names).
    pub xattrs: XattrCodec,
    pub public: PublicKey,
    private: Option<PrivateKey>,
    /// Format 2: tags new batch records and checks every recorded one.
    write_key: Option<WriteKey>,
    /// Format 3: seals and opens every inode's record (under the write key).
    records: Option<RecordCodec>,
    read_cache: Mutex<HashMap<[u8; 16], Arc<BatchKey>>>,
    writing: Mutex<Option<WriteBatch>>,
    writer: std::sync::OnceLock<CatalogWriter>,
    /// Batch keys unwrapped with the private key (RSA) since the store was opened.
    unwraps: std::sync::atomic::AtomicU64,
    /// The catalog could not be flushed at the end: it may be behind the data.
    behind: std::sync::atomic::AtomicBool,
}

struct WriteBatch {
    id: [u8; 16],
    key: Arc<BatchKey>,
    files: u64,
}

impl OpenStore {
    /// Open a store with its keys. The catalog must open cleanly, and in format 3 the root
    /// directory's record must open.
    pub fn open(root: &Path, desc: Descriptor, keys: StoreKeys) -> Result<OpenStore, StoreError> {
        let store_id = desc.store_id_bytes()?;
        let catalog_path = root.join(CATALOG);
        let catalog = Catalog::open(&catalog_path, &store_id)
            .map_err(|e| StoreError::Catalog(catalog_path, e))?;
        let store = Self::with_catalog(root, desc, keys, Arc::new(catalog))?;
        store.root_record()?;
        Ok(store)
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
        let records = match (desc.has_records(), &write_key) {
            (true, Some(w)) => Some(RecordCodec::new(w, store_id)),
            _ => None,
        };
        Ok(OpenStore {
            root: root.to_path_buf(),
            store_id,
            catalog,
            names: NameCodec::new(&names),
            xattrs: XattrCodec::new(&names),
            public,
            private,
            write_key,
            records,
            desc,
            read_cache: Mutex::new(HashMap::new()),
            writing: Mutex::new(None),
            writer: std::sync::OnceLock::new(),
            unwraps: Default::default(),
            behind: Default::default(),
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

    /// Wait until every queued catalog update is durable; else why not.
    pub fn catalog_sync(&self) -> Result<(), CommitFailure> {
        self.writer.get().map(|w| w.sync()).unwrap_or(Ok(()))
    }

    /// Say that the catalog could not be flushed (at unmount), for whoever ends the run.
    pub fn mark_catalog_behind(&self) {
        self.behind.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the catalog may be behind the data (mark_catalog_behind).
    pub fn catalog_behind(&self) -> bool {
        self.behind.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn catalog_close(&self) -> Result<(), CommitFailure> {
        self.writer.get().map(|w| w.close()).unwrap_or(Ok(()))
    }

    /// The inode records' codec: Some in a format-3 store, whose modes, owners, types, links
    /// and places come from them; None before, where the backing inode's are taken as found.
    pub fn records(&self) -> Option<&RecordCodec> {
        self.records.as_ref()
    }

    /// The root directory's record (format 3; None before): it must open at the root's place
    /// and be a directory's, else nothing in the store can be believed.
    pub fn root_record(&self) -> Result<Option<InodeRecord>, StoreError> {
        let Some(codec) = &self.records else {
            return Ok(None);
        };
        let data = self.data_dir();
        let why = |w: String| StoreError::RootRecord(data.clone(), w);
        let fd =
            crate::within::open_dir(&self.root, Path::new(DATA)).map_err(|e| why(e.to_string()))?;
        let sealed = crate::within::xattr_fd(&fd, RECORD_USER, RECORD_MAX)
            .map_err(|e| why(e.to_string()))?
            .ok_or_else(|| why("it has none".into()))?;
        let rec = codec
            .open(&sealed, &codec.root_place())
            .map_err(|e| why(e.to_string()))?;
        if rec.kind != RecordKind::Dir {
            return Err(why("it is not a directory's".into()));
        }
        Ok(Some(rec))
    }

    /// Whether this host holds the private key: old files can be read (not backup-only).
    pub fn can_read(&self) -> bool {
        self.private.is_some()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join(DATA)
    }

    pub fn block_shift(&self) -> u8 {
        self.desc.block_shift
    }

    /// A header and key for a new file, wrapped under this session's batch key.
    pub fn new_file(&self) -> Result<(Header, FileKey), StoreError> {
        self.new_file_as(crate::crypto::random_id())
    }

    /// The same, with the file id `id` (a format-3 file started afresh keeps its id, to
    /// which its record and attributes are bound).
    pub fn new_file_as(&self, id: [u8; 16]) -> Result<(Header, FileKey), StoreError> {
        let (batch_id, batch) = self.write_batch()?;
        let key = FileKey::random();
        let header = Header::with_id(
            &self.store_id,
            self.block_shift(),
            batch_id,
            &batch,
            &key,
            id,
        );
        Ok((header, key))
    }

    /// The bytes of a new, empty file: a header and an empty final block; with the file id
    /// `id` if one is given (format 3: the one its record names).
    pub fn empty_file(&self, id: Option<[u8; 16]>) -> Result<(Header, Vec<u8>), StoreError> {
        let (header, key) = self.new_file_as(id.unwrap_or_else(crate::crypto::random_id))?;
        let mut buf = vec![0u8; crate::format::HEADER_LEN + crate::format::BLOCK_OVERHEAD];
        buf[..crate::format::HEADER_LEN].copy_from_slice(&header.encode());
        crate::format::seal_block(
            &crypto::BlockCipher::new(key.secret()),
            &header.file_id,
            crate::format::BlockPos {
                idx: 0,
                last: true,
                holes_before: header.sparse().then_some(0),
            },
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
        self.unwraps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.read_cache
            .lock()
            .map_err(|_| StoreError::Damaged("cache lock poisoned".into()))?
            .insert(*id, key.clone());
        Ok(key)
    }

    /// Batch keys unwrapped with RSA since the store was opened (one per batch read).
    pub fn batch_unwraps(&self) -> u64 {
        self.unwraps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Check batch `id`'s record (from the catalog or batches/) as a read would, without RSA.
    pub fn check_batch(&self, id: &[u8; 16]) -> Result<(), StoreError> {
        let record = batch::recorded(&self.catalog, &self.root, id)?;
        batch::open_record(self.write_key.as_ref(), &self.store_id, id, &record).map(|_| ())
    }

    /// Whether batch `id`'s record is one an upgrade adopted from a format-1 store.
    pub fn batch_adopted(&self, id: &[u8; 16]) -> bool {
        batch::recorded(&self.catalog, &self.root, id).is_ok_and(|r| batch::is_adopted(&r))
    }

    /// Unwrap a file's key from its header.
    pub fn file_key(&self, header: &Header) -> Result<FileKey, StoreError> {
        let batch = self.batch_key(&header.batch_id)?;
        Ok(header.unwrap_key(&self.store_id, &batch)?)
    }
}
