//! Operations that give an existing inode another name: rename (and exchange) and link,
//! returning `Result<_, Errno>`. In format 3 each moves the inode's record along with it:
//! the new place is sealed into the record before the backing entry appears there, and the
//! old one is taken out after it is gone (records.rs), so a crash between the two leaves a
//! record that names both places, never an entry that its record does not name.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;

use fuser::{Errno, FileAttr, INodeNo};

use super::dirops::Dying;
use super::records::{with_place, without_place};
use super::{sys, CofferFs};
use crate::format::inode::{InodeRecord, Place};

/// One inode's side of a rename in format 3: its number, its record, and the directory and
/// entry it is at before and after.
struct Moving<'a> {
    ino: u64,
    rec: InodeRecord,
    before: (&'a OwnedFd, &'a OsStr),
    after: (&'a OwnedFd, &'a OsStr),
}

/// One side of a rename: the directory (inode and backing descriptor), the backing entry
/// in it and the plaintext name.
#[derive(Clone, Copy)]
struct Side<'a> {
    dir: INodeNo,
    fd: &'a OwnedFd,
    entry: &'a OsStr,
    name: &'a OsStr,
}

/// A replaced inode that keeps other names: its descriptor, number and record.
type OtherNames = (OwnedFd, u64, InodeRecord);

/// Both sides of an exchange in format 3, and their places before it.
type Exchange<'a> = (&'a (Moving<'a>, Moving<'a>), (Place, Place));

