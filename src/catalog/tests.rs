//! The catalog's unit tests: round trips, modes, full disks, damaged databases.

use super::*;

#[test]
fn a_full_disk_in_redb_stays_enospc() {
    let full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
    assert_eq!(
        CatalogError::from(redb::Error::Io(full())).commit_failure(),
        CommitFailure::Full
    );
    let commit = redb::CommitError::Storage(redb::StorageError::Io(full()));
    assert_eq!(
        CatalogError::from(commit).commit_failure(),
        CommitFailure::Full
    );
    assert_eq!(CatalogError::Record.commit_failure(), CommitFailure::Failed);
}

#[test]
fn catalog_round_trip_and_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("catalog");
    let store = [1u8; 16];
    let c = Catalog::create(&p, &store).expect("create");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let b = BatchRecord {
        wrapped: vec![9; 384],
        created: 5,
    };
    c.put_batch(&[2; 16], &b).expect("batch");
    let rec = FileRecord {
        batch_id: [2; 16],
        wrapped_key: vec![1; 60],
        plain_len: 10,
    };
    c.apply(
        &[
            CatalogOp::Put([3; 16], rec.clone()),
            CatalogOp::SetLen([3; 16], 99),
        ],
        true,
    )
    .expect("apply");
    drop(c);
    let c = Catalog::open(&p, &store).expect("reopen");
    assert_eq!(c.batch(&[2; 16]).expect("get"), Some(b));
    assert_eq!(
        c.file(&[3; 16]).expect("get").map(|r| r.plain_len),
        Some(99)
    );
    c.apply(&[CatalogOp::Remove([3; 16])], true)
        .expect("remove");
    assert_eq!(c.file(&[3; 16]).expect("get"), None);
    assert_eq!(c.files().expect("list").len(), 0);
    drop(c);
    assert!(matches!(
        Catalog::open(&p, &[9; 16]),
        Err(CatalogError::WrongStore)
    ));
}

#[test]
fn reading_a_catalog_leaves_its_bytes_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("catalog");
    let c = Catalog::create(&p, &[1; 16]).expect("create");
    let rec = FileRecord {
        batch_id: [2; 16],
        wrapped_key: vec![1; 60],
        plain_len: 10,
    };
    c.apply(&[CatalogOp::Put([3; 16], rec)], true)
        .expect("apply");
    drop(c);
    let before = std::fs::read(&p).expect("read");
    let c = Catalog::open(&p, &[1; 16]).expect("open");
    assert!(!c.is_writable());
    assert_eq!(c.files().expect("list").len(), 1);
    c.apply(&[], true).expect("an empty apply is still a write");
    assert!(c.is_writable(), "the first write opens it writable");
    assert_eq!(
        c.file(&[3; 16]).expect("get").map(|r| r.plain_len),
        Some(10)
    );
    drop(c);
    assert_ne!(std::fs::read(&p).expect("read"), before);
    let after_write = std::fs::read(&p).expect("read");
    let c = Catalog::open(&p, &[1; 16]).expect("open");
    assert_eq!(c.files().expect("list").len(), 1);
    drop(c);
    assert_eq!(
        std::fs::read(&p).expect("read"),
        after_write,
        "a read-only session changed the file"
    );
}

#[test]
fn corrupt_catalog_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("catalog");
    drop(Catalog::create(&p, &[1; 16]).expect("create"));
    std::fs::write(&p, b"garbage that is not a database at all").expect("write");
    assert!(Catalog::open(&p, &[1; 16]).is_err());
    std::fs::remove_file(&p).expect("rm");
    assert!(Catalog::open(&p, &[1; 16]).is_err());
}
