//! Inode records (store format 3): what a restore, a mount and the kernel's permission checks
//! act on for one inode, sealed under a key the store's bytes do not hold, and bound to the
//! inode's identity and to every place in the tree where it may appear.
//!
//! ```text
//! backing attribute  "user.cfi" (regular files, directories) or "trusted.cfi" (the rest)
//! value   = id[16] | form u8 | (form 2: xor[16]) | SIV-seal(nonce = id[0..12], AAD, fields)
//! AAD     = "coffer/v3/inode" | store_id | id | form | the places (forms 0 and 2)
//! fields  = flags u8 | kind u8 | mode u16 | uid u32 | gid u32
//!           | rdev u32 (devices) | target[16] (symlinks)
//!           | (form 1: count u16 | place[16] each) | count u16 | xattr[16] each
//! place   = first 16 bytes of keyed BLAKE3 under derive_key("coffer 2026-12 inode places",
//!           write key) of [parent's id, plaintext name] (the root: [16 zero bytes, "/"])
//! ```
//!
//! `id` is what the inode is known by: a regular file's file id (its header must say the
//! same), a directory's IV, a random id for anything else. Form 0 (one name) binds the place
//! through the AAD alone, so the common record is 47 bytes and fits, with its name, in the
//! 92 bytes of attribute space an ext4 inode holds (a bigger one costs a 4 KiB block per
//! inode). Form 2 (two names: a hard link, and every rename in flight) keeps the XOR of its
//! two places in the clear and binds both, lower first, in the AAD: a reader at either place
//! finds the other by XOR, a reader anywhere else a wrong one, and the record (63 bytes)
//! still fits the inode. Form 1 (three names or more) lists its places. The key is derived
//! from the write key, which every writer holds (backup-only hosts too) and the store does
//! not. The nonce is the id's first 12 bytes: GCM-SIV then reveals only whether one inode's
//! record was sealed again with the same fields, as deterministic names do.
//!
//! Pure: bytes in, bytes out. The mount, fsck and `coffer upgrade` read and write them.

use crate::crypto::{self, BlockCipher, Secret32, WriteKey, TAG_LEN};

/// The backing attribute that holds a regular file's or directory's record.
pub const RECORD_USER: &str = "user.cfi";
/// The same for symlinks and special files, which Linux allows no `user.` attributes.
pub const RECORD_TRUSTED: &str = "trusted.cfi";
const AAD: &[u8] = b"coffer/v3/inode";
const RECORD_CONTEXT: &str = "coffer 2026-12 inode records";
const PLACE_CONTEXT: &str = "coffer 2026-12 inode places";
/// A record is never larger: Linux's limit on an attribute value.
pub const RECORD_MAX: usize = 65536;
/// Names one inode may have (ext4 holds about 240 places in one attribute block; XFS more).
pub const PLACES_MAX: usize = 4000;
/// Flag: the fields were found in place by `coffer upgrade`, not written by a key holder.
const ADOPTED: u8 = 1;

/// Where an inode may appear: its parent's id and its name, as a keyed hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place(pub [u8; 16]);

/// What an inode is. The numbers are on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    Char = 6,
    Block = 7,
}

impl RecordKind {
    /// The kind of a stat mode (its S_IFMT bits); None for anything else.
    pub fn of_mode(mode: u32) -> Option<RecordKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => RecordKind::File,
            libc::S_IFDIR => RecordKind::Dir,
            libc::S_IFLNK => RecordKind::Symlink,
            libc::S_IFIFO => RecordKind::Fifo,
            libc::S_IFSOCK => RecordKind::Socket,
            libc::S_IFCHR => RecordKind::Char,
            libc::S_IFBLK => RecordKind::Block,
            _ => return None,
        })
    }

    /// The S_IFMT bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            RecordKind::File => libc::S_IFREG,
            RecordKind::Dir => libc::S_IFDIR,
            RecordKind::Symlink => libc::S_IFLNK,
            RecordKind::Fifo => libc::S_IFIFO,
            RecordKind::Socket => libc::S_IFSOCK,
            RecordKind::Char => libc::S_IFCHR,
            RecordKind::Block => libc::S_IFBLK,
        }
    }

    fn from_byte(b: u8) -> Option<RecordKind> {
        RecordKind::of_mode(match b {
            1 => libc::S_IFREG,
            2 => libc::S_IFDIR,
            3 => libc::S_IFLNK,
            4 => libc::S_IFIFO,
            5 => libc::S_IFSOCK,
            6 => libc::S_IFCHR,
            7 => libc::S_IFBLK,
            _ => return None,
        })
    }

    fn is_device(self) -> bool {
        matches!(self, RecordKind::Char | RecordKind::Block)
    }

    /// The backing attribute its record lives in.
    pub fn record_attr(self) -> &'static str {
        match self {
            RecordKind::File | RecordKind::Dir => RECORD_USER,
            _ => RECORD_TRUSTED,
        }
    }
}

