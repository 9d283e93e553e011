//! One ring entry: the header and payload buffers the kernel copies requests into and
//! replies out of, turning a request into the contiguous bytes fuser's parser reads, and the
//! reply sender that writes a reply back into the entry.
//!
//! Layout of an entry's memory (one anonymous mapping):
//! `[0, 4096)`: `struct fuse_uring_req_header` at offset 0 (288 bytes); the request is
//! reassembled at the end of this page, just before the payload.
//! `[4096, 4096 + payload_cap)`: the payload buffer.

use std::io;
use std::io::IoSlice;
use std::ptr;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;

use crate::channel::ChannelSender;

/// `FUSE_URING_IN_OUT_HEADER_SZ`: room for `fuse_in_header` / `fuse_out_header`.
const IN_OUT: usize = 0;
/// Offset of `op_in` (`FUSE_URING_OP_IN_OUT_SZ` = 128 bytes): the op's fixed argument.
const OP_IN: usize = 128;
const OP_IN_SZ: usize = 128;
/// Offset of `struct fuse_uring_ent_in_out { flags, commit_id, payload_sz, padding, reserved }`.
const ENT_IN_OUT: usize = 256;
const COMMIT_ID: usize = ENT_IN_OUT + 8;
const PAYLOAD_SZ: usize = ENT_IN_OUT + 16;
/// `sizeof(struct fuse_uring_req_header)`.
pub(crate) const HEADER_SZ: usize = 256 + 32;
/// `sizeof(struct fuse_in_header)`, `sizeof(struct fuse_out_header)`.
const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
const PAGE: usize = 4096;

/// An entry's memory. The kernel writes into it only while the entry is registered and
/// waiting (between a submitted REGISTER or COMMIT_AND_FETCH and its completion); this side
/// touches it only between a completion and the next submission.
pub(crate) struct EntryMem {
    base: *mut u8,
    len: usize,
    payload_cap: usize,
}

// SAFETY: the mapping is owned by this value; access is serialised by the ring protocol
// (above) and, for replies, by `Slot`'s mutex.
unsafe impl Send for EntryMem {}
unsafe impl Sync for EntryMem {}

impl std::fmt::Debug for EntryMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntryMem({} byte payload)", self.payload_cap)
    }
}

