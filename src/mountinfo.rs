//! /proc/self/mountinfo, as proc(5) describes it: one mount per line; field 3 is the device
//! ("major:minor"), field 5 the mount point; after the "-" separator come the file system type
//! and the source. Space, tab, newline and backslash in paths are written as \ooo.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

pub struct Mount {
    pub device: String,
    pub point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// The mounts this process sees, in mount order (a later mount on a path covers earlier ones).
pub fn mounts() -> Vec<Mount> {
    std::fs::read("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let sep = f.iter().position(|x| *x == b"-")?;
            let text = |b: &[u8]| String::from_utf8_lossy(&unescape(b)).into_owned();
            Some(Mount {
                device: text(f.get(2)?),
                point: PathBuf::from(OsString::from_vec(unescape(f.get(4)?))),
                fstype: text(f.get(sep + 1)?),
                source: text(f.get(sep + 2)?),
            })
        })
        .collect()
}

fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4);
        match octal {
            Some(o) if b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)) => {
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_escaped_points_and_sources() {
        let info = b"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
            61 22 0:53 / /mnt/a\\040b rw shared:1 - fuse coffer:/srv/s\\134x rw\n\
            62 22 0:54 / /mnt/\xff rw - fuse.x src rw\n";
        let m = parse(info);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].device, "0:53");
        assert_eq!(m[1].point, PathBuf::from("/mnt/a b"));
        assert_eq!(m[1].fstype, "fuse");
        assert_eq!(m[1].source, "coffer:/srv/s\\x");
        assert_eq!(
            m[2].point,
            PathBuf::from(OsString::from_vec(b"/mnt/\xff".to_vec()))
        );
    }
}
