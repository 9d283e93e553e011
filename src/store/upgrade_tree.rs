//! `coffer upgrade`'s walk: every inode of a store before format 3 gets a sealed record of
//! what it is found to be (format/inode.rs), marked as adopted: its type, mode, owner and
//! device numbers as the backing inode has them, its identity (a file's id from its header,
//! a directory's IV, a symlink's or special file's attribute id, else a new one), every
//! place it is found at (hard links gathered over the whole walk), a symlink's target, and
//! the attributes that open under its identity. Nothing else is changed: no data, no name,
//! no attribute. Entries whose name or header cannot be read are left without a record and
//! reported; they could not be read before either.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::upgrade::UpgradeReport;
use super::{StoreError, DATA};
use crate::crypto::NameKey;
use crate::format::inode::{target_hash, InodeRecord, Place, RecordCodec, RecordKind};
use crate::format::xattr::{
    decode_backing, XattrCodec, ID_ATTR, PREFIX_TRUSTED, PREFIX_USER, SEALED_MAX,
};
use crate::format::{
    classify, Entry, Header, NameCodec, DIRIV_LEN, DIRIV_NAME, HEADER_LEN, SIDECAR_MAX,
};
use crate::progress::Progress;
use crate::within;

/// A hard-linked inode met so far: its record (places gathered), and where one name of it is.
struct Linked {
    rec: InodeRecord,
    dir: PathBuf,
    name: OsString,
}

struct Walk<'a> {
    root: &'a Path,
    names: NameCodec,
    xattrs: XattrCodec,
    codec: &'a RecordCodec,
    progress: &'a Progress,
    report: &'a mut UpgradeReport,
    linked: HashMap<u64, Linked>,
}

/// Give every inode under `data/` its record.
pub(super) fn record_tree(
    root: &Path,
    names: &NameKey,
    codec: &RecordCodec,
    progress: &Progress,
    report: &mut UpgradeReport,
) -> Result<(), StoreError> {
    let io = |e| StoreError::Io(root.join(DATA), e);
    let data = within::open_dir(root, Path::new(DATA)).map_err(io)?;
    let st = within::stat_at(&data, None).map_err(io)?;
    let iv = dir_iv(&data)
        .map_err(|e| StoreError::Damaged(format!("{DATA}/{DIRIV_NAME} cannot be read ({e})")))?;
    let mut w = Walk {
        root,
        names: NameCodec::new(names),
        xattrs: XattrCodec::new(names),
        codec,
        progress,
        report,
        linked: HashMap::new(),
    };
    w.dir(&data, Path::new(DATA), iv, codec.root_place(), &st)?;
    for (_, l) in std::mem::take(&mut w.linked) {
        let dir =
            within::open_dir(root, &l.dir).map_err(|e| StoreError::Io(root.join(&l.dir), e))?;
        let node = within::open_node_at(&dir, &l.name)
            .map_err(|e| StoreError::Io(root.join(&l.dir), e))?;
        w.put(&node, &l.rec, &l.dir.join(&l.name))?;
    }
    Ok(())
}

fn dir_iv(dir: &OwnedFd) -> std::io::Result<[u8; DIRIV_LEN]> {
    let v = within::read_at(dir, OsStr::new(DIRIV_NAME), DIRIV_LEN)?;
    v.try_into()
        .map_err(|_| std::io::Error::other("it is not 16 bytes"))
}

/// A regular file's id, from its header.
fn file_id(dir: &OwnedFd, name: &OsStr) -> Result<[u8; 16], String> {
    let f = within::open_at(dir, name, libc::O_RDONLY, 0).map_err(|e| e.to_string())?;
    let mut hb = [0u8; HEADER_LEN];
    f.read_exact_at(&mut hb, 0)
        .map_err(|_| "its header is cut short".to_string())?;
    Header::decode(&hb)
        .map(|h| h.file_id)
        .map_err(|e| e.to_string())
}

