//! The backup walk: each source directory's entries put into the store by the worker pool,
//! directories first created and last given their attributes (their children change their
//! times), what changed written afresh, what did not left alone.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use super::links::{Links, Turn};
use super::local;
use super::{BackupError, Counters, Options, Report, Space, PARTIAL};
use crate::fs::direct::{Kind, Stat, Tree};
use crate::within::{read_ahead_dir, Ahead};

/// A source entry's place: the path shown to the user, and the path the filter matches.
#[derive(Clone)]
pub(super) struct Here {
    pub shown: PathBuf,
    pub rel: PathBuf,
}

impl Here {
    pub(super) fn join(&self, name: &OsStr) -> Here {
        Here {
            shown: self.shown.join(name),
            rel: self.rel.join(name),
        }
    }
}

/// Another name of a hard-linked source inode: store directory, name, the inode the store
/// has there (held), and the source path.
pub(super) type LinkName = (u64, OsString, Option<u64>, Here);

pub(super) struct Run<'a> {
    pub tree: &'a Tree,
    pub opts: &'a Options,
    pub counters: &'a Counters,
    pub report: &'a dyn Report,
    links: Links<(u64, u64), u64, LinkName>,
    /// Inodes held to the end of the run: directories, and first names of hard links.
    held: Mutex<Vec<u64>>,
    /// Source directories to read ahead, as the walk starts them (within::read_ahead_dir),
    /// each with the store directory it goes into when that was there before this run.
    /// Taken at the end of the walk, which ends the reading-ahead thread.
    ahead: Mutex<Option<AheadQueue>>,
    /// What --delete removes once the walk is done (delete.rs).
    pub(super) doomed: super::delete::Doomed,
    /// The directory in the store the sources go into, as given.
    pub(super) dest: &'a Path,
}

/// Where the walk sends a source directory (and the store directory it goes into, when that
/// was there before this run) to be read ahead.
type AheadQueue = std::sync::mpsc::Sender<(OwnedFd, Option<u64>)>;

/// Copy `sources` into directory `dest` of the store (made as needed). A source named with a
/// trailing slash has its contents copied into `dest`; without, it is copied as `dest/NAME`.
/// A path that cannot be copied is reported and counted, and the run goes on.
pub fn backup(
    tree: &Tree,
    sources: &[PathBuf],
    dest: &Path,
    opts: &Options,
    counters: &Counters,
    report: &dyn Report,
) -> Result<(), BackupError> {
    let (ahead, dirs) = std::sync::mpsc::channel::<(OwnedFd, Option<u64>)>();
    let run = Run {
        tree,
        opts,
        counters,
        report,
        links: Links::default(),
        held: Mutex::default(),
        ahead: Mutex::new(Some(ahead)),
        doomed: Default::default(),
        dest,
    };
    let dest_ino = run.dest_dir(dest)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .stack_size(16 << 20)
        .build()
        .map_err(|e| BackupError::Pool(opts.jobs, e.to_string()))?;
    // One thread reads ahead each source directory the walk starts; it ends when the walk
    // does. Into a directory of the store made by this run, every file is read: their data.
    // Into one that was there, most files are unchanged and only compared: the inodes on
    // both sides.
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (d, there) in dirs.iter() {
                match there {
                    None => read_ahead_dir(&d, Ahead::Data),
                    Some(s) => {
                        read_ahead_dir(&d, Ahead::Inodes);
                        tree.prefetch(s, Ahead::Inodes);
                    }
                }
            }
        });
        pool.install(|| sources.par_iter().for_each(|s| run.source(s, dest_ino)));
        if let Ok(mut a) = run.ahead.lock() {
            a.take();
        }
    });
    // Directories are held to here, so the entries --delete doomed can still be found.
    run.delete_doomed();
    for ino in run.held.lock().map(|h| h.clone()).unwrap_or_default() {
        tree.forget(ino);
    }
    if !opts.dry_run {
        tree.sync().map_err(BackupError::Sync)?;
    }
    Ok(())
}

