#!/usr/bin/env -S /usr/bin/python3
"""rng_philox.py - golden values for core/rng.c (tests/test_rng.c).

An independent Python implementation of the stream addressing in core/rng.h
(Philox 4x32-10 blocks, uniform from the top 24 bits, Box-Muller pairs in
double precision). It checks itself against the Random123 known-answer
vectors, then writes tests/data/rng_golden.txt: one header line
"seed stream offset n" followed by n lines "u32 uniform normal" (%.9g).
Run: /usr/bin/python3 tests/reference/rng_philox.py
"""
import math
import os

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox(c, k):
    c, k = list(c), list(k)
    for _ in range(10):
        p0, p1 = M0 * c[0], M1 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK]
        k = [(k[0] + W0) & MASK, (k[1] + W1) & MASK]
    return c


KAT = [  # Random123 kat_vectors, philox4x32_10
    ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([MASK] * 4, [MASK] * 2, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0],
     [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
]


def u32(seed, stream, i):
    b = i >> 2
    w = philox([b & MASK, b >> 32, stream & MASK, stream >> 32], [seed & MASK, seed >> 32])
    return w[i & 3]


def normal(seed, stream, i):
    j = i & ~1
    a, b = u32(seed, stream, j), u32(seed, stream, j + 1)
    u = ((a >> 8) + 1.0) * 2.0 ** -24
    theta = 2.0 * math.pi * ((b >> 8) * 2.0 ** -24)
    r = math.sqrt(-2.0 * math.log(u))
    return r * (math.cos(theta) if i % 2 == 0 else math.sin(theta))


def main():
    for c, k, want in KAT:
        assert philox(c, k) == want, (c, k)
    # Offsets cross a 2^32 block boundary in the counter's low word.
    seed, stream, offset, n = 0x0123456789ABCDEF, 0x00000007FFFFFFFF, (1 << 34) - 6, 37
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "data", "rng_golden.txt")
    with open(out, "w") as f:
        f.write("%d %d %d %d\n" % (seed, stream, offset, n))
        for i in range(n):
            x = u32(seed, stream, offset + i)
            f.write("%u %.9g %.9g\n" % (x, (x >> 8) * 2.0 ** -24, normal(seed, stream, offset + i)))
    print("wrote", out)


if __name__ == "__main__":
    main()