impl Walk<'_> {
    fn problem(&mut self, rel: &Path, why: impl std::fmt::Display) {
        self.report
            .problems
            .push(format!("{}: {why}; left without a record", rel.display()));
    }

    fn put(&mut self, node: &OwnedFd, rec: &InodeRecord, rel: &Path) -> Result<(), StoreError> {
        let sealed = self
            .codec
            .seal(rec)
            .map_err(|e| StoreError::Damaged(format!("{}: {e}", rel.display())))?;
        within::set_xattr_fd(node, rec.kind.record_attr(), &sealed, 0)
            .map_err(|e| StoreError::Io(self.root.join(rel), e))?;
        self.report.entries += 1;
        if rec.kind == RecordKind::File && rec.mode & 0o6000 != 0 {
            self.report.privileged.push(rel.display().to_string());
        }
        if matches!(rec.kind, RecordKind::Char | RecordKind::Block) {
            self.report.devices.push(rel.display().to_string());
        }
        Ok(())
    }

    fn dir(
        &mut self,
        fd: &OwnedFd,
        rel: &Path,
        iv: [u8; DIRIV_LEN],
        place: Place,
        st: &libc::stat,
    ) -> Result<(), StoreError> {
        let xattrs = self.attrs(fd, Some(iv), PREFIX_USER, rel);
        let rec = found(RecordKind::Dir, iv, st, place, None, xattrs);
        self.put(fd, &rec, rel)?;
        let listing = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| StoreError::Io(self.root.join(rel), e))?;
        for e in listing.flatten() {
            let name = e.file_name();
            let entry = classify(name.as_bytes());
            if matches!(
                entry,
                Entry::DirIv | Entry::Temporary | Entry::Sidecar { .. }
            ) {
                continue;
            }
            let crel = rel.join(&name);
            let read = |side: &OsStr| within::read_at(fd, side, SIDECAR_MAX);
            let plain = match self.names.decode_entry(&iv, &entry, read) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(&crel, format!("its name cannot be read ({e})"));
                    continue;
                }
            };
            match within::stat_at(fd, Some(&name)) {
                Ok(cst) => {
                    let cplace = self.codec.place(&iv, plain.as_bytes());
                    self.entry(fd, &name, &crel, cplace, &cst)?
                }
                Err(e) => self.problem(&crel, e),
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        place: Place,
        st: &libc::stat,
    ) -> Result<(), StoreError> {
        self.progress.step(0);
        let Some(kind) = RecordKind::of_mode(st.st_mode) else {
            self.problem(rel, "not a kind of file coffer keeps");
            return Ok(());
        };
        let io = |e| StoreError::Io(self.root.join(rel), e);
        if kind == RecordKind::Dir {
            let sub = within::open_dir_at(dir, name).map_err(io)?;
            return match dir_iv(&sub) {
                Ok(iv) => self.dir(&sub, rel, iv, place, st),
                Err(e) => {
                    self.problem(
                        rel,
                        format!(
                            "its directory IV cannot be read ({e}); nothing under it was recorded"
                        ),
                    );
                    Ok(())
                }
            };
        }
        let node = within::open_node_at(dir, name).map_err(io)?;
        let (id, old_id, target) = match kind {
            RecordKind::File => match file_id(dir, name) {
                Ok(id) => (id, Some(id), None),
                Err(e) => {
                    self.problem(rel, e);
                    return Ok(());
                }
            },
            _ => {
                let had = within::xattr_fd(&node, ID_ATTR, 16)
                    .ok()
                    .flatten()
                    .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok());
                let target = match kind {
                    RecordKind::Symlink => {
                        Some(target_hash(&within::readlink_at(dir, name).map_err(io)?))
                    }
                    _ => None,
                };
                (had.unwrap_or_else(crate::crypto::random_id), had, target)
            }
        };
        let prefix = match kind {
            RecordKind::File => PREFIX_USER,
            _ => PREFIX_TRUSTED,
        };
        let xattrs = self.attrs(&node, old_id, prefix, rel);
        let rec = found(kind, id, st, place, target, xattrs);
        if st.st_nlink > 1 {
            // A hard link: its record names every place it is found at, written at the end.
            let parent = rel.parent().unwrap_or(Path::new(DATA)).to_path_buf();
            let l = self.linked.entry(st.st_ino).or_insert(Linked {
                rec: InodeRecord {
                    places: Vec::new(),
                    ..rec
                },
                dir: parent,
                name: name.to_os_string(),
            });
            l.rec.places.push(place);
            return Ok(());
        }
        self.put(&node, &rec, rel)
    }

    /// The backing names of the attributes (under `prefix`) that open under the inode's
    /// identity `id` and sit under their own name; any other is reported and left out.
    fn attrs(
        &mut self,
        node: &OwnedFd,
        id: Option<[u8; 16]>,
        prefix: &str,
        rel: &Path,
    ) -> Vec<[u8; 16]> {
        let names = match within::xattr_names(node) {
            Ok(n) => n,
            Err(e) => {
                self.problem(rel, format!("its attributes cannot be listed ({e})"));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for b in names.iter().filter(|n| n.starts_with(prefix)) {
            let mac = decode_backing(&b[prefix.len()..]);
            let ok = id.zip(mac).is_some_and(|(id, mac)| {
                within::xattr_fd(node, b, SEALED_MAX)
                    .ok()
                    .flatten()
                    .and_then(|v| self.xattrs.open(&id, &v).ok())
                    .is_some_and(|(n, _)| self.xattrs.backing_mac(&id, &n) == mac)
            });
            match (ok, mac) {
                (true, Some(mac)) => out.push(mac),
                _ => self.report.problems.push(format!(
                    "{}: an attribute that does not open under it ({b}) was not kept",
                    rel.display()
                )),
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The record of what an inode is found to be.
fn found(
    kind: RecordKind,
    id: [u8; 16],
    st: &libc::stat,
    place: Place,
    target: Option<[u8; 16]>,
    xattrs: Vec<[u8; 16]>,
) -> InodeRecord {
    let device = matches!(kind, RecordKind::Char | RecordKind::Block);
    InodeRecord {
        id,
        kind,
        mode: (st.st_mode & 0o7777) as u16,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: if device { st.st_rdev as u32 } else { 0 },
        target,
        places: vec![place],
        xattrs,
        adopted: true,
    }
}