/// One inode's sealed fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRecord {
    pub id: [u8; 16],
    pub kind: RecordKind,
    /// The 12 permission bits: set-user-ID, set-group-ID, sticky, rwx three times.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Device numbers (character and block devices; 0 otherwise).
    pub rdev: u32,
    /// A symlink's backing target, hashed (target_hash): bound to this very symlink.
    pub target: Option<[u8; 16]>,
    /// Every place the inode may appear at; never empty.
    pub places: Vec<Place>,
    /// The backing names (16-byte MACs, format/xattr.rs) of its extended attributes, sorted.
    pub xattrs: Vec<[u8; 16]>,
    /// Found in place by `coffer upgrade` rather than written by a key holder.
    pub adopted: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Does not open here: altered, planted, or moved from another place (form 0 cannot tell).
    #[error("its sealed record fails authentication here (altered, planted, or moved from another place)")]
    Forged,
    /// Opens, but names other places: moved, renamed or linked by a host without the key.
    #[error("its sealed record does not name this place (moved, renamed or linked here by a host without the key)")]
    Elsewhere,
    #[error("its sealed record is malformed")]
    Malformed,
    #[error("too many names or attributes for one sealed record")]
    TooLarge,
}

/// Seals and opens a store's inode records (one per open store).
pub struct RecordCodec {
    cipher: BlockCipher,
    places: Secret32,
    store_id: [u8; 16],
}

