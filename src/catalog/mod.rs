//! The sidecar catalog: an embedded, crash-safe redb database beside the ciphertext.
//!
//! Owns: RSA-wrapped batch keys, and per file its batch id, wrapped data key and plaintext
//! length. Does not own: the file bytes, or anything the mount needs to read a file (each
//! header carries a copy of its wrapped key), so a lost catalog is rebuilt by `fsck --repair`.
//! Records are postcard-encoded and versioned by the table names (`*_v1`).

mod writer;

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use writer::{CatalogOp, CatalogWriter};
// CommitFailure is defined below and used by the writer.

const FILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("files_v1");
const BATCHES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("batches_v1");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database error: {0}")]
    Db(String),
    #[error("catalog record is malformed")]
    Record,
    #[error("catalog belongs to another store")]
    WrongStore,
    #[error("catalog I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What redb's integrity check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Integrity {
    Good,
    Bad,
    /// Not checked: the catalog cannot be opened for writing (the reason).
    NotChecked(String),
}

/// Errors that mean "this cannot be written here", not "this is damaged".
fn read_only_errno(n: i32) -> bool {
    matches!(n, libc::EROFS | libc::EACCES | libc::EPERM)
}

/// Why queued catalog updates are not durable, as a sync reports it to every waiter (the
/// filesystem turns it into an errno: a full disk stays ENOSPC all the way up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitFailure {
    #[error("the disk is full")]
    Full,
    #[error("the disk quota is exceeded")]
    Quota,
    #[error("the catalog could not be written")]
    Failed,
    #[error("the catalog writer has stopped")]
    Stopped,
}

impl CatalogError {
    /// What a sync waiting for this commit is told.
    pub fn commit_failure(&self) -> CommitFailure {
        let CatalogError::Io(e) = self else {
            return CommitFailure::Failed;
        };
        match e.raw_os_error() {
            Some(libc::ENOSPC) => CommitFailure::Full,
            Some(libc::EDQUOT) => CommitFailure::Quota,
            _ => CommitFailure::Failed,
        }
    }
}

/// redb's errors, with an I/O error kept as one, so that a full disk stays ENOSPC.
impl From<redb::Error> for CatalogError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(io) => CatalogError::Io(io),
            e => CatalogError::Db(e.to_string()),
        }
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for CatalogError {
            fn from(e: $t) -> Self { redb::Error::from(e).into() }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub batch_id: [u8; 16],
    pub wrapped_key: Vec<u8>,
    pub plain_len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// RSA-OAEP(SHA-256) of the batch key under the store public key.
    pub wrapped: Vec<u8>,
    /// Unix seconds.
    pub created: u64,
}

/// The catalog opens read-only and turns writable on its first write. redb commits its
/// allocator state whenever a writable handle closes, so a mount that only reads (a restore,
/// `info`, an in-place write that changes no length) would otherwise rewrite pages of the
/// catalog every time, and every auxiliary rsync copy would send them again.
pub struct Catalog {
    path: PathBuf,
    db: RwLock<Handle>,
    /// Write transactions committed since it was opened (a mount's `coffer stats`).
    commits: std::sync::atomic::AtomicU64,
}

enum Handle {
    Read(redb::ReadOnlyDatabase),
    Write(redb::Database),
    /// Between closing the read-only handle and opening the writable one; only seen if that
    /// open failed.
    Closed,
}

fn poisoned<T>(_: T) -> CatalogError {
    CatalogError::Db("catalog lock poisoned".into())
}

/// The catalog file, opened without following a symlink (a host that can write the store
/// could point one anywhere) and refused unless it is a regular file; created 0600.
fn open_file(path: &Path, flags: i32) -> Result<std::fs::File, CatalogError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| CatalogError::Db("catalog path has no file name".into()))?;
    let d = crate::within::open_root(dir)?;
    Ok(crate::within::open_at(&d, name, flags, 0o600)?)
}

/// An existing catalog, read-only (no repair: a catalog a crash left open refuses).
fn open_read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, CatalogError> {
    let backend = redb::backends::FileBackend::new(open_file(path, libc::O_RDONLY)?)?;
    Ok(redb::Builder::new().open_read_only_with_backend(backend)?)
}

