#!/usr/bin/env python3
"""The writer of tools/crashtest.sh, and its checker.

  crash-writer.py write DIR LOG SEED    random creates, writes at random offsets, truncates,
                                        renames and fsyncs in DIR until an operation fails
                                        (the mount's daemon was killed); every step is logged
                                        to LOG before it is made, and every completed fsync
                                        after, with the file's length and SHA-256
  crash-writer.py check DIR LOG         after a remount: every file whose last logged step
                                        is a completed fsync must hold exactly those bytes;
                                        every other file must read whole or fail with EIO
                                        (which fsck must then report). Prints
                                        "synced N dirty N unreadable N"; exit 1 on a mismatch

LOG lives outside the mount, so it survives the daemon; its lines are flushed before each
step is taken, so a step the kill interrupted is always logged as dirty.
"""

import errno
import hashlib
import os
import random
import sys


def write(d, log_path, seed):
    rng = random.Random(seed)
    # The log first: the kill may come before the writer has done anything at all.
    log = open(log_path, "a", buffering=1)
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        log.write("STOP mkdir %s\n" % errno.errorcode.get(e.errno, e.errno))
        return 0
    model = {}  # name -> bytearray
    serial = 0

    def note(*words):
        log.write(" ".join(str(w) for w in words) + "\n")
        log.flush()

    def data(n):
        return rng.randbytes(n)

    while True:
        names = sorted(model)
        op = rng.choices(
            ["create", "write", "truncate", "rename", "fsync", "fsyncdir"],
            weights=[3 if len(names) < 12 else 0, 6, 1, 1, 4, 1],
        )[0]
        if not names and op != "create":
            op = "create"
        try:
            if op == "create":
                serial += 1
                name = "f%03d" % serial
                body = data(rng.choice([0, 1, 4095, 4096, 4097, rng.randrange(1, 300_000)]))
                note("DIRTY", name)
                with open(os.path.join(d, name), "wb") as f:
                    f.write(body)
                model[name] = bytearray(body)
            elif op == "write":
                name = rng.choice(names)
                cur = model[name]
                off = rng.randrange(0, len(cur) + 8192)
                body = data(rng.choice([1, 100, 4096, rng.randrange(1, 70_000)]))
                note("DIRTY", name)
                fd = os.open(os.path.join(d, name), os.O_WRONLY)
                try:
                    os.pwrite(fd, body, off)
                finally:
                    os.close(fd)
                if off > len(cur):
                    cur.extend(b"\0" * (off - len(cur)))
                cur[off : off + len(body)] = body
            elif op == "truncate":
                name = rng.choice(names)
                cur = model[name]
                n = rng.randrange(0, len(cur) + 5000)
                note("DIRTY", name)
                os.truncate(os.path.join(d, name), n)
                if n < len(cur):
                    del cur[n:]
                else:
                    cur.extend(b"\0" * (n - len(cur)))
            elif op == "rename":
                a = rng.choice(names)
                serial += 1
                b = "f%03d" % serial
                note("DIRTY", a)
                note("DIRTY", b)
                os.rename(os.path.join(d, a), os.path.join(d, b))
                note("GONE", a)
                model[b] = model.pop(a)
            elif op == "fsync":
                name = rng.choice(names)
                fd = os.open(os.path.join(d, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                cur = bytes(model[name])
                note("SYNC", name, len(cur), hashlib.sha256(cur).hexdigest())
            else:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            note("STOP", op, errno.errorcode.get(e.errno, e.errno))
            return 0


def check(d, log_path):
    last = {}
    # No log: the daemon died before the writer started, so nothing was written.
    lines = open(log_path) if os.path.exists(log_path) else []
    for line in lines:
        w = line.split()
        if not w or w[0] == "STOP":
            continue
        last[w[1]] = w
    synced = dirty = unreadable = 0
    bad = []
    for name, w in sorted(last.items()):
        p = os.path.join(d, name)
        if w[0] == "SYNC":
            synced += 1
            try:
                body = open(p, "rb").read()
            except OSError as e:
                bad.append("%s: fsynced, but reading it failed: %s" % (name, e))
                continue
            if len(body) != int(w[2]) or hashlib.sha256(body).hexdigest() != w[3]:
                bad.append("%s: fsynced as %s bytes, reads as %d other bytes" % (name, w[2], len(body)))
        elif w[0] == "DIRTY":
            dirty += 1
            try:
                open(p, "rb").read()
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EIO:
                    bad.append("%s: unsynced, and reading it failed with %s, not EIO" % (name, e))
                unreadable += 1
    for b in bad:
        print("crash-writer: " + b, file=sys.stderr)
    print("synced %d dirty %d unreadable %d" % (synced, dirty, unreadable))
    return 1 if bad else 0


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "write":
        sys.exit(write(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    if len(sys.argv) >= 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
