#!/usr/bin/env python3
"""Writes and reads a block device with O_DIRECT vectored I/O whose pieces cross page
boundaries inside one huge page (hugetlbfs, MAP_HUGETLB): a request of N such pieces has N
multi-page segments, 2N single-page ones (the shape a VM guest's I/O takes through QEMU
cache=none). Each piece is PIECE bytes starting PIECE/2 before a page boundary, one piece per
page pair, so no two pieces are contiguous.

  iovec.py write DEV OFFSET N SEED   one pwritev of N pieces at byte OFFSET
  iovec.py read  DEV OFFSET N SEED   one preadv of N pieces; the data must be SEED's pattern
  iovec.py check DEV OFFSET N SEED   a plain aligned read; the data must be SEED's pattern
  iovec.py zero  DEV OFFSET N        one preadv of N pieces; the data must be zero

Exit 0 when the I/O succeeded (and the data matched), 1 on a mismatch, 2 on an I/O error.
"""
import mmap
import os
import random
import sys

PIECE = 1024
PAGE = 4096
HUGE = 2 << 20
MAP_HUGETLB = 0x40000


def pattern(seed, n):
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n * PIECE))


def pieces(buf, n):
    """Views of N pieces, each crossing a page boundary of the huge page."""
    mv = memoryview(buf)
    out = []
    for i in range(n):
        start = (2 * i + 1) * PAGE - PIECE // 2
        out.append(mv[start:start + PIECE])
    return out


def huge_buffer(n):
    need = 2 * n * PAGE + PAGE
    size = (need + HUGE - 1) // HUGE * HUGE
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB)


def main():
    op, dev, offset, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    buf = huge_buffer(n)
    views = pieces(buf, n)
    want = pattern(seed, n) if op != "zero" else bytes(n * PIECE)
    try:
        if op == "write":
            for i, v in enumerate(views):
                v[:] = want[i * PIECE:(i + 1) * PIECE]
            done = os.pwritev(fd, views, offset)
            if done != n * PIECE:
                print(f"short write: {done} of {n * PIECE} bytes")
                return 2
            return 0
        if op in ("read", "zero"):
            done = os.preadv(fd, views, offset)
            got = b"".join(bytes(v) for v in views)
        elif op == "check":
            plain = mmap.mmap(-1, (n * PIECE + PAGE - 1) // PAGE * PAGE)
            done = os.preadv(fd, [memoryview(plain)[:n * PIECE]], offset)
            got = bytes(plain[:n * PIECE])
        else:
            print(f"unknown operation {op}")
            return 2
    except OSError as e:
        print(f"{op} of {n} pieces at {offset}: {e}")
        return 2
    if done != n * PIECE or got != want:
        bad = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), len(got))
        print(f"{op} of {n} pieces at {offset}: {done} bytes, first difference at byte {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
