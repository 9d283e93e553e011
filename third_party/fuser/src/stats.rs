//! Counters of the requests this process's FUSE sessions answered, by opcode, and of the
//! errors they answered with, by errno (coffer's fork: a mount's `coffer stats`). Counted in
//! the one place every request passes (`RequestWithSender::dispatch`) and the one every error
//! reply passes (`ReplyRaw`), over /dev/fuse and io_uring alike.

use std::sync::atomic::{AtomicU64, Ordering};

const OPCODES: usize = 64;
const ERRNOS: usize = 256;

static REQUESTS: [AtomicU64; OPCODES] = [const { AtomicU64::new(0) }; OPCODES];
static ERRORS: [AtomicU64; ERRNOS] = [const { AtomicU64::new(0) }; ERRNOS];

pub(crate) fn request(opcode: u32) {
    if let Some(c) = REQUESTS.get(opcode as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn error(errno: i32) {
    if let Some(c) = usize::try_from(errno).ok().and_then(|e| ERRORS.get(e)) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// (FUSE opcode, requests) for every opcode seen.
pub fn requests_by_opcode() -> Vec<(u32, u64)> {
    seen(&REQUESTS).map(|(i, n)| (i as u32, n)).collect()
}

/// (errno, error replies) for every errno replied.
pub fn errors_by_errno() -> Vec<(i32, u64)> {
    seen(&ERRORS).map(|(i, n)| (i as i32, n)).collect()
}

fn seen(c: &'static [AtomicU64]) -> impl Iterator<Item = (usize, u64)> {
    c.iter()
        .enumerate()
        .map(|(i, n)| (i, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
}