impl Run<'_> {
    fn hold(&self, ino: u64) {
        if let Ok(mut h) = self.held.lock() {
            h.push(ino);
        }
    }

    /// A path that could not be backed up: counted, and told unless it is another for want
    /// of space in the store (the first stopped the run); a file dropped at a stop is
    /// neither.
    pub(super) fn fail(&self, here: &Here, what: &str, e: &io::Error) {
        if self.counters.dropped(e) {
            return;
        }
        Counters::add(&self.counters.failed, 1);
        if self.counters.out_of_space(e, || self.tree.store_full()) != Space::Again {
            self.report.failed(&here.shown, what, e);
        }
    }

    /// The store directory `dest`, made as needed (None in a dry run where it is absent).
    fn dest_dir(&self, dest: &Path) -> Result<Option<u64>, BackupError> {
        let mut cur = Tree::ROOT;
        let mut path = PathBuf::new();
        if self.opts.recheck && !self.opts.dry_run {
            let e = |e| BackupError::Store {
                path: PathBuf::from("/"),
                e,
            };
            self.tree.remove_leftovers(cur).map_err(e)?;
        }
        for c in dest.components() {
            let std::path::Component::Normal(name) = c else {
                continue;
            };
            path.push(name);
            let err = |e| BackupError::Store {
                path: path.clone(),
                e,
            };
            let next = match self.tree.lookup(cur, name).map_err(err)? {
                Some(s) if s.kind == Kind::Dir => s,
                Some(s) => {
                    self.tree.forget(s.ino);
                    return Err(BackupError::NotADir(path));
                }
                None if self.opts.dry_run => return Ok(None),
                None => self.tree.mkdir(cur, name, 0o755, 0, 0).map_err(err)?,
            };
            self.hold(next.ino);
            cur = next.ino;
            if self.opts.recheck && !self.opts.dry_run {
                self.tree.remove_leftovers(cur).map_err(err)?;
            }
        }
        Ok(Some(cur))
    }

    /// One command-line source.
    fn source(&self, src: &Path, dest: Option<u64>) {
        let s = src.as_os_str().as_encoded_bytes();
        let contents = s.ends_with(b"/") || src.file_name().is_none();
        let here = Here {
            shown: src.to_path_buf(),
            rel: PathBuf::new(),
        };
        if contents {
            let opened = local::open_root(src).and_then(|fd| Ok((local::stat_fd(&fd)?, fd)));
            match opened {
                Ok((st, fd)) => self.contents(&fd, &here, dest, false, &st),
                Err(e) => self.fail(&here, "cannot open", &e),
            }
            return;
        }
        let (parent, name) = match (src.parent(), src.file_name()) {
            (Some(p), Some(n)) => (
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                },
                n,
            ),
            _ => {
                return self.fail(
                    &here,
                    "cannot name",
                    &io::Error::from_raw_os_error(libc::EINVAL),
                )
            }
        };
        match local::open_root(parent) {
            Ok(pfd) => {
                let here = Here {
                    shown: src.to_path_buf(),
                    rel: PathBuf::from(name),
                };
                self.entry(&pfd, name, &here, dest, false);
            }
            Err(e) => self.fail(&here, "cannot open its directory", &e),
        }
    }

    /// A source directory's contents into store directory `dest` (None: absent, dry run),
    /// then the directory's own attributes from `st`.
    fn contents(
        &self,
        sfd: &OwnedFd,
        here: &Here,
        dest: Option<u64>,
        fresh: bool,
        st: &libc::stat,
    ) {
        let names = match local::names(sfd) {
            Ok(n) => n,
            Err(e) => return self.fail(here, "cannot list", &e),
        };
        if let (Ok(fd), Ok(a)) = (sfd.try_clone(), self.ahead.lock()) {
            if let Some(a) = a.as_ref() {
                let _ = a.send((fd, dest.filter(|_| !fresh)));
            }
        }
        if let (Some(d), false) = (dest, fresh) {
            self.tidy(d, here, &names);
        }
        if let (Some(d), true, false) = (dest, self.opts.recheck, self.opts.dry_run) {
            if let Err(e) = self.tree.remove_leftovers(d) {
                self.fail(here, "cannot tidy in the store", &e);
            }
        }
        super::in_turn(&names, self.opts.jobs, |n| {
            self.entry(sfd, n, &here.join(n), dest, fresh)
        });
        if let Some(d) = dest {
            if !self.opts.dry_run && !self.counters.stopped() {
                // What the children did to its times is known only now.
                let cur = match fresh {
                    true => Ok(None),
                    false => self.tree.stat(d).map(Some),
                };
                let r =
                    cur.and_then(|c| self.sync_meta(d, sfd, OsStr::new("."), st, c.as_ref(), None));
                if let Err(e) = r {
                    self.fail(here, "cannot set attributes in the store", &e);
                }
            }
        }
        Counters::add(&self.counters.dirs, 1);
    }

    /// Before a directory is filled again: remove what an interrupted run left, and with
    /// --delete what the source no longer has (what the filter excludes stays, as rsync).
    fn tidy(&self, dest: u64, here: &Here, source: &[OsString]) {
        let listing = match self.tree.list(dest) {
            Ok(l) => l,
            Err(e) => return self.fail(here, "cannot list in the store", &e),
        };
        let keep: HashSet<&OsString> = source.iter().collect();
        self.doomed.saw(listing.len());
        for (name, kind) in listing {
            let partial = name.as_encoded_bytes().starts_with(PARTIAL.as_bytes());
            let gone = self.opts.delete
                && !keep.contains(&name)
                && !self
                    .opts
                    .filter
                    .excludes(&here.rel.join(&name), kind == Kind::Dir);
            if !(partial || gone) {
                continue;
            }
            let at = here.join(&name);
            if gone {
                self.doomed.add(dest, name, at);
                continue;
            }
            if self.opts.dry_run {
                continue;
            }
            if let Err(e) = self.remove(dest, &name) {
                self.fail(&at, "cannot delete from the store", &e);
            }
        }
    }

    /// Remove `name` from store directory `parent`, a directory with all it holds; returns
    /// how many entries went.
    pub(super) fn remove(&self, parent: u64, name: &OsStr) -> io::Result<u64> {
        let Some(st) = self.tree.lookup(parent, name)? else {
            return Ok(0);
        };
        let r = match st.kind {
            Kind::Dir => self.remove_dir(parent, name, st.ino),
            _ => self.tree.unlink(parent, name).map(|_| 1),
        };
        self.tree.forget(st.ino);
        r
    }

    fn remove_dir(&self, parent: u64, name: &OsStr, ino: u64) -> io::Result<u64> {
        let mut n = 1;
        for (child, _) in self.tree.list(ino)? {
            n += self.remove(ino, &child)?;
        }
        self.tree.rmdir(parent, name)?;
        Ok(n)
    }

    /// One source entry into store directory `parent` (`fresh`: made by this run, so empty).
    fn entry(&self, sdir: &OwnedFd, name: &OsStr, here: &Here, parent: Option<u64>, fresh: bool) {
        if self.counters.stopped() {
            return;
        }
        let st = match local::stat_at(sdir, name) {
            Ok(st) => st,
            Err(e) => return self.fail(here, "cannot stat", &e),
        };
        let kind = Kind::of_mode(st.st_mode);
        if self.opts.filter.excludes(&here.rel, kind == Kind::Dir) {
            return;
        }
        let look = parent.filter(|_| !fresh);
        let existing = match look.map(|p| self.tree.lookup(p, name)).transpose() {
            Ok(e) => e.flatten(),
            Err(e) => return self.fail(here, "cannot look up in the store", &e),
        };
        let Some(parent) = parent else {
            return self.put_absent(sdir, name, here, kind, &st);
        };
        let r = match kind {
            Kind::Dir => self.put_dir(sdir, name, here, parent, existing, &st),
            Kind::File if st.st_nlink > 1 => {
                self.put_linked(sdir, name, here, parent, existing, &st)
            }
            _ => self
                .put_one(sdir, name, here, parent, existing, &st)
                .map(|kept| {
                    if let Some(ino) = kept {
                        self.tree.forget(ino);
                    }
                }),
        };
        if let Err(e) = r {
            self.fail(here, "cannot back up", &e);
        }
    }

    /// A dry run below a directory the store does not have yet: everything would be written.
    fn put_absent(&self, sdir: &OwnedFd, name: &OsStr, here: &Here, kind: Kind, st: &libc::stat) {
        self.report.would("write", &here.shown);
        if kind != Kind::Dir {
            Counters::add(&self.counters.files, 1);
            Counters::add(&self.counters.bytes, st.st_size as u64);
            return;
        }
        match local::open_dir_at(sdir, name) {
            Ok(fd) => self.contents(&fd, here, None, true, st),
            Err(e) => self.fail(here, "cannot open", &e),
        }
    }

    fn put_dir(
        &self,
        sdir: &OwnedFd,
        name: &OsStr,
        here: &Here,
        parent: u64,
        existing: Option<Stat>,
        st: &libc::stat,
    ) -> io::Result<()> {
        let sfd = local::open_dir_at(sdir, name)?;
        if local::stat_fd(&sfd)?.st_ino != st.st_ino {
            return Err(io::Error::other("replaced while being read"));
        }
        if let Some(s) = existing.as_ref().filter(|s| s.kind == Kind::Dir) {
            // Held once already by the lookup: the run keeps that hold to its end.
            self.hold(s.ino);
            self.contents(&sfd, here, Some(s.ino), false, st);
            return Ok(());
        }
        if self.opts.dry_run {
            self.report.would("write", &here.shown);
            self.contents(&sfd, here, None, true, st);
            return Ok(());
        }
        if let Some(s) = existing {
            self.tree.forget(s.ino);
            let n = self.remove(parent, name)?;
            Counters::add(&self.counters.deleted, n);
        }
        let made = self.tree.mkdir(parent, name, 0o700, st.st_uid, st.st_gid)?;
        self.hold(made.ino);
        self.contents(&sfd, here, Some(made.ino), true, st);
        Ok(())
    }

    /// A hard-linked file (links.rs): its first name is written as any file; each other name
    /// becomes a link to that, once it is there.
    fn put_linked(
        &self,
        sdir: &OwnedFd,
        name: &OsStr,
        here: &Here,
        parent: u64,
        existing: Option<Stat>,
        st: &libc::stat,
    ) -> io::Result<()> {
        let key = (st.st_dev, st.st_ino);
        let me = (
            parent,
            name.to_os_string(),
            existing.as_ref().map(|s| s.ino),
            here.clone(),
        );
        match self.links.turn(key, me) {
            Turn::Queued => return Ok(()),
            Turn::After(first, me) => return self.link_to(first, me),
            Turn::First(_) => {}
        }
        let first = self.put_one(sdir, name, here, parent, existing, st);
        let kept = first.as_ref().ok().copied().flatten();
        if let Some(ino) = kept {
            self.hold(ino);
        }
        for w in self.links.done(key, kept) {
            let at = w.3.clone();
            if let Err(e) = self.link_to(kept, w) {
                self.fail(&at, "cannot link", &e);
            }
        }
        first.map(|_| ())
    }
}
