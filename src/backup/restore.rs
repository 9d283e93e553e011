//! The restore walk: a directory of the store copied out to this host by the worker pool,
//! each file written under a temporary name and renamed into place whole, with its owner (as
//! root), mode, attributes, ACLs, holes, hard links and times.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::links::{Links, Turn};
use super::local;
use super::put::Here;
use super::put_file::partial_name;
use super::{BackupError, Counters, Options, Report, Space, PARTIAL};
use crate::fs::direct::{Handle, Kind, Stat, Tree};
use crate::within::Ahead;

/// Plaintext read, decrypted and written at once: small enough that a large file's pieces
/// in flight on every worker stay a few tens of MiB.
const PIECE: u64 = 1 << 20;

type Place = (Dest, OsString);

/// A directory being restored into: its descriptor, and whether this run made it (then
/// nothing is in it to be replaced, and files are written at their names directly: half as
/// many directory operations, in directories other workers are filling too).
#[derive(Clone)]
struct Dest {
    fd: Arc<OwnedFd>,
    fresh: bool,
}

struct Out<'a> {
    tree: &'a Tree,
    opts: &'a Options,
    counters: &'a Counters,
    report: &'a dyn Report,
    links: Links<u64, Place, (Place, Here)>,
    root: bool,
    /// Owners, set-ID bits and device nodes are restored as the store says: it authenticates
    /// them (format 3), or the administrator trusts it (--trust-store-metadata).
    trust: bool,
    /// Directories to read ahead, in the order the walk starts them (Tree::prefetch).
    ahead: std::sync::mpsc::Sender<u64>,
}