/// An existing catalog, writable (redb repairs one that a crash left open).
fn open_writable(path: &Path) -> Result<redb::Database, CatalogError> {
    let file = open_file(path, libc::O_RDWR)?;
    Ok(redb::Builder::new().create_with_backend(redb::backends::FileBackend::new(file)?)?)
}

impl Catalog {
    /// Create a new, empty catalog file (mode 0600) for `store_id`.
    pub fn create(path: &Path, store_id: &[u8; 16]) -> Result<Catalog, CatalogError> {
        let file = open_file(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)?;
        let db =
            redb::Builder::new().create_with_backend(redb::backends::FileBackend::new(file)?)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(FILES)?;
            tx.open_table(BATCHES)?;
            let mut meta = tx.open_table(META)?;
            meta.insert("store_id", &store_id[..])?;
        }
        tx.commit()?;
        Ok(Catalog {
            path: path.to_path_buf(),
            db: RwLock::new(Handle::Write(db)),
            commits: Default::default(),
        })
    }

    /// Open an existing catalog and check it belongs to `store_id`.
    pub fn open(path: &Path, store_id: &[u8; 16]) -> Result<Catalog, CatalogError> {
        let file = match open_file(path, libc::O_RDONLY) {
            Err(CatalogError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CatalogError::Db("catalog file is missing".into()));
            }
            r => r?,
        };
        if file.metadata()?.len() == 0 {
            return Err(CatalogError::Db("catalog file is empty".into()));
        }
        drop(file);
        // A catalog a crash left open needs redb's repair, which only a writable open does.
        let handle = match open_read_only(path) {
            Ok(db) => Handle::Read(db),
            Err(_) => Handle::Write(open_writable(path)?),
        };
        let c = Catalog {
            path: path.to_path_buf(),
            db: RwLock::new(handle),
            commits: Default::default(),
        };
        c.with_read(|tx| {
            let meta = tx.open_table(META)?;
            let id = meta.get("store_id")?.ok_or(CatalogError::Record)?;
            if id.value() != &store_id[..] {
                return Err(CatalogError::WrongStore);
            }
            drop(meta);
            tx.open_table(FILES)?;
            tx.open_table(BATCHES)?;
            Ok(())
        })?;
        Ok(c)
    }

    /// Whether the catalog has been opened for writing (and so will be written on close).
    pub fn is_writable(&self) -> bool {
        matches!(self.db.read().as_deref(), Ok(Handle::Write(_)))
    }

    /// Run `f` in a read transaction. The handle's lock is held throughout, so the switch to
    /// a writable handle never closes the database under a reader.
    fn with_read<R>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<R, CatalogError>,
    ) -> Result<R, CatalogError> {
        let g = self.db.read().map_err(poisoned)?;
        let tx = match &*g {
            Handle::Read(db) => db.begin_read()?,
            Handle::Write(db) => db.begin_read()?,
            Handle::Closed => return Err(CatalogError::Db("catalog is closed".into())),
        };
        f(&tx)
    }

    /// The writable database, opening it on first use.
    fn writable(&self) -> Result<RwLockReadGuard<'_, Handle>, CatalogError> {
        {
            let g = self.db.read().map_err(poisoned)?;
            if matches!(&*g, Handle::Write(_)) {
                return Ok(g);
            }
        }
        {
            let mut g = self.db.write().map_err(poisoned)?;
            if !matches!(&*g, Handle::Write(_)) {
                // The read-only handle holds a shared lock on the file; release it first.
                if let Handle::Read(db) = std::mem::replace(&mut *g, Handle::Closed) {
                    db.close()?;
                }
                match open_writable(&self.path) {
                    Ok(db) => *g = Handle::Write(db),
                    Err(e) => {
                        // A store that cannot be written (read-only media, a snapshot) still
                        // reads: keep the read-only handle.
                        if let Ok(db) = open_read_only(&self.path) {
                            *g = Handle::Read(db);
                        }
                        return Err(e);
                    }
                }
            }
        }
        self.db.read().map_err(poisoned)
    }

    fn with_write<R>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<R, CatalogError>,
    ) -> Result<R, CatalogError> {
        let g = self.writable()?;
        match &*g {
            Handle::Write(db) => f(db),
            _ => Err(CatalogError::Db("catalog is closed".into())),
        }
    }

    /// Record a batch key durably: files wrapped under it must never outlive its record.
    pub fn put_batch(&self, id: &[u8; 16], rec: &BatchRecord) -> Result<(), CatalogError> {
        let bytes = postcard::to_stdvec(rec).map_err(|_| CatalogError::Record)?;
        self.with_write(|db| {
            let tx = db.begin_write()?;
            tx.open_table(BATCHES)?.insert(&id[..], &bytes[..])?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn batch(&self, id: &[u8; 16]) -> Result<Option<BatchRecord>, CatalogError> {
        self.get(BATCHES, id)
    }

    pub fn batches(&self) -> Result<Vec<([u8; 16], BatchRecord)>, CatalogError> {
        self.list(BATCHES)
    }

    pub fn file(&self, id: &[u8; 16]) -> Result<Option<FileRecord>, CatalogError> {
        self.get(FILES, id)
    }

    pub fn files(&self) -> Result<Vec<([u8; 16], FileRecord)>, CatalogError> {
        self.list(FILES)
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        id: &[u8; 16],
    ) -> Result<Option<T>, CatalogError> {
        self.with_read(|tx| {
            let t = tx.open_table(table)?;
            let v = t.get(&id[..])?;
            v.map(|v| postcard::from_bytes(v.value()).map_err(|_| CatalogError::Record))
                .transpose()
        })
    }

    fn list<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
    ) -> Result<Vec<([u8; 16], T)>, CatalogError> {
        self.with_read(|tx| {
            let t = tx.open_table(table)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let id: [u8; 16] = k.value().try_into().map_err(|_| CatalogError::Record)?;
                out.push((
                    id,
                    postcard::from_bytes(v.value()).map_err(|_| CatalogError::Record)?,
                ));
            }
            Ok(out)
        })
    }

    /// Apply a group of file operations in one transaction.
    pub fn apply(&self, ops: &[CatalogOp], durable: bool) -> Result<(), CatalogError> {
        self.with_write(|db| apply_ops(db, ops, durable))?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Groups of updates committed (by `apply`) since the catalog was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// redb's own structural check (page checksums and tree shape).
    /// redb's own check of the database; it needs a writable catalog. On a store that cannot
    /// be written it is not done, and says why.
    pub fn check_integrity(&mut self) -> Result<Integrity, CatalogError> {
        match self.writable() {
            Ok(g) => drop(g),
            Err(CatalogError::Io(e)) if e.raw_os_error().is_some_and(read_only_errno) => {
                return Ok(Integrity::NotChecked(e.to_string()));
            }
            Err(e) => return Err(e),
        }
        match self.db.get_mut().map_err(poisoned)? {
            Handle::Write(db) => Ok(match db.check_integrity()? {
                true => Integrity::Good,
                false => Integrity::Bad,
            }),
            _ => Err(CatalogError::Db("catalog is closed".into())),
        }
    }
}

fn apply_ops(db: &redb::Database, ops: &[CatalogOp], durable: bool) -> Result<(), CatalogError> {
    let mut tx = db.begin_write()?;
    if !durable {
        tx.set_durability(redb::Durability::None)?;
    }
    {
        let mut t = tx.open_table(FILES)?;
        for op in ops {
            match op {
                CatalogOp::Put(id, rec) => {
                    let bytes = postcard::to_stdvec(rec).map_err(|_| CatalogError::Record)?;
                    t.insert(&id[..], &bytes[..])?;
                }
                CatalogOp::SetLen(id, len) => {
                    let cur = t
                        .get(&id[..])?
                        .map(|v| postcard::from_bytes::<FileRecord>(v.value()));
                    if let Some(Ok(mut rec)) = cur {
                        rec.plain_len = *len;
                        let bytes = postcard::to_stdvec(&rec).map_err(|_| CatalogError::Record)?;
                        t.insert(&id[..], &bytes[..])?;
                    }
                }
                CatalogOp::Remove(id) => {
                    t.remove(&id[..])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests;
