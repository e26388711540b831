#!/usr/bin/env python3
"""report.py - formats bench/run.sh's RESULT lines: the side-by-side table, the memory
table and one `name: value` line per figure. Plain Python 3 (no torch needed).

Usage: python3 bench/report.py RESULTS META [--readme bench/README.md]
  RESULTS  lines "LABEL SIDE RESULT NAME seconds=S flops=F rss_mib=M [key=value ...]"
           LABEL = bench.size[.mode], SIDE = stylora | torch
  META     key=value lines (date, machine, load, command)
  --readme replaces the text between "<!-- run.sh:begin -->" and "<!-- run.sh:end -->".
Speedup = torch seconds / stylora seconds. GFLOP/s = the C program's FLOP count (from layer
shapes) / stylora seconds; "of SGEMM" = that / the OpenBLAS SGEMM 1024^3 rate of the same run.
"""
import sys

ORDER = ["lora_train_step", "lora_nf4_train_step", "lora_fp16_train_step", "lora_bf16_train_step", "full_train_step",
         "sample_step", "sample_bf16_step", "vae_decode", "text_encoder"]
SIZES = ["shapes64", "sd15"]
MODES = ["base", "merged", "unmerged"]
MEM_FIELDS = [("base_weight_bytes", "frozen base weights (full: the trainable weights themselves)"), ("param_bytes", "trainable parameters"),
              ("grad_bytes", "gradients"), ("optimizer_state_bytes", "optimizer state (AdamW m, v)"),
              ("activation_bytes", "activations (planned arena)"), ("adapter_cache_bytes", "adapter caches")]
KINDS = {"full_train_step": "full", "lora_train_step": "lora", "lora_nf4_train_step": "lora_nf4",
         "lora_fp16_train_step": "lora_fp16", "lora_bf16_train_step": "lora_bf16"}
KIND_NAMES = {"full": "full", "lora": "LoRA", "lora_nf4": "LoRA + NF4 base", "lora_fp16": "LoRA + fp16 base",
              "lora_bf16": "LoRA + bf16 base"}
NF4_FIELDS = ["nf4_layers", "nf4_weights", "nf4_fp32_bytes", "nf4_bytes", "nf4_tile_bytes", "load_rss_mib",
              "half_weights", "half_bytes", "half_fp32_bytes"]
# stylora-only variants of a step (frozen base in NF4, fp16 or bf16): compared with the fp32
# twin of the same work (the bench it maps to); the table marks those rows "(vs fp32 twin)"
VS_FP32_TWIN = {"lora_nf4_train_step": "lora_train_step", "lora_fp16_train_step": "lora_train_step",
                "lora_bf16_train_step": "lora_train_step", "sample_bf16_step": "sample_step"}


def parse(path):
    rows = {}
    for line in open(path):
        f = line.split()
        if len(f) < 4 or f[2] != "RESULT":
            continue
        label, side, name = f[0], f[1], f[3]
        kv = dict(x.split("=", 1) for x in f[4:] if "=" in x)
        rows.setdefault(label, {})[(side, name)] = kv
    return rows


def num(kv, k):
    try:
        return float(kv[k])
    except (KeyError, TypeError, ValueError):
        return None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def mem_sum(kind, c):
    """The arenas of one step added up; full fine-tuning trains the base weights
    themselves, so its param_bytes are not counted a second time."""
    return sum(num(c, f) or 0 for f, _ in MEM_FIELDS if not (kind == "full" and f == "param_bytes"))


def labels():
    for size in SIZES:
        for b in ORDER:
            if b in ("sample_step", "sample_bf16_step"):
                for m in MODES:
                    yield "%s.%s.%s" % (b, size, m), b, size, m
            else:
                yield "%s.%s" % (b, size), b, size, None