impl CofferFs {
    /// The inode `entry` names in `parent` (plaintext `name`; inode `ino` by the caller's
    /// stat), about to move to `after`.
    fn moving<'a>(
        &self,
        (pfd, parent, ino): (&'a OwnedFd, INodeNo, Option<u64>),
        entry: &'a OsStr,
        name: &OsStr,
        after: (&'a OwnedFd, &'a OsStr),
    ) -> Result<Moving<'a>, Errno> {
        let (ino, rec) = self.record_of(pfd, (parent, entry, name), ino)?;
        Ok(Moving {
            ino,
            rec,
            before: (pfd, entry),
            after,
        })
    }

    /// Seal `rec` as `m`'s record (at the entry it is at, `moved` or not) and keep it; nothing
    /// to write when it is the record read (a record that named the new place already).
    fn reseal(&self, m: &Moving, rec: &InodeRecord, moved: bool) -> Result<(), Errno> {
        if *rec == m.rec {
            return Ok(());
        }
        let (dir, entry) = if moved { m.after } else { m.before };
        self.put_record_at(dir, entry, rec)?;
        self.keep_record(m.ino, rec.clone());
        Ok(())
    }

    /// The record locks of one or two inodes, taken in one order (no deadlock).
    fn rec_locks2(
        &self,
        a: u64,
        b: Option<u64>,
    ) -> Result<Vec<std::sync::MutexGuard<'_, ()>>, Errno> {
        let stripe = |i: u64| (i as usize) % super::records::LOCK_STRIPES;
        let mut s = vec![stripe(a)];
        if let Some(b) = b.map(stripe).filter(|b| *b != s[0]) {
            s.push(b);
        }
        s.sort_unstable();
        s.into_iter()
            .map(|i| super::lock(&self.rec_locks[i]))
            .collect()
    }

    pub(super) fn rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        self.writable()?;
        let old = self.stored_name(parent, name)?;
        let new = self.stored_name(newparent, newname)?;
        let (pfd, _) = self.node(parent)?;
        let (npfd, _) = self.node(newparent)?;
        let (oe, ne) = (OsStr::new(old.entry()), OsStr::new(new.entry()));
        if parent == newparent && oe == ne {
            return Ok(());
        }
        let src = self.ino_at(&pfd, oe).ok_or(Errno::ENOENT)?;
        let dst = self.ino_at(&npfd, ne);
        // Two names of one inode: rename(2) does nothing (the kernel answers before a mount
        // is asked; the in-process tree is asked). Going on would take the target's place
        // out of the record that still has that name.
        if dst == Some(src) {
            return match flags & libc::RENAME_NOREPLACE {
                0 => Ok(()),
                _ => Err(Errno::EEXIST),
            };
        }
        let places = match self.store.records() {
            Some(_) => Some((
                self.place_of(parent, name)?,
                self.place_of(newparent, newname)?,
            )),
            None => None,
        };
        // Format 3: the records are read and written again under their locks, so that no
        // chmod between the two is lost.
        let _g = match places {
            Some(_) => self.rec_locks2(src, dst)?,
            None => Vec::new(),
        };
        let a = Side {
            dir: parent,
            fd: &pfd,
            entry: oe,
            name,
        };
        let b = Side {
            dir: newparent,
            fd: &npfd,
            entry: ne,
            name: newname,
        };
        if flags & libc::RENAME_EXCHANGE != 0 {
            return self.exchange_sides(a, b, (src, dst), places);
        }
        let (occupied, dying, replaced) = self.clear_target(a, b, flags)?;
        let moving = match places {
            Some(_) => Some(self.moving((&pfd, parent, Some(src)), oe, name, (&npfd, ne))?),
            None => None,
        };
        if let (Some(m), Some((_, p2))) = (&moving, places) {
            self.reseal(m, &with_place(&m.rec, p2), false)?;
        }
        self.put_sidecar(&npfd, &new)?;
        if let Err(e) = sys::rename_at(&pfd, oe, &npfd, ne, flags) {
            if !occupied {
                self.drop_sidecar(&npfd, &new);
            }
            if let Some(m) = &moving {
                let _ = self.reseal(m, &m.rec, false);
            }
            return Err(e);
        }
        self.drop_sidecar(&pfd, &old);
        self.bury(dying);
        if let (Some(m), Some(places)) = (&moving, places) {
            self.moved(m, places, replaced);
        }
        if let Some(dst) = dst.filter(|d| *d != src) {
            self.drop_name(dst, newparent, ne);
        }
        self.drop_name(src, parent, oe);
        self.add_name(src, newparent, ne);
        Ok(())
    }

    /// RENAME_EXCHANGE of `a`'s entry (inode `src`) and `b`'s (`dst`), records and all.
    fn exchange_sides(
        &self,
        a: Side<'_>,
        b: Side<'_>,
        (src, dst): (u64, Option<u64>),
        places: Option<(Place, Place)>,
    ) -> Result<(), Errno> {
        let sides = match places {
            Some(_) => Some((
                self.moving((a.fd, a.dir, Some(src)), a.entry, a.name, (b.fd, b.entry))?,
                self.moving((b.fd, b.dir, dst), b.entry, b.name, (a.fd, a.entry))?,
            )),
            None => None,
        };
        // Names stay where they are, so the sidecars do too.
        self.exchange(a.fd, a.entry, b.fd, b.entry, sides.as_ref().zip(places))?;
        self.drop_name(src, a.dir, a.entry);
        self.add_name(src, b.dir, b.entry);
        if let Some(dst) = dst {
            self.drop_name(dst, b.dir, b.entry);
            self.add_name(dst, a.dir, a.entry);
        }
        Ok(())
    }

    /// What `b`'s entry holds before `a`'s is renamed over it: whether anything is there, its
    /// catalog entry if this name is its last, and (format 3) its record if it keeps other
    /// names. An empty directory there is removed (its IV first); EEXIST under NOREPLACE.
    fn clear_target(
        &self,
        a: Side<'_>,
        b: Side<'_>,
        flags: u32,
    ) -> Result<(bool, Option<Dying>, Option<OtherNames>), Errno> {
        let Ok(t) = sys::stat_at(b.fd, b.entry) else {
            return Ok((false, None, None));
        };
        if flags & libc::RENAME_NOREPLACE != 0 {
            return Err(Errno::EEXIST);
        }
        if t.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let src = sys::stat_at(a.fd, a.entry)?;
            if src.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(Errno::EISDIR);
            }
            // An empty plaintext directory still holds its IV; remove it first.
            self.remove_empty_dir(b.fd, b.entry)?;
            return Ok((true, None, None));
        }
        let dying = self.dying(b.fd, b.entry);
        // A replaced inode that keeps other names loses this one from its record.
        let replaced = self.other_names(b.fd, b.dir, b.entry, b.name);
        Ok((true, dying, replaced))
    }

    /// Format 3, after the renameat: `m`'s record without its old place, and the replaced
    /// inode's (if it keeps other names) without the place it lost.
    fn moved(&self, m: &Moving, (p1, p2): (Place, Place), replaced: Option<OtherNames>) {
        self.settle(m, &without_place(&with_place(&m.rec, p2), &p1));
        if let Some((fd, ino, rec)) = replaced {
            // Its other names keep it; this one is gone.
            match self.put_record(&fd, &without_place(&rec, &p2)) {
                Ok(()) => self.keep_record(ino, without_place(&rec, &p2)),
                Err(e) => tracing::warn!(
                    "{}: its sealed record still names a place it lost ({e:?})",
                    self.label(ino)
                ),
            }
        }
    }

    /// The second half of a record change whose backing change is done: if the record
    /// cannot be written, it names one place too many (harmless), which the log says.
    fn settle(&self, m: &Moving, rec: &InodeRecord) {
        if let Err(e) = self.reseal(m, rec, true) {
            tracing::warn!(
                "{}: its sealed record still names a place it left ({e:?})",
                self.label(m.ino)
            );
        }
    }

    /// RENAME_EXCHANGE, with (format 3) each side's record given the other's place first,
    /// and its own taken out after (the caller holds both records' locks).
    fn exchange(
        &self,
        pfd: &OwnedFd,
        oe: &OsStr,
        npfd: &OwnedFd,
        ne: &OsStr,
        sealed: Option<Exchange<'_>>,
    ) -> Result<(), Errno> {
        let Some(((a, b), (p1, p2))) = sealed else {
            return sys::rename_at(pfd, oe, npfd, ne, libc::RENAME_EXCHANGE);
        };
        self.reseal(a, &with_place(&a.rec, p2), false)?;
        if let Err(e) = self.reseal(b, &with_place(&b.rec, p1), false) {
            let _ = self.reseal(a, &a.rec, false);
            return Err(e);
        }
        if let Err(e) = sys::rename_at(pfd, oe, npfd, ne, libc::RENAME_EXCHANGE) {
            let _ = self.reseal(a, &a.rec, false);
            let _ = self.reseal(b, &b.rec, false);
            return Err(e);
        }
        self.settle(a, &without_place(&with_place(&a.rec, p2), &p1));
        self.settle(b, &without_place(&with_place(&b.rec, p1), &p2));
        Ok(())
    }

    pub(super) fn link(
        &self,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let stored = self.stored_name(newparent, newname)?;
        let (fd, _) = self.node(ino)?;
        let (npfd, _) = self.node(newparent)?;
        let entry = OsStr::new(stored.entry());
        // Format 3: the new name is in the record before it is in the directory.
        let linked = match self.store.records() {
            Some(_) => {
                let _g = self.rec_lock(ino.0)?;
                let old = self.record(ino)?;
                let rec = with_place(&old, self.place_of(newparent, newname)?);
                self.put_record(&*fd, &rec).map_err(|e| match e {
                    e if e == Errno::E2BIG => Errno::EMLINK,
                    e => e,
                })?;
                self.keep_record(ino.0, rec.clone());
                Some((old, rec))
            }
            None => None,
        };
        self.put_sidecar(&npfd, &stored)?;
        if let Err(e) = sys::link_at(&fd, &npfd, entry) {
            if sys::stat_at(&npfd, entry).is_err() {
                self.drop_sidecar(&npfd, &stored);
            }
            if let Some((old, _)) = &linked {
                if self.put_record(&*fd, old).is_ok() {
                    self.keep_record(ino.0, old.clone());
                }
            }
            return Err(e);
        }
        self.remember_as(newparent, entry, newname, linked.map(|l| l.1))
    }
}
