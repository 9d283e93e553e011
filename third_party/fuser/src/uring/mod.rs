//! FUSE over io_uring (Linux 6.14 and later, `CONFIG_FUSE_IO_URING`, and the fuse module's
//! `enable_uring` parameter set): requests arrive as completions of `IORING_OP_URING_CMD`
//! commands on `/dev/fuse`, and each reply is committed in the same system call that fetches
//! the next request, instead of one read(2) and one writev(2) per request.
//!
//! The kernel keeps one queue per possible CPU and gives a request to the queue of the CPU
//! its caller runs on; the ring is used only once every queue has an entry registered. Each
//! worker here owns one io_uring and one entry in one queue, and is pinned to that queue's
//! CPU, so a synchronous caller and the worker answering it share a core (measured: an rsync
//! of a tree 1.3x faster than /dev/fuse pinned, no faster unpinned, on a 2-CPU VM where a
//! wakeup across CPUs is expensive). Threads a filesystem creates from a request inherit
//! its worker's CPU: thread pools must exist before `run()`. FORGET, INTERRUPT
//! and notifications still travel over `/dev/fuse`, whose loop keeps running beside these.
//!
//! The INIT reply asks for io_uring only after every worker's ring and buffers exist: once
//! the kernel has accepted it, requests wait for the ring, so a ring that could not be set up
//! then would hang the mount. If the kernel refuses a registration it falls back to
//! `/dev/fuse` by itself.

mod entry;

use std::io;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::thread;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::warn;

pub(crate) use entry::UringSender;
use entry::EntryMem;
use entry::Slot;

use crate::Filesystem;
use crate::channel::Channel;
use crate::reply::ReplySender;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// `enum fuse_uring_cmd`.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// The ring workers, set up before the INIT reply and started with the session.
#[derive(Debug)]
pub(crate) struct Pool {
    workers: Vec<Worker>,
    queues: usize,
    served: Arc<AtomicU64>,
}

impl Pool {
    /// A ring and an entry for `per_queue` workers in each of the kernel's queues, with
    /// payload buffers of `payload_cap` bytes (the largest request or reply).
    pub(crate) fn prepare(ch: &Channel, per_queue: usize, payload_cap: usize) -> io::Result<Pool> {
        let queues = possible_cpus();
        let served = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::with_capacity(queues * per_queue);
        for qid in 0..queues {
            for _ in 0..per_queue.max(1) {
                workers.push(Worker::new(ch.clone(), qid, payload_cap, served.clone())?);
            }
        }
        Ok(Pool {
            workers,
            queues,
            served,
        })
    }

    /// How many requests the workers have answered, counted as they go.
    pub(crate) fn served(&self) -> Arc<AtomicU64> {
        self.served.clone()
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} queues, {} workers",
            self.queues,
            self.workers.len()
        )
    }

    /// Starts every worker; each serves until the connection ends.
    pub(crate) fn spawn<FS: Filesystem>(
        self,
        event_loop: impl Fn(String) -> SessionEventLoop<FS>,
    ) -> io::Result<Vec<thread::JoinHandle<io::Result<()>>>>
    where
        FS: Send + Sync + 'static,
    {
        let mut threads = Vec::with_capacity(self.workers.len());
        for (i, worker) in self.workers.into_iter().enumerate() {
            let name = format!("fuser-ring-{}-{i}", worker.qid);
            let se = event_loop(name.clone());
            threads.push(
                thread::Builder::new()
                    .name(name)
                    .spawn(move || worker.run(&se))?,
            );
        }
        Ok(threads)
    }
}

/// One io_uring with one registered entry.
struct Worker {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    slot: Arc<Slot>,
    /// The REGISTER command's iovecs, kept where the kernel was told they are.
    iov: Box<[libc::iovec; 2]>,
    ch: Channel,
    qid: usize,
    /// Requests served by all workers of the pool.
    served: Arc<AtomicU64>,
}

// SAFETY: the iovecs point into the slot's mapping, which the worker owns; nothing else
// holds them.
unsafe impl Send for Worker {}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Worker(queue {})", self.qid)
    }
}