/// The hash a symlink's record keeps of its backing target.
pub fn target_hash(backing_target: &[u8]) -> [u8; 16] {
    let h = blake3::hash(backing_target);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

fn put16(out: &mut Vec<u8>, n: usize) -> Result<(), RecordError> {
    let n = u16::try_from(n).map_err(|_| RecordError::TooLarge)?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

impl RecordCodec {
    pub fn new(writer: &WriteKey, store_id: [u8; 16]) -> RecordCodec {
        RecordCodec {
            cipher: BlockCipher::new(&crypto::derive_subkey(RECORD_CONTEXT, writer.secret())),
            places: crypto::derive_subkey(PLACE_CONTEXT, writer.secret()),
            store_id,
        }
    }

    /// The place `name` in the directory known by `parent`.
    pub fn place(&self, parent: &[u8; 16], name: &[u8]) -> Place {
        let m = crypto::keyed_mac(&self.places, &[parent, name]);
        let mut p = [0u8; 16];
        p.copy_from_slice(&m[..16]);
        Place(p)
    }

    /// The store's root directory's place (no name a file can have is "/").
    pub fn root_place(&self) -> Place {
        self.place(&[0u8; 16], b"/")
    }

    fn aad(&self, id: &[u8; 16], form: u8, bound: &[Place]) -> Vec<u8> {
        let mut a = Vec::with_capacity(AAD.len() + 65);
        a.extend_from_slice(AAD);
        a.extend_from_slice(&self.store_id);
        a.extend_from_slice(id);
        a.push(form);
        bound.iter().for_each(|p| a.extend_from_slice(&p.0));
        a
    }

    /// The backing attribute value of `r`.
    pub fn seal(&self, r: &InodeRecord) -> Result<Vec<u8>, RecordError> {
        // The places the AAD binds (forms 0 and 2), and form 2's XOR of them.
        let (form, bound, xor) = match r.places.as_slice() {
            [] => return Err(RecordError::Malformed),
            [one] => (0u8, vec![*one], None),
            [a, b] if a != b => (2u8, pair(*a, *b), Some(xor(a, b))),
            many if many.len() > PLACES_MAX => return Err(RecordError::TooLarge),
            _ => (1u8, Vec::new(), None),
        };
        let mut body = Vec::with_capacity(32 + 16 * (r.places.len() + r.xattrs.len()));
        body.push(if r.adopted { ADOPTED } else { 0 });
        body.push(r.kind as u8);
        body.extend_from_slice(&(r.mode & 0o7777).to_le_bytes());
        body.extend_from_slice(&r.uid.to_le_bytes());
        body.extend_from_slice(&r.gid.to_le_bytes());
        if r.kind.is_device() {
            body.extend_from_slice(&r.rdev.to_le_bytes());
        }
        if r.kind == RecordKind::Symlink {
            body.extend_from_slice(&r.target.ok_or(RecordError::Malformed)?);
        }
        if form == 1 {
            put16(&mut body, r.places.len())?;
            r.places.iter().for_each(|p| body.extend_from_slice(&p.0));
        }
        put16(&mut body, r.xattrs.len())?;
        r.xattrs.iter().for_each(|x| body.extend_from_slice(x));
        let aad = self.aad(&r.id, form, &bound);
        let tag = self.cipher.seal_with_nonce(&r.id[..12], &aad, &mut body);
        let mut out = Vec::with_capacity(33 + body.len() + TAG_LEN);
        out.extend_from_slice(&r.id);
        out.push(form);
        if let Some(x) = xor {
            out.extend_from_slice(&x);
        }
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        if out.len() > RECORD_MAX {
            return Err(RecordError::TooLarge);
        }
        Ok(out)
    }

    /// Open a record found on the inode at place `at`: it must authenticate, and name `at`.
    pub fn open(&self, sealed: &[u8], at: &Place) -> Result<InodeRecord, RecordError> {
        if sealed.len() > RECORD_MAX || sealed.len() < 17 + TAG_LEN {
            return Err(RecordError::Malformed);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&sealed[..16]);
        let form = sealed[16];
        let (bound, rest) = match form {
            0 => (vec![*at], &sealed[17..]),
            1 => (Vec::new(), &sealed[17..]),
            // The other place is the XOR's with this one: wrong if this is neither.
            2 if sealed.len() >= 33 + TAG_LEN => {
                let x: [u8; 16] = sealed[17..33]
                    .try_into()
                    .map_err(|_| RecordError::Malformed)?;
                (pair(*at, Place(xor(&Place(x), at))), &sealed[33..])
            }
            _ => return Err(RecordError::Malformed),
        };
        let mut buf = rest.to_vec();
        let n = self
            .cipher
            .open_in_place(&id[..12], &self.aad(&id, form, &bound), &mut buf)
            .map_err(|_| RecordError::Forged)?;
        buf.truncate(n);
        // Authentic from here on: written by a holder of the write key.
        let r = decode(id, &buf, (form != 1).then_some(bound))?;
        if !r.places.contains(at) {
            return Err(RecordError::Elsewhere);
        }
        Ok(r)
    }
}

/// Two places in one order (lower first), whichever one a reader stands at.
fn pair(a: Place, b: Place) -> Vec<Place> {
    if a <= b {
        vec![a, b]
    } else {
        vec![b, a]
    }
}

fn xor(a: &Place, b: &Place) -> [u8; 16] {
    let mut x = [0u8; 16];
    for (i, o) in x.iter_mut().enumerate() {
        *o = a.0[i] ^ b.0[i];
    }
    x
}

/// Read the sealed fields of an authentic record; `bound` are its places when the AAD bound
/// them (forms 0 and 2), else they are listed in the fields.
fn decode(id: [u8; 16], b: &[u8], bound: Option<Vec<Place>>) -> Result<InodeRecord, RecordError> {
    let mut r = Reader { b, at: 0 };
    let flags = r.take(1)?[0];
    let kind = RecordKind::from_byte(r.take(1)?[0]).ok_or(RecordError::Malformed)?;
    let mode = u16::from_le_bytes(r.array()?);
    let uid = u32::from_le_bytes(r.array()?);
    let gid = u32::from_le_bytes(r.array()?);
    let rdev = match kind.is_device() {
        true => u32::from_le_bytes(r.array()?),
        false => 0,
    };
    let target = match kind == RecordKind::Symlink {
        true => Some(r.array::<16>()?),
        false => None,
    };
    let places = match bound {
        Some(p) => p,
        None => r.list()?.into_iter().map(Place).collect(),
    };
    let xattrs = r.list()?;
    if r.at != b.len() || places.is_empty() || mode > 0o7777 {
        return Err(RecordError::Malformed);
    }
    Ok(InodeRecord {
        id,
        kind,
        mode,
        uid,
        gid,
        rdev,
        target,
        places,
        xattrs,
        adopted: flags & ADOPTED != 0,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or(RecordError::Malformed)?;
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        self.take(N)?.try_into().map_err(|_| RecordError::Malformed)
    }

    fn list(&mut self) -> Result<Vec<[u8; 16]>, RecordError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        (0..n).map(|_| self.array::<16>()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(c: &RecordCodec, places: Vec<Place>) -> InodeRecord {
        InodeRecord {
            id: [7; 16],
            kind: RecordKind::File,
            mode: 0o4755,
            uid: 0,
            gid: 0,
            rdev: 0,
            target: None,
            places: if places.is_empty() {
                vec![c.place(&[1; 16], b"passwd")]
            } else {
                places
            },
            xattrs: vec![],
            adopted: false,
        }
    }

    #[test]
    fn a_record_opens_only_at_its_place_and_fits_an_ext4_inode() {
        let c = RecordCodec::new(&WriteKey::random(), [1; 16]);
        let r = record(&c, vec![]);
        let sealed = c.seal(&r).expect("seal");
        assert_eq!(sealed.len(), 47);
        let here = c.place(&[1; 16], b"passwd");
        assert_eq!(c.open(&sealed, &here).expect("open"), r);
        // Another name, another directory, another store, another key: refused.
        assert_eq!(
            c.open(&sealed, &c.place(&[1; 16], b"shadow")),
            Err(RecordError::Forged)
        );
        assert_eq!(
            c.open(&sealed, &c.place(&[2; 16], b"passwd")),
            Err(RecordError::Forged)
        );
        let other = RecordCodec::new(&WriteKey::random(), [1; 16]);
        assert_eq!(other.open(&sealed, &here), Err(RecordError::Forged));
        // Any byte changed (the id in clear included) fails.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(c.open(&bad, &here).is_err(), "byte {i}");
        }
        // The mode and owner are not in the clear.
        assert!(!sealed.windows(2).any(|w| w == 0o4755u16.to_le_bytes()));
    }

    #[test]
    fn hard_links_name_their_places_and_nothing_else_opens() {
        let c = RecordCodec::new(&WriteKey::random(), [1; 16]);
        let (a, b, z) = (
            c.place(&[1; 16], b"a"),
            c.place(&[2; 16], b"b"),
            c.place(&[3; 16], b"z"),
        );
        // Two names (form 2): still inside an ext4 inode, opened from either name.
        let mut r = record(&c, pair(a, b));
        let sealed = c.seal(&r).expect("seal");
        assert_eq!(sealed.len(), 63);
        assert_eq!(c.open(&sealed, &a).expect("a"), r);
        assert_eq!(c.open(&sealed, &b).expect("b"), r);
        assert_eq!(c.open(&sealed, &z), Err(RecordError::Forged));
        // Three names (form 1), with attributes.
        r.places = vec![a, b, z];
        r.xattrs = vec![[3; 16], [4; 16]];
        let sealed = c.seal(&r).expect("seal");
        for p in [a, b, z] {
            assert_eq!(c.open(&sealed, &p).expect("opens"), r);
        }
        assert_eq!(
            c.open(&sealed, &c.place(&[1; 16], b"c")),
            Err(RecordError::Elsewhere)
        );
    }

    #[test]
    fn every_kind_round_trips_and_symlinks_need_their_target() {
        let c = RecordCodec::new(&WriteKey::random(), [9; 16]);
        let at = c.root_place();
        for kind in [
            RecordKind::File,
            RecordKind::Dir,
            RecordKind::Symlink,
            RecordKind::Fifo,
            RecordKind::Socket,
            RecordKind::Char,
            RecordKind::Block,
        ] {
            let r = InodeRecord {
                id: [kind as u8; 16],
                kind,
                mode: 0o640,
                uid: 1000,
                gid: 100,
                rdev: if kind.is_device() { 0x0801 } else { 0 },
                target: (kind == RecordKind::Symlink).then(|| target_hash(b"x")),
                places: vec![at],
                xattrs: vec![],
                adopted: true,
            };
            let s = c.seal(&r).expect("seal");
            assert!(s.len() <= 64, "{kind:?}: {}", s.len());
            assert_eq!(c.open(&s, &at).expect("open"), r);
            assert_eq!(RecordKind::of_mode(kind.mode_bits()), Some(kind));
        }
        let mut r = record(&c, vec![at]);
        r.kind = RecordKind::Symlink;
        assert_eq!(c.seal(&r), Err(RecordError::Malformed));
        r.places.clear();
        assert_eq!(c.seal(&r), Err(RecordError::Malformed));
    }

    #[test]
    fn garbage_is_refused_without_a_panic() {
        let c = RecordCodec::new(&WriteKey::random(), [1; 16]);
        let at = c.root_place();
        for len in [0, 1, 16, 17, 32, 33, 100, RECORD_MAX + 1] {
            assert!(c.open(&vec![0u8; len], &at).is_err(), "{len}");
        }
        let mut s = c.seal(&record(&c, vec![at])).expect("seal");
        s[16] = 2;
        assert_eq!(c.open(&s, &at), Err(RecordError::Malformed));
    }
}
