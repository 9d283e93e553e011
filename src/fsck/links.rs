//! fsck's check of symlinks: an inline target must authenticate; a long target's blob
//! (`links/`) must be there, hash to its name and authenticate; and a blob no symlink names
//! (left by a crash between writing it and making the symlink) is reported, and removed with
//! --repair.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Walk;
use crate::format::{decode_long_link, decode_symlink, long_link_blob};
use crate::store::links::{self, LINKS};

impl Walk<'_> {
    /// Check one symlink (`path`, shown as `crel` / `plain`).
    pub(super) fn symlink(&mut self, path: &Path, crel: &Path, plain: &str) {
        self.report.symlinks += 1;
        let Ok(t) = std::fs::read_link(path) else {
            return self.problem(crel, plain, "cannot read the symlink");
        };
        let stored = t.as_os_str().as_bytes();
        let ok = match long_link_blob(stored) {
            None => decode_symlink(&self.store.names, stored).is_ok(),
            Some(name) => {
                self.link_blobs.insert(name.to_vec());
                match links::read_blob(&self.store.root, name) {
                    Ok(blob) => decode_long_link(&self.store.names, name, &blob).is_ok(),
                    Err(e) => {
                        return self.problem(crel, plain, format!("long target: {e}"));
                    }
                }
            }
        };
        if !ok {
            self.problem(crel, plain, "symlink target fails authentication");
        }
    }

    /// Blobs of long symlink targets that no symlink names.
    pub(super) fn orphan_link_blobs(&mut self) {
        let names = match links::blob_names(&self.store.root) {
            Ok(n) => n,
            Err(e) => return self.problem(Path::new(LINKS), "", e),
        };
        let named = std::mem::take(&mut self.link_blobs);
        for name in names.into_iter().filter(|n| !named.contains(n)) {
            let rel = Path::new(LINKS).join(std::ffi::OsStr::from_bytes(&name));
            if !self.opts.repair {
                self.problem(&rel, "", "long symlink target that no symlink names");
                continue;
            }
            match links::remove_blob(&self.store.root, &name) {
                Ok(()) => self.fixed(&rel, "removed a long symlink target that no symlink names"),
                Err(e) => self.problem(&rel, "", format!("cannot remove: {e}")),
            }
        }
    }
}
