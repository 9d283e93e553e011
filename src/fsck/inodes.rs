//! fsck's check of inode records (store format 3, format/inode.rs): every entry's record must
//! be there, open at the place the entry is found (its parent's id and its name), and agree
//! with what it is bound to: the backing type and device numbers, a file header's id, a
//! directory's IV, a symlink's target, and the attributes on the inode, which must be exactly
//! the ones the record lists. Nothing is ever adopted: `--repair` writes no record and
//! vouches for nothing; it only removes an attribute no record lists (a crash between
//! setting one and recording it leaves such an attribute, and a planted one is no different).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::xattrs::{get, list};
use super::Walk;
use crate::format::inode::{target_hash, InodeRecord, RecordKind};
use crate::format::xattr::{decode_backing, encode_backing, PREFIX_TRUSTED, PREFIX_USER};

impl Walk<'_> {
    /// The root directory's record (format 3): None, and a problem, when it does not hold,
    /// and then nothing under it is walked (nothing there can be believed).
    pub(super) fn root_record(&mut self) -> Option<InodeRecord> {
        match self.store.root_record() {
            Ok(r) => r,
            Err(e) => {
                self.report.problems.push(e.to_string());
                None
            }
        }
    }

    /// The record of the entry at `path` (shown as `crel` / `plain`), found under its parent
    /// known by `parent` as `name`: None, and a problem, when it is missing or does not hold.
    pub(super) fn inode_record(
        &mut self,
        path: &Path,
        crel: &Path,
        plain: &str,
        at: (&[u8; 16], &OsStr),
        meta: &std::fs::Metadata,
    ) -> Option<InodeRecord> {
        let codec = self.store.records()?;
        let Some(kind) = RecordKind::of_mode(meta.mode()) else {
            self.problem(crel, plain, "not a kind of file coffer keeps");
            return None;
        };
        let sealed = match get(path, kind.record_attr()) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
                let why = "it has no sealed record (planted by a host without the key, or its \
                           attributes were lost in a copy without rsync -X): it reads as EIO";
                self.problem(crel, plain, why);
                return None;
            }
            Err(e) => {
                self.problem(
                    crel,
                    plain,
                    format!("its sealed record cannot be read: {e}"),
                );
                return None;
            }
        };
        let place = codec.place(at.0, at.1.as_bytes());
        let rec = match codec.open(&sealed, &place) {
            Ok(r) => r,
            Err(e) => {
                self.problem(crel, plain, format!("{e}: it reads as EIO"));
                return None;
            }
        };
        let why = if rec.kind != kind {
            Some(format!(
                "its sealed record is a {:?}'s, the backing inode a {kind:?}'s",
                rec.kind
            ))
        } else if matches!(kind, RecordKind::Char | RecordKind::Block)
            && rec.rdev != meta.rdev() as u32
        {
            Some("its device numbers are not its sealed record's".into())
        } else {
            None
        };
        if let Some(why) = why {
            self.problem(crel, plain, format!("{why}: it reads as EIO"));
            return None;
        }
        if rec.adopted {
            self.report.adopted_records += 1;
        }
        Some(rec)
    }

    /// A symlink's target must be the one its record names.
    pub(super) fn check_target(
        &mut self,
        path: &Path,
        crel: &Path,
        plain: &str,
        rec: &InodeRecord,
    ) {
        let ok = std::fs::read_link(path)
            .is_ok_and(|t| rec.target == Some(target_hash(t.as_os_str().as_bytes())));
        if !ok {
            let why = "its target is not the one its sealed record names (copied from another \
                       symlink): it reads as EIO";
            self.problem(crel, plain, why);
        }
    }

    /// The attributes on the inode at `path` must be exactly those its record lists, each
    /// opening under its id and under its own name.
    pub(super) fn recorded_attrs(
        &mut self,
        path: &Path,
        crel: &Path,
        plain: &str,
        rec: &InodeRecord,
    ) {
        let prefix = match rec.kind {
            RecordKind::File | RecordKind::Dir => PREFIX_USER,
            _ => PREFIX_TRUSTED,
        };
        let names = match list(path) {
            Ok(n) => n,
            Err(e) => return self.problem(crel, plain, format!("cannot list its attributes: {e}")),
        };
        let on_inode: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix)).collect();
        for mac in &rec.xattrs {
            let b = format!("{prefix}{}", encode_backing(mac));
            let opened = get(path, &b)
                .map_err(|_| "an attribute its sealed record lists is gone (deleted by a host without the key): its attributes read as EIO".to_string())
                .and_then(|v| {
                    let (n, _) = self.store.xattrs.open(&rec.id, &v).map_err(|e| e.to_string())?;
                    match self.store.xattrs.backing_mac(&rec.id, &n) == *mac {
                        true => Ok(()),
                        false => Err("extended attribute sits under another attribute's name".into()),
                    }
                });
            match opened {
                Ok(()) => self.report.xattrs += 1,
                Err(why) => self.problem(crel, plain, why),
            }
        }
        for b in on_inode {
            let listed =
                decode_backing(&b[prefix.len()..]).is_some_and(|m| rec.xattrs.contains(&m));
            if listed {
                continue;
            }
            if self.opts.repair && super::xattrs::remove(path, b).is_ok() {
                self.fixed(crel, "removed an attribute its sealed record does not list");
            } else {
                let why = "an attribute its sealed record does not list (planted, or left by a \
                           crash; fsck --repair removes it): it is not read";
                self.problem(crel, plain, why);
            }
        }
    }
}
