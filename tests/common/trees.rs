//! Trees that carry what a system tree carries, and a dump of everything a tree carries, for
//! the suites that copy trees through a mount, `coffer backup` and `coffer restore`.

use std::path::Path;

use super::{s, sh_ok};

/// A tree with what `rsync -aHAX` carries: attributes, ACLs, a capability, symlinks short and
/// 4095 bytes long, a hard link, a directory whose default ACL its files inherit. Every mtime is
/// set in the past: rsync leaves a directory's or symlink's mtime alone when it falls in the
/// second the copy was made, on ext4 as here.
pub fn system_tree(dir: &Path) {
    let d = s(dir);
    sh_ok(&format!(
        "set -e; mkdir -p {d}/etc/app {d}/shared {d}/bin
         printf 'config' > {d}/etc/app/conf
         setfattr -n user.comment -v 'the main config' {d}/etc/app/conf
         setfattr -n user.checksum -v 0x00ff10 {d}/etc/app/conf
         setfacl -m u:1000:rw,g:50:r {d}/etc/app/conf
         setfacl -d -m g:50:rwx {d}/shared
         printf 'inherits' > {d}/shared/doc
         mkdir {d}/shared/sub
         cp /bin/true {d}/bin/pinger
         setcap cap_net_raw+ep {d}/bin/pinger
         ln {d}/etc/app/conf {d}/etc/app/conf.hard
         ln -s ../etc/app/conf {d}/bin/short-link
         ln -s \"$(python3 -c \"print('x/' * 2047 + 'y')\")\" {d}/bin/long-link
         setfattr -n user.dir -v 'on a directory' {d}/etc
         find {d} -mindepth 1 -depth -exec touch -h -m -d '2020-05-06 07:08:09.123456789' {{}} +
         touch -a -d '2001-02-03 04:05:06' {d}/etc/app/conf"
    ));
}

/// What the tools say of a tree (tests/tools/tree-dump.py): every entry's type, mode, owner,
/// times and content or target hash, every attribute of every namespace, getfacl's text.
/// Dumping reads with O_NOATIME, so it leaves the atimes it compares as they were.
pub fn dump(dir: &Path) -> String {
    sh_ok(&format!(
        "python3 '{}/tests/tools/tree-dump.py' '{}'",
        env!("CARGO_MANIFEST_DIR"),
        dir.display()
    ))
}
