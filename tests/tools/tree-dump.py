#!/usr/bin/env python3
"""Print what a tree carries, in a stable order, without changing it.

For every entry below the given directory: type, mode, owner, size, mtime, atime (files),
every extended attribute of every namespace (hex), the content's SHA-256 (read with
O_NOATIME, so dumping a tree leaves its atimes as they were) or the link target's; then
getfacl's own text for every entry that is not a symlink. Two trees that print the same
carry the same things.
"""
import hashlib
import os
import stat
import subprocess
import sys


def entries(root):
    out = []
    for base, dirs, files in os.walk(root):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(base, n), root))
    return sorted(out)


def content_hash(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME | os.O_NOFOLLOW)
    h = hashlib.sha256()
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def describe(root, rel):
    p = os.path.join(root, rel)
    st = os.lstat(p)
    kind = stat.S_IFMT(st.st_mode)
    lines = [f"{rel} type={kind:o} mode={stat.S_IMODE(st.st_mode):o} "
             f"owner={st.st_uid}:{st.st_gid} mtime={st.st_mtime_ns}"]
    if stat.S_ISREG(kind):
        lines.append(f"{rel} size={st.st_size} atime={int(st.st_atime)} sha256={content_hash(p)}")
    elif stat.S_ISLNK(kind):
        target = os.readlink(p)
        lines.append(f"{rel} len={len(target)} target-sha256="
                     f"{hashlib.sha256(os.fsencode(target)).hexdigest()}")
    for name in sorted(os.listxattr(p, follow_symlinks=False)):
        value = os.getxattr(p, name, follow_symlinks=False)
        lines.append(f"{rel} xattr {name}=0x{value.hex()}")
    return lines, not stat.S_ISLNK(kind)


def main(root):
    acl_paths = []
    for rel in entries(root):
        lines, has_acl = describe(root, rel)
        print("\n".join(lines))
        if has_acl:
            acl_paths.append(rel)
    if acl_paths:
        acls = subprocess.run(["getfacl", "-p", "-n", "--"] + acl_paths, cwd=root,
                              check=True, capture_output=True, text=True).stdout
        print("\n".join(l for l in acls.splitlines() if l))


if __name__ == "__main__":
    main(sys.argv[1])