/// Copy `from` (a path in the store) to `to`: a directory named with a trailing slash has its
/// contents copied into `to`; otherwise it, or a file, is copied as `to/NAME`. `to` is made
/// if absent. Needs the store's private key: a backup-only host is refused.
pub fn restore(
    tree: &Tree,
    from: &Path,
    to: &Path,
    opts: &Options,
    counters: &Counters,
    report: &dyn Report,
) -> Result<(), BackupError> {
    if !tree.can_read() {
        return Err(BackupError::NoReadKey);
    }
    let (parent, st) = find(tree, from)?;
    let (ahead, dirs) = std::sync::mpsc::channel::<u64>();
    let out = Out {
        tree,
        opts,
        counters,
        report,
        links: Links::default(),
        // SAFETY: geteuid has no preconditions and cannot fail.
        root: unsafe { libc::geteuid() } == 0,
        trust: tree.authenticated_metadata() || opts.trust_metadata,
        ahead,
    };
    let fresh = std::fs::symlink_metadata(to).is_err();
    if !opts.dry_run {
        match std::fs::create_dir_all(to) {
            Ok(()) => {}
            Err(e) => return Err(BackupError::Source(to.to_path_buf(), e)),
        }
    }
    let dfd = match opts.dry_run {
        true => None,
        false => Some(Dest {
            fd: Arc::new(
                local::open_root(to).map_err(|e| BackupError::Source(to.to_path_buf(), e))?,
            ),
            fresh,
        }),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .stack_size(16 << 20)
        .build()
        .map_err(|e| BackupError::Pool(opts.jobs, e.to_string()))?;
    let contents =
        from.as_os_str().as_encoded_bytes().ends_with(b"/") || from.file_name().is_none();
    let here = Here {
        shown: to.to_path_buf(),
        rel: PathBuf::new(),
    };
    // One thread reads ahead the files of each directory the walk starts (a cold store is
    // read at the pace of its per-file reads otherwise); it ends when the walk does.
    std::thread::scope(|scope| {
        scope.spawn(move || dirs.iter().for_each(|d| tree.prefetch(d, Ahead::Data)));
        pool.install(|| {
            if contents && st.kind == Kind::Dir {
                return out.contents(st.ino, dfd, &here);
            }
            let name = from.file_name().unwrap_or(OsStr::new("."));
            let here = Here {
                shown: to.join(name),
                rel: PathBuf::from(name),
            };
            out.entry(parent, name, dfd, &here);
        });
        drop(out);
    });
    tree.forget(st.ino);
    Ok(())
}

/// The store entry at `path` (held) and its parent directory's inode.
fn find(tree: &Tree, path: &Path) -> Result<(u64, Stat), BackupError> {
    let mut parent = Tree::ROOT;
    let mut cur = tree.stat(Tree::ROOT).map_err(|e| BackupError::Store {
        path: path.to_path_buf(),
        e,
    })?;
    let mut held = Vec::new();
    for c in path.components() {
        let std::path::Component::Normal(name) = c else {
            continue;
        };
        let next = tree.lookup(cur.ino, name).map_err(|e| BackupError::Store {
            path: path.to_path_buf(),
            e,
        })?;
        let Some(next) = next else {
            held.iter().for_each(|i| tree.forget(*i));
            return Err(BackupError::Store {
                path: path.to_path_buf(),
                e: io::Error::from_raw_os_error(libc::ENOENT),
            });
        };
        parent = cur.ino;
        held.push(next.ino);
        cur = next;
    }
    // Every directory on the way stays held (the walk's parents); the last is the caller's.
    Ok((parent, cur))
}

impl Out<'_> {
    /// A path that could not be restored: counted, and told unless it is another for want of
    /// space in the target (the first stopped the run); a file dropped at a stop is neither.
    fn fail(&self, here: &Here, what: &str, e: &io::Error) {
        if self.counters.dropped(e) {
            return;
        }
        Counters::add(&self.counters.failed, 1);
        if self.counters.out_of_space(e, || false) != Space::Again {
            self.report.failed(&here.shown, what, e);
        }
    }

    /// Store directory `ino`'s entries into `dfd` (None: a dry run).
    fn contents(&self, ino: u64, dfd: Option<Dest>, here: &Here) {
        if dfd.is_some() {
            let _ = self.ahead.send(ino);
        }
        let listing = match self.tree.list_counted(ino) {
            Ok((l, 0)) => l,
            Ok((l, n)) => {
                let e = io::Error::other(format!(
                    "{n} entries left out: their names fail authentication (the log names \
                     their ciphertext)"
                ));
                self.fail(here, "cannot restore all of it", &e);
                l
            }
            Err(e) => return self.fail(here, "cannot list in the store", &e),
        };
        super::in_turn(&listing, self.opts.jobs, |(name, kind)| {
            let partial = name.as_encoded_bytes().starts_with(PARTIAL.as_bytes());
            let at = here.join(name);
            if partial || self.opts.filter.excludes(&at.rel, *kind == Kind::Dir) {
                return;
            }
            self.entry(ino, name, dfd.clone(), &at);
        });
        Counters::add(&self.counters.dirs, 1);
    }

    fn entry(&self, parent: u64, name: &OsStr, dfd: Option<Dest>, here: &Here) {
        if self.counters.stopped() {
            return;
        }
        let st = match self.tree.lookup(parent, name) {
            Ok(Some(st)) => st,
            Ok(None) => return,
            Err(e) => return self.fail(here, "cannot look up in the store", &e),
        };
        let Some(dfd) = dfd else {
            self.report.would("restore", &here.shown);
            match st.kind {
                Kind::Dir => self.contents(st.ino, None, here),
                _ => {
                    Counters::add(&self.counters.files, 1);
                    Counters::add(
                        &self.counters.bytes,
                        st.size * (st.kind == Kind::File) as u64,
                    );
                }
            }
            return self.tree.forget(st.ino);
        };
        let r = match st.kind {
            Kind::Dir => self.dir(&dfd, name, &st, here),
            Kind::File if st.nlink > 1 => self.linked(&dfd, name, &st, here),
            _ => self.one(&dfd, name, &st),
        };
        if let Err(e) = r {
            self.fail(here, "cannot restore", &e);
        }
        self.tree.forget(st.ino);
    }

    fn dir(&self, dfd: &Dest, name: &OsStr, st: &Stat, here: &Here) -> io::Result<()> {
        let fresh = match local::mkdir_at(dfd.fd.as_ref(), name, 0o700) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
            r => r.map(|_| true)?,
        };
        let fd = Arc::new(local::open_dir_at(dfd.fd.as_ref(), name)?);
        self.contents(
            st.ino,
            Some(Dest {
                fd: fd.clone(),
                fresh,
            }),
            here,
        );
        // Through the descriptor opened above, never by name: the directory is the one
        // that was filled, whatever was put under its name meanwhile.
        let (owner, perm) = self.owner_mode(st);
        let xattrs = self.tree.xattrs(st.ino)?;
        local::set_meta_fd(fd.as_ref(), owner, perm, &xattrs, st.atime, st.mtime)
    }

    /// The owner (as root) and mode an entry is given: as the store says, when its metadata
    /// is to be believed; else no owner but the restoring user's and no set-ID bit, since a
    /// host that can write the store chose them.
    fn owner_mode(&self, st: &Stat) -> (Option<(u32, u32)>, u32) {
        match self.trust {
            true => (self.root.then_some((st.uid, st.gid)), st.perm),
            false => (None, st.perm & !0o6000),
        }
    }

    /// A file, symlink or special file: under a temporary name, then renamed over what was
    /// there; in a directory this run made, at its name.
    fn one(&self, dfd: &Dest, name: &OsStr, st: &Stat) -> io::Result<()> {
        if !dfd.fresh && st.kind == Kind::File && self.unchanged(dfd.fd.as_ref(), name, st) {
            Counters::add(&self.counters.unchanged, 1);
            return Ok(());
        }
        let tmp = match dfd.fresh {
            true => name.to_os_string(),
            false => partial_name(),
        };
        let fd = dfd.fd.as_ref();
        let made = match st.kind {
            Kind::File => self.file(fd, &tmp, st),
            _ => self
                .make(fd, &tmp, st)
                .and_then(|_| self.meta(fd, &tmp, st)),
        };
        let placed = match dfd.fresh {
            true => made,
            false => made.and_then(|_| local::rename_at(fd, &tmp, name)),
        };
        if let Err(e) = placed {
            let _ = local::unlink_at(fd, &tmp, false);
            return Err(e);
        }
        Counters::add(&self.counters.files, 1);
        Ok(())
    }

    /// rsync's quick check, for a restore into a tree that already holds it: the target's
    /// `name` is a regular file of one name with `st`'s size, modification time, mode and
    /// (where they are restored) owner. Such a file is left as it is, not written again.
    fn unchanged(&self, dfd: &OwnedFd, name: &OsStr, st: &Stat) -> bool {
        let Ok(t) = local::stat_at(dfd, name) else {
            return false;
        };
        let mtime = std::time::UNIX_EPOCH
            + std::time::Duration::new(t.st_mtime as u64, t.st_mtime_nsec as u32);
        let (owner, perm) = self.owner_mode(st);
        t.st_mode & libc::S_IFMT == libc::S_IFREG
            && t.st_nlink == 1
            && t.st_size as u64 == st.size
            && mtime == st.mtime
            && t.st_mode & 0o7777 == perm
            && owner.is_none_or(|o| o == (t.st_uid, t.st_gid))
    }

    /// A regular file: its content, then owner, mode, attributes and times through its own
    /// descriptor.
    fn file(&self, dfd: &OwnedFd, tmp: &OsStr, st: &Stat) -> io::Result<()> {
        let f = local::create_at(dfd, tmp)?;
        let h = self.tree.open(st.ino, false)?;
        let r = self.copy_out(&h, &f, st.size);
        self.tree.close(h);
        r?;
        let (owner, perm) = self.owner_mode(st);
        let xattrs = self.tree.xattrs(st.ino)?;
        local::set_meta_fd(&f, owner, perm, &xattrs, st.atime, st.mtime)
    }

    /// A symlink or special file (regular files and directories have their own paths).
    fn make(&self, dfd: &OwnedFd, tmp: &OsStr, st: &Stat) -> io::Result<()> {
        let fmt = match st.kind {
            Kind::Symlink => return local::symlink_at(&self.tree.readlink(st.ino)?, dfd, tmp),
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::Char | Kind::Block if !self.trust => {
                return Err(io::Error::other(
                    "a device node, not restored: this store's metadata is not authenticated \
                     (run coffer upgrade, or give --trust-store-metadata)",
                ))
            }
            Kind::Char => libc::S_IFCHR,
            Kind::Block => libc::S_IFBLK,
            Kind::File | Kind::Dir => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        local::mknod_at(dfd, tmp, fmt | 0o600, st.rdev as u64)
    }

    /// The store file's data ranges written at their offsets into `f` (new and empty); its
    /// length set last when it ends in a hole, so holes stay holes. (A truncate to the
    /// length it has is not free: a journal transaction per file.)
    fn copy_out(&self, h: &Handle, f: &std::fs::File, size: u64) -> io::Result<()> {
        let (mut off, mut written) = (0, 0);
        while let Some(data) = self.tree.next_data(h, off)? {
            let end = self.tree.next_hole(h, data)?.min(size);
            self.copy_range(h, f, data, end)?;
            written = written.max(end);
            off = end.max(data + 1);
            if off >= size {
                break;
            }
        }
        match written < size {
            true => f.set_len(size),
            false => Ok(()),
        }
    }

    /// Plaintext `from..to` of the store file into `f` at the same offsets. A long range is
    /// cut into pieces that several workers read, decrypt and write at once, so one large
    /// file keeps the disk and both CPUs busy instead of reading, then decrypting, then
    /// writing in turn.
    fn copy_range(&self, h: &Handle, f: &std::fs::File, from: u64, to: u64) -> io::Result<()> {
        let piece = |at: u64| -> io::Result<()> {
            if self.counters.stopped() {
                return Err(io::Error::from_raw_os_error(libc::EINTR));
            }
            let n = (to - at).min(PIECE);
            let mut buf = Vec::with_capacity(n as usize);
            self.tree.read(h, at, n as u32, &mut buf)?;
            if buf.len() as u64 != n {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            f.write_all_at(&buf, at)?;
            Counters::add(&self.counters.bytes, n);
            Ok(())
        };
        let starts: Vec<u64> = (from..to).step_by(PIECE as usize).collect();
        match starts.len() {
            0..=2 => starts.into_iter().try_for_each(piece),
            _ => {
                use rayon::prelude::*;
                starts.into_par_iter().try_for_each(piece)
            }
        }
    }

    /// Owner (as root) and mode, then attributes and ACLs (a chown would drop a file
    /// capability), then times, of the symlink or special file `tmp` in `dfd`, never
    /// following it.
    fn meta(&self, dfd: &OwnedFd, tmp: &OsStr, st: &Stat) -> io::Result<()> {
        let (owner, perm) = self.owner_mode(st);
        let perm = (st.kind != Kind::Symlink).then_some(perm);
        local::owner_mode_at(dfd, tmp, owner, perm)?;
        for (n, v) in self.tree.xattrs(st.ino)? {
            local::set_xattr_at(dfd, tmp, &n, &v)?;
        }
        local::times_at(dfd, tmp, st.atime, st.mtime)
    }

    /// A hard-linked file: written by the first name reached, linked by the others once it
    /// is there (never waiting for it).
    fn linked(&self, dfd: &Dest, name: &OsStr, st: &Stat, here: &Here) -> io::Result<()> {
        let me: Place = (dfd.clone(), name.to_os_string());
        match self.links.turn(st.ino, (me, here.clone())) {
            Turn::Queued => return Ok(()),
            Turn::After(first, (me, _)) => return self.link_to(first.as_ref(), &me, false),
            Turn::First(_) => {}
        }
        let r = self.one(dfd, name, st);
        let first = r.as_ref().ok().map(|_| (dfd.clone(), name.to_os_string()));
        for (place, at) in self.links.done(st.ino, first.clone()) {
            // Linked into a directory that may be done: its times are kept as they were.
            if let Err(e) = self.link_to(first.as_ref(), &place, true) {
                self.fail(&at, "cannot link", &e);
            }
        }
        r
    }

    /// Link `name` in `dfd` to the first name; `keep_times`: put the directory's times back
    /// as they were (a link made after the directory was finished).
    fn link_to(
        &self,
        first: Option<&Place>,
        (dfd, name): &Place,
        keep_times: bool,
    ) -> io::Result<()> {
        let Some((fdir, fname)) = first else {
            return Err(io::Error::other("its first name could not be restored"));
        };
        let fd = dfd.fd.as_ref();
        let before = match keep_times {
            true => Some(local::stat_fd(fd)?),
            false => None,
        };
        let tmp = partial_name();
        local::link_at(fdir.fd.as_ref(), fname, fd, &tmp)?;
        if let Err(e) = local::rename_at(fd, &tmp, name) {
            let _ = local::unlink_at(fd, &tmp, false);
            return Err(e);
        }
        if let Some(b) = before {
            let (a, m) = (
                local::time(b.st_atime, b.st_atime_nsec),
                local::time(b.st_mtime, b.st_mtime_nsec),
            );
            local::times_at(fd, OsStr::new("."), a, m)?;
        }
        Counters::add(&self.counters.files, 1);
        Ok(())
    }
}
