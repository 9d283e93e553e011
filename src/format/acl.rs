//! POSIX ACLs in the form the kernel hands a filesystem (`system.posix_acl_access` and
//! `system.posix_acl_default`): `version u32 = 2`, then entries of `tag u16 | perm u16 |
//! id u32`, little-endian. coffer stores them like any other attribute (sealed), and does here
//! what a Linux filesystem does with them: inherit a directory's default ACL on create, keep
//! the ACL and the mode bits in step on chmod and on setting an ACL.

pub const ACCESS: &str = "system.posix_acl_access";
pub const DEFAULT: &str = "system.posix_acl_default";

const VERSION: u32 = 2;
pub const USER_OBJ: u16 = 0x01;
pub const USER: u16 = 0x02;
pub const GROUP_OBJ: u16 = 0x04;
pub const GROUP: u16 = 0x08;
pub const MASK: u16 = 0x10;
pub const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(pub Vec<Entry>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid POSIX ACL")]
pub struct BadAcl;

impl Acl {
    pub fn parse(b: &[u8]) -> Result<Acl, BadAcl> {
        if b.len() < 4 || !(b.len() - 4).is_multiple_of(8) {
            return Err(BadAcl);
        }
        if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != VERSION {
            return Err(BadAcl);
        }
        let entries = b[4..]
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let acl = Acl(entries);
        match acl.valid() {
            true => Ok(acl),
            false => Err(BadAcl),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    /// One each of USER_OBJ, GROUP_OBJ and OTHER, a MASK when there are named entries, and
    /// known tags and permissions only.
    fn valid(&self) -> bool {
        let count = |t: u16| self.0.iter().filter(|e| e.tag == t).count();
        let named = count(USER) + count(GROUP);
        let known = self.0.iter().all(|e| {
            e.perm & !7 == 0 && [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER].contains(&e.tag)
        });
        known
            && count(USER_OBJ) == 1
            && count(GROUP_OBJ) == 1
            && count(OTHER) == 1
            && count(MASK) <= 1
            && (named == 0 || count(MASK) == 1)
    }

    /// Whether the ACL says no more than the mode bits (three entries): then no ACL is kept.
    pub fn is_minimal(&self) -> bool {
        self.0.len() == 3
    }

    fn entry(&mut self, tag: u16) -> Option<&mut Entry> {
        self.0.iter_mut().find(|e| e.tag == tag)
    }

    /// The permission bits (0o777) the ACL gives the owner, the group class and others.
    pub fn mode_bits(&self) -> u32 {
        let perm = |t: u16| self.0.iter().find(|e| e.tag == t).map(|e| e.perm as u32);
        let group = perm(MASK).or(perm(GROUP_OBJ)).unwrap_or(0);
        (perm(USER_OBJ).unwrap_or(0) << 6) | (group << 3) | perm(OTHER).unwrap_or(0)
    }

    /// After chmod: owner, group class (the mask, or the owning group without one) and other
    /// entries take the new mode's bits (what Linux's posix_acl_chmod does).
    pub fn chmod(&mut self, mode: u32) {
        let bits = |shift: u32| ((mode >> shift) & 7) as u16;
        if let Some(e) = self.entry(USER_OBJ) {
            e.perm = bits(6);
        }
        if self.entry(MASK).is_some() {
            if let Some(e) = self.entry(MASK) {
                e.perm = bits(3);
            }
        } else if let Some(e) = self.entry(GROUP_OBJ) {
            e.perm = bits(3);
        }
        if let Some(e) = self.entry(OTHER) {
            e.perm = bits(0);
        }
    }

    /// A new inode's access ACL from its directory's default ACL, and its mode (the mode asked
    /// for, limited by the ACL; no umask applies). Returns the ACL only when it says more
    /// than the mode bits (Linux's posix_acl_create).
    pub fn inherit(&self, mode: u32) -> (Option<Acl>, u32) {
        let mut acl = self.clone();
        let mut m = mode & 0o777;
        if let Some(e) = acl.entry(USER_OBJ) {
            e.perm &= ((m >> 6) & 7) as u16;
            m &= ((e.perm as u32) << 6) | !0o700;
        }
        if let Some(e) = acl.entry(OTHER) {
            e.perm &= (m & 7) as u16;
            m &= (e.perm as u32) | !0o007;
        }
        let group_tag = if acl.entry(MASK).is_some() {
            MASK
        } else {
            GROUP_OBJ
        };
        if let Some(e) = acl.entry(group_tag) {
            e.perm &= ((m >> 3) & 7) as u16;
            m &= ((e.perm as u32) << 3) | !0o070;
        }
        let mode = (mode & !0o777) | m;
        match acl.is_minimal() {
            true => (None, mode),
            false => (Some(acl), mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> Entry {
        Entry { tag, perm, id }
    }

    #[test]
    fn parse_encode_and_validity() {
        let acl = Acl(vec![
            e(USER_OBJ, 7, 0),
            e(USER, 5, 1000),
            e(GROUP_OBJ, 5, 0),
            e(MASK, 5, 0),
            e(OTHER, 0, 0),
        ]);
        assert_eq!(Acl::parse(&acl.encode()), Ok(acl.clone()));
        assert_eq!(acl.mode_bits(), 0o750);
        assert!(!acl.is_minimal());
        // A named entry without a mask, a second owner entry, a bad version: refused.
        let no_mask = Acl(vec![
            e(USER_OBJ, 7, 0),
            e(USER, 5, 1),
            e(GROUP_OBJ, 5, 0),
            e(OTHER, 0, 0),
        ]);
        assert_eq!(Acl::parse(&no_mask.encode()), Err(BadAcl));
        let mut v1 = acl.encode();
        v1[0] = 1;
        assert_eq!(Acl::parse(&v1), Err(BadAcl));
        assert_eq!(Acl::parse(&v1[..7]), Err(BadAcl));
    }

    #[test]
    fn chmod_and_inherit_as_linux_does() {
        let mut acl = Acl(vec![
            e(USER_OBJ, 7, 0),
            e(GROUP, 7, 50),
            e(GROUP_OBJ, 5, 0),
            e(MASK, 7, 0),
            e(OTHER, 5, 0),
        ]);
        acl.chmod(0o640);
        assert_eq!(acl.mode_bits(), 0o640);
        // The named group keeps its own entry; the mask limits it.
        assert_eq!(acl.0[1].perm, 7);
        assert_eq!(acl.0[3].perm, 4);
        // setfacl -d -m g:50:rwx on a directory, then `touch f` (mode 0666): f gets the ACL
        // with mask rw-, and mode 0660 where other was r-x in the default.
        let default = Acl(vec![
            e(USER_OBJ, 7, 0),
            e(GROUP, 7, 50),
            e(GROUP_OBJ, 5, 0),
            e(MASK, 7, 0),
            e(OTHER, 0, 0),
        ]);
        let (a, mode) = default.inherit(0o100666);
        let a = a.expect("an extended ACL");
        assert_eq!(mode, 0o100660);
        assert_eq!(a.mode_bits(), 0o660);
        assert_eq!(a.0[3].perm, 6, "mask limited by the mode asked for");
        // A minimal default ACL gives a mode only.
        let minimal = Acl(vec![e(USER_OBJ, 7, 0), e(GROUP_OBJ, 5, 0), e(OTHER, 5, 0)]);
        assert_eq!(minimal.inherit(0o40777), (None, 0o40755));
    }
}