impl EntryMem {
    pub(crate) fn new(payload_cap: usize) -> io::Result<EntryMem> {
        let len = PAGE + payload_cap.div_ceil(PAGE) * PAGE;
        // SAFETY: an anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(EntryMem {
            base: base.cast(),
            len,
            payload_cap,
        })
    }

    /// The two iovecs REGISTER hands the kernel: the header struct, then the payload.
    pub(crate) fn iovecs(&self) -> [libc::iovec; 2] {
        [
            libc::iovec {
                iov_base: self.base.cast(),
                iov_len: HEADER_SZ,
            },
            libc::iovec {
                // SAFETY: PAGE is inside the mapping.
                iov_base: unsafe { self.base.add(PAGE) }.cast(),
                iov_len: self.payload_cap,
            },
        ]
    }

    fn read_u32(&self, off: usize) -> u32 {
        // SAFETY: callers pass offsets inside the header struct.
        unsafe { ptr::read_unaligned(self.base.add(off).cast::<u32>()) }
    }

    fn write_bytes(&self, off: usize, bytes: &[u8]) {
        debug_assert!(off + bytes.len() <= self.len);
        // SAFETY: bounds checked by the callers against the mapping's layout.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(off), bytes.len()) }
    }

    /// The request's unique id, from its in header.
    pub(crate) fn unique(&self) -> u64 {
        // SAFETY: inside the header struct.
        unsafe { ptr::read_unaligned(self.base.add(IN_OUT + 8).cast::<u64>()) }
    }

    /// The commit id the kernel gave the request now in this entry.
    pub(crate) fn commit_id(&self) -> u64 {
        // SAFETY: inside the header struct.
        unsafe { ptr::read_unaligned(self.base.add(COMMIT_ID).cast::<u64>()) }
    }

    /// The request now in this entry as `/dev/fuse` would have delivered it: in header,
    /// fixed argument, payload, contiguous. None when the kernel's sizes do not add up.
    ///
    /// # Safety
    /// Only between a completion and the next submission for this entry, and the slice must
    /// be dropped before that submission.
    pub(crate) unsafe fn request(&self) -> Option<&[u8]> {
        let len = self.read_u32(IN_OUT) as usize;
        let payload = self.read_u32(PAYLOAD_SZ) as usize;
        let op = len.checked_sub(IN_HEADER + payload)?;
        if op > OP_IN_SZ || payload > self.payload_cap {
            return None;
        }
        let start = PAGE - IN_HEADER - op;
        if start % 8 != 0 {
            // The ABI pads every argument struct to 8 bytes; anything else is not a request
            // this parser could read aligned.
            return None;
        }
        // SAFETY: source and destination ranges are inside the mapping and disjoint: the
        // header struct ends at 288, the reassembly starts at or after 4096 - 168.
        unsafe {
            ptr::copy_nonoverlapping(self.base.add(IN_OUT), self.base.add(start), IN_HEADER);
            ptr::copy_nonoverlapping(self.base.add(OP_IN), self.base.add(start + IN_HEADER), op);
            Some(std::slice::from_raw_parts(self.base.add(start), len))
        }
    }

    /// Writes a reply as fuser builds it (out header, then its payload) into the entry.
    fn write_reply(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let total: usize = data.iter().map(|s| s.len()).sum();
        if total < OUT_HEADER || total - OUT_HEADER > self.payload_cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("reply of {total} bytes does not fit the ring entry"),
            ));
        }
        let mut pos = 0usize;
        for slice in data {
            let mut bytes: &[u8] = slice;
            if pos < OUT_HEADER {
                let n = bytes.len().min(OUT_HEADER - pos);
                self.write_bytes(IN_OUT + pos, &bytes[..n]);
                pos += n;
                bytes = &bytes[n..];
            }
            if !bytes.is_empty() {
                self.write_bytes(PAGE + pos - OUT_HEADER, bytes);
                pos += bytes.len();
            }
        }
        let payload = u32::try_from(total - OUT_HEADER).map_err(io::Error::other)?;
        self.write_bytes(PAYLOAD_SZ, &payload.to_ne_bytes());
        Ok(())
    }

    /// An error reply for a request that was never dispatched.
    pub(crate) fn write_error(&self, unique: u64, errno: i32) {
        let mut header = [0u8; OUT_HEADER];
        header[..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
        header[4..8].copy_from_slice(&(-errno).to_ne_bytes());
        header[8..].copy_from_slice(&unique.to_ne_bytes());
        self.write_bytes(IN_OUT, &header);
        self.write_bytes(PAYLOAD_SZ, &0u32.to_ne_bytes());
    }
}

impl Drop for EntryMem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(); the ring that used it is closed first (Worker
        // drops its ring before its slot).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// An entry shared between its worker and the reply sender handed to the filesystem.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) mem: EntryMem,
    state: Mutex<ReplyState>,
    done: Condvar,
}

/// Where the reply to the request in a slot stands.
#[derive(Debug, Default)]
struct ReplyState {
    /// None while the request waits for its reply; then whether the reply was written.
    written: Option<bool>,
    /// The worker sleeps on `done`: only then does a reply need to wake it. Most replies
    /// are made on the worker's own thread, and a condvar's notify is a futex system call
    /// whether anyone waits or not (one per request, 70,000 in an rsync of 4,000 files).
    waiting: bool,
}

impl Slot {
    pub(crate) fn new(mem: EntryMem) -> Arc<Slot> {
        Arc::new(Slot {
            mem,
            state: Mutex::new(ReplyState::default()),
            done: Condvar::new(),
        })
    }

    /// Waits for the reply to the request being dispatched (the filesystem may reply from
    /// another thread), then readies the slot for the next request. False when the reply
    /// could not be written into the entry; the caller answers the kernel with an error.
    pub(crate) fn wait_replied(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(written) = state.written.take() {
                state.waiting = false;
                return written;
            }
            state.waiting = true;
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The reply path for a request that came over io_uring. Backing files (passthrough) are
/// still registered through the `/dev/fuse` channel.
#[derive(Debug, Clone)]
pub(crate) struct UringSender {
    pub(crate) slot: Arc<Slot>,
    pub(crate) ch: ChannelSender,
}

impl UringSender {
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let slot = &self.slot;
        let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.written.is_some() {
            return Err(io::Error::other("second reply to one ring request"));
        }
        let result = slot.mem.write_reply(data);
        state.written = Some(result.is_ok());
        if state.waiting {
            slot.done.notify_one();
        }
        result
    }
}