def main():
    a = sys.argv[1:]
    if len(a) < 2:
        sys.exit(__doc__)
    rows, meta = parse(a[0]), dict(l.rstrip("\n").split("=", 1) for l in open(a[1]) if "=" in l)
    readme = a[a.index("--readme") + 1] if "--readme" in a else None
    figs = []
    rates = {}  # the better of the start and end measurements (the machine is shared)
    for lab in ("sgemm", "sgemm_end"):
        for n in ("sgemm_openblas", "sgemm_stylora"):
            kv = rows.get(lab, {}).get(("stylora", n))
            if kv and num(kv, "seconds"):
                rates[n] = max(rates.get(n, 0.0), num(kv, "flops") / num(kv, "seconds") * 1e-9)
    sg_rate = rates.get("sgemm_openblas")
    for n in ("sgemm_openblas", "sgemm_stylora"):
        if n in rates:
            figs.append(("%s_1024_gflops" % n, "%.1f" % rates[n]))

    out = []
    out.append("stylora vs PyTorch %s, %s threads, %s (nproc %s), %s; load average %s at start, %s at end; %s s"
               % (meta.get("torch", "?"), meta.get("threads", "?"), meta.get("cpu", "?"), meta.get("nproc", "?"),
                  meta.get("started", "?"), meta.get("load_start", "?"), meta.get("load_end", "?"),
                  meta.get("wall_s", "?")))
    out.append("command: %s; OpenBLAS SGEMM 1024^3 reference rate: %s GFLOP/s" % (meta.get("command", "?"),
                                                                                   fmt(sg_rate, ".1f")))
    out.append("")
    out.append("| benchmark | stylora s | torch s | speedup | stylora GFLOP/s | of SGEMM | stylora RSS MiB | torch RSS MiB |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    mem = []
    for label, bench, size, mode in labels():
        r = rows.get(label)
        if not r:
            continue
        c = next((kv for (side, n), kv in r.items() if side == "stylora"), None)
        t = next((kv for (side, n), kv in r.items() if side == "torch"), None)
        vs_twin = False
        if not t and bench in VS_FP32_TWIN:
            twin = "%s.%s%s" % (VS_FP32_TWIN[bench], size, "." + mode if mode else "")
            t = next((kv for (side, n), kv in rows.get(twin, {}).items() if side == "torch"), None)
            vs_twin = t is not None
        key = "%s_%s%s" % (bench, size, "_" + mode if mode else "")
        kind = KINDS.get(bench)
        if kind and c:
            mem.append((kind, size, c))
            for fld in [f for f, _ in MEM_FIELDS] + NF4_FIELDS:
                if fld in c:
                    figs.append(("memory_%s_%s_%s" % (kind, size, fld), c[fld]))
            if "optimizer_state_bytes" in c:
                figs.append(("optimizer_state_bytes_%s_%s" % (kind, size), c["optimizer_state_bytes"]))
            if t and "optimizer_state_bytes" in t:
                figs.append(("optimizer_state_bytes_%s_%s_torch" % (kind, size), t["optimizer_state_bytes"]))
        if c and num(c, "planned"):
            continue  # memory plan only, no timing
        cs, ts = (num(c, "seconds") if c else None), (num(t, "seconds") if t else None)
        fl = num(c, "flops") if c else None
        gf = fl / cs * 1e-9 if cs and fl else None
        frac = gf / sg_rate if gf and sg_rate else None
        sp = ts / cs if cs and ts else None
        cr, tr = (num(c, "rss_mib") if c else None), (num(t, "rss_mib") if t else None)
        name = "%s %s%s%s" % (bench, size, " " + mode if mode else "", " (vs fp32 twin)" if vs_twin else "")
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, fmt(cs, ".4g"), fmt(ts, ".4g"), fmt(sp, ".2f"), fmt(gf, ".1f"), fmt(frac, ".2f"),
            fmt(cr, ".0f"), fmt(tr, ".0f")))
        for suffix, v, spec in (("s", cs, ".6g"), ("torch_s", ts, ".6g"), ("speedup_vs_torch", sp, ".3f"),
                                ("gflops", gf, ".2f"), ("sgemm_fraction", frac, ".3f"), ("rss_mib", cr, ".1f"),
                                ("torch_rss_mib", tr, ".1f"),
                                ("rss_ratio_vs_torch", cr / tr if cr and tr else None, ".3f")):
            if v is not None:
                figs.append(("%s_%s" % (key, suffix), format(v, spec)))
        if mode == "merged" and c and "merge_s" in c:
            figs.append(("%s_merge_s" % key, c["merge_s"]))
    if mem:
        mem.sort(key=lambda m: (SIZES.index(m[1]), list(KIND_NAMES).index(m[0])))
        out.append("")
        out.append("Memory of one training step (stylora, bytes from its arenas; \"planned\": computed from the "
                   "shapes, not run):")
        out.append("")
        out.append("| | " + " | ".join("%s %s%s" % (KIND_NAMES[k], s, " (planned)" if num(c, "planned") else "")
                                       for k, s, c in mem) + " |")
        out.append("| --- |" + " ---: |" * len(mem))
        for fld, desc in MEM_FIELDS:
            out.append("| %s | " % desc + " | ".join(
                "%.1f MiB" % (num(c, fld) / 2 ** 20) if num(c, fld) is not None else "-" for _, _, c in mem) + " |")
        out.append("| sum of the above (full: weights counted once) | " + " | ".join(
            "%.1f MiB" % (mem_sum(k, c) / 2 ** 20) for k, _, c in mem) + " |")
        out.append("| peak RSS of the process | " + " | ".join(
            "%.0f MiB" % num(c, "rss_mib") if num(c, "rss_mib") and not num(c, "planned") else "-"
            for _, _, c in mem) + " |")
    text = "\n".join(out)
    print(text)
    print()
    for n, v in figs:
        print("%s: %s" % (n, v))
    if readme:
        src = open(readme).read()
        b, e = "<!-- run.sh:begin -->", "<!-- run.sh:end -->"
        if b not in src or e not in src:
            sys.exit("report.py: %s has no %s ... %s markers" % (readme, b, e))
        block = text + "\n\n```\n" + "\n".join("%s: %s" % f for f in figs) + "\n```\n"
        src = src[:src.index(b) + len(b)] + "\n" + block + src[src.index(e):]
        open(readme, "w").write(src)


if __name__ == "__main__":
    main()