impl Worker {
    fn new(
        ch: Channel,
        qid: usize,
        payload_cap: usize,
        served: Arc<AtomicU64>,
    ) -> io::Result<Worker> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(2)?;
        let slot = Slot::new(EntryMem::new(payload_cap)?);
        let iov = Box::new(slot.mem.iovecs());
        Ok(Worker {
            ring,
            slot,
            iov,
            ch,
            qid,
            served,
        })
    }

    fn command(&self, op: u32, commit_id: u64) -> squeue::Entry128 {
        // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6]; }
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&(self.qid as u16).to_ne_bytes());
        let mut sqe = opcode::UringCmd80::new(types::Fd(self.ch.as_fd().as_raw_fd()), op).cmd(cmd);
        if op == CMD_REGISTER {
            sqe = sqe.addr(Some(self.iov.as_ptr() as u64));
        }
        let sqe = sqe.build();
        match op {
            CMD_REGISTER => with_len(sqe, 2),
            _ => sqe,
        }
    }

    fn submit(&mut self, sqe: &squeue::Entry128) -> io::Result<()> {
        // SAFETY: the iovecs and buffers the command names live as long as the worker.
        unsafe { self.ring.submission().push(sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    fn run<FS: Filesystem>(mut self, se: &SessionEventLoop<FS>) -> io::Result<()> {
        pin_to_cpu(self.qid);
        let mut last = self.command(CMD_REGISTER, 0);
        let mut served_any = false;
        self.submit(&last)?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let Some(cqe) = self.ring.completion().next() else {
                continue;
            };
            match -cqe.result() {
                0 => {}
                libc::EAGAIN | libc::EINTR => {
                    self.submit(&last)?;
                    continue;
                }
                libc::ENOTCONN | libc::ECONNABORTED | libc::ENODEV => return Ok(()),
                errno if !served_any => {
                    // The kernel refused the registration and went back to /dev/fuse.
                    let e = io::Error::from_raw_os_error(errno);
                    warn!("io_uring queue {} refused ({e}); serving through /dev/fuse", self.qid);
                    return Ok(());
                }
                errno => {
                    // A commit the kernel could not match (its request was aborted): the
                    // kernel dropped the entry, so hand it the buffers again.
                    let e = io::Error::from_raw_os_error(errno);
                    warn!("io_uring queue {}: commit failed ({e}); registering again", self.qid);
                    served_any = false;
                    last = self.command(CMD_REGISTER, 0);
                    self.submit(&last)?;
                    continue;
                }
            }
            served_any = true;
            let commit_id = self.slot.mem.commit_id();
            self.serve(se);
            self.served.fetch_add(1, Ordering::Relaxed);
            last = self.command(CMD_COMMIT_AND_FETCH, commit_id);
            self.submit(&last)?;
        }
    }

    /// Dispatches the request now in the entry; its reply is in the entry when this returns.
    fn serve<FS: Filesystem>(&self, se: &SessionEventLoop<FS>) {
        let mem = &self.slot.mem;
        let unique = mem.unique();
        // SAFETY: between the completion and the next submission; the request is dropped
        // before this returns.
        let data = unsafe { mem.request() };
        let sender = ReplySender::Uring(UringSender {
            slot: self.slot.clone(),
            ch: se.ch.sender(),
        });
        match data.and_then(|d| RequestWithSender::with_reply(se.ch.sender(), sender, d)) {
            Some(req) => {
                req.dispatch(se);
                if !self.slot.wait_replied() {
                    mem.write_error(unique, libc::EIO);
                }
            }
            None => {
                debug!("io_uring queue {}: malformed request {unique}", self.qid);
                mem.write_error(unique, libc::EIO);
            }
        }
    }
}

/// io-uring's `UringCmd80` builder has no length; REGISTER needs `sqe->len = 2` (iovecs).
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: Entry128 is #[repr(C)]: a 64-byte `struct io_uring_sqe` and 64 command bytes;
    // `len` is the u32 at offset 24 of the sqe.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    unsafe { std::mem::transmute(raw) }
}

/// The kernel's queue count: `num_possible_cpus()`, from /sys (one past the highest).
fn possible_cpus() -> usize {
    let from_sys = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .split([',', '-'])
                .filter_map(|n| n.parse::<usize>().ok())
                .max()
        })
        .map(|max| max + 1);
    // SAFETY: sysconf has no preconditions.
    from_sys.unwrap_or_else(|| unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize)
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays inside it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                debug!("cannot pin io_uring worker to CPU {cpu}");
            }
        }
    }
}
