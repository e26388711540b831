#!/usr/bin/env -S /usr/bin/python3
"""nf4_ref.py - bitsandbytes' NF4 constants and a torch re-statement of quantize_4bit.

Re-states (facts only) from bitsandbytes-foundation/bitsandbytes:
  * bitsandbytes/functional.py create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    the 256-entry "dynamic" map used to double-quantize absmax (compress_statistics);
  * NF4 code book (functional.py get_4bit_type('nf4'), csrc/kernels.cu dQuantizeNF4 / d_nf4);
  * quantize_4bit: blocks of 64 of the flattened tensor, absmax per block, x * (1/absmax)
    mapped to the nearest code (dQuantizeNF4's thresholds are the midpoints), first element
    in the high nibble; compress_statistics: offset = absmax.mean(), absmax -= offset,
    quantize_blockwise(absmax, code=dynamic, blocksize=256).
Usage: /usr/bin/python3 tests/reference/nf4_ref.py cmap   -> prints the dynamic map as C
       /usr/bin/python3 tests/reference/nf4_ref.py golden -> writes tests/data/nf4_golden.bin
"""
import struct, sys, os
import torch

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
       0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def quant_nf4(w):
    code = torch.tensor(NF4, dtype=torch.float32)
    flat = w.reshape(-1).float()
    n = flat.numel()
    nb = (n + 63) // 64
    pad = torch.zeros(nb * 64)
    pad[:n] = flat
    blk = pad.view(nb, 64)
    absmax = blk.abs().amax(dim=1)
    inv = 1.0 / absmax
    x = blk * inv[:, None]
    mids = (code[1:] + code[:-1]) / 2
    q = torch.bucketize(x, mids, right=False).to(torch.uint8).reshape(-1)[: (n + 1) // 2 * 2]
    packed = (q[0::2] << 4) | q[1::2]
    return packed, absmax


def main():
    if sys.argv[1] == "cmap":
        m = dynamic_map()
        for i in range(0, 256, 4):
            print("    " + " ".join("%.9gf," % v for v in m[i:i + 4].tolist()))
        return
    torch.manual_seed(0)
    O, I = 7, 83  # I not a multiple of 64, odd element count
    w = torch.randn(O, I) * 0.05
    packed, absmax = quant_nf4(w)
    off = absmax.mean()
    a = absmax - off
    dyn = dynamic_map()
    nb2 = (a.numel() + 255) // 256
    out = os.path.join(os.path.dirname(__file__), "..", "data", "nf4_golden.bin")
    with open(out, "wb") as f:
        f.write(struct.pack("<ii", O, I))
        f.write(w.numpy().astype("<f4").tobytes())
        f.write(packed.numpy().tobytes())
        f.write(absmax.numpy().astype("<f4").tobytes())
        f.write(struct.pack("<f", float(off)))
        f.write(dyn.numpy().astype("<f4").tobytes())
    print("wrote", out, O, I, nb2)


if __name__ == "__main__":
    main()
