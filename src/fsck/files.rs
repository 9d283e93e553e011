//! fsck's check of one ciphertext file: its shape, its batch (which must authenticate, or
//! the file is never adopted), every block, and with --repair the salvage of a damaged file
//! or of one whose creation a crash cut short.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{open_in_store, salvage, verify_file, verify_shape, Walk};
use crate::catalog::FileRecord;
use crate::format::{Header, HEADER_LEN};

impl Walk<'_> {
    /// Record a checked file for the catalog cross-check.
    fn adopt(&mut self, h: &Header, plain_len: u64) {
        self.report.plain_bytes += plain_len;
        self.files.insert(
            h.file_id,
            FileRecord {
                batch_id: h.batch_id,
                wrapped_key: h.wrapped_key.to_vec(),
                plain_len,
            },
        );
    }

    pub(super) fn file(&mut self, path: &Path, crel: &Path, plain: &str, len: u64) {
        self.report.files += 1;
        if let Some(p) = &self.opts.progress {
            p.step(len);
        }
        // Shorter than a header: a create that a crash cut short, before the header (and so
        // before any content) was written. Nothing in it can ever be read; repair makes it
        // the empty file it was when created.
        if self.opts.repair && len < HEADER_LEN as u64 {
            return self.cut_short(path, crel, plain);
        }
        // A header whose batch does not authenticate was not written by a key holder:
        // reported, never salvaged, never adopted into the catalog.
        let shape = verify_shape(self.store, path);
        if let Some(why) = shape
            .as_ref()
            .ok()
            .and_then(|(h, _)| self.batch_problem(&h.batch_id))
        {
            return self.problem(crel, plain, why);
        }
        if let Ok((h, _)) = &shape {
            // Whatever is found wrong below, the file is there: its record is not orphaned.
            self.damaged.insert(h.file_id);
        }
        let checked = if self.opts.keyless {
            shape
        } else {
            verify_file(self.store, path)
        };
        match checked {
            Ok((h, len)) => {
                self.attrs(path, crel, plain, &h.file_id);
                self.adopt(&h, len)
            }
            Err(why) if self.opts.repair && !self.opts.keyless => {
                match salvage::salvage_file(self.store, path) {
                    Ok(s) => {
                        self.adopt(&s.header, s.plain_len);
                        let what = format!("{why}; {}", s.describe());
                        tracing::warn!("{}: {what}", crel.display());
                        self.fixed(crel, what);
                    }
                    Err(not) => self.problem(crel, plain, format!("{why} ({not})")),
                }
            }
            Err(why) => self.problem(crel, plain, why),
        }
    }

    /// Make a file cut short before its header the empty file it was, in place (so it keeps
    /// its inode, mode, owner and times).
    fn cut_short(&mut self, path: &Path, crel: &Path, plain: &str) {
        let made = self
            .store
            .empty_file()
            .map_err(|e| e.to_string())
            .and_then(|(h, b)| {
                let f = open_in_store(self.store, path, libc::O_WRONLY)?;
                (|| {
                    f.write_all_at(&b, 0)?;
                    f.set_len(b.len() as u64)?;
                    f.sync_all()
                })()
                .map(|_| h)
                .map_err(|e| e.to_string())
            });
        match made {
            Ok(h) => {
                self.adopt(&h, 0);
                self.fixed(
                    crel,
                    "its creation was cut short before its header: now an empty file",
                );
            }
            Err(why) => self.problem(crel, plain, why),
        }
    }
}
