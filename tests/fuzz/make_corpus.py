#!/usr/bin/env python3
"""make_corpus.py - writes the seed corpora of tests/fuzz/corpus/<target>/ and the
hand-made hostile files of tests/data/regress/ (see tests/test_regress.c for
their naming rule).

Only the standard library (struct, json, zlib): valid minimal examples and
near-misses for each parser. Run from anywhere: python3 tests/fuzz/make_corpus.py
[shared_dir]. Copies a few small shared/golden and tests/data files as seeds.
Inputs the fuzzers found (image_jpeg_dht_*, image_jpeg_huff_*,
image_jpeg_shift_exponent_32.jpg, image_png_slow_chunks.png,
st_metadata_twice.safetensors, tokload_*) are copied by hand, not generated.
"""
import json, os, shutil, struct, sys, zlib

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(os.path.dirname(here))
shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "..", "shared")
C = os.path.join(here, "corpus")


def put(target, name, data):
    d = os.path.join(C, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def copy(target, name, src):
    if os.path.exists(src):
        d = os.path.join(C, target)
        os.makedirs(d, exist_ok=True)
        shutil.copyfile(src, os.path.join(d, name))


def st(tensors, meta=None, raw_header=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    hdr, data = {}, b""
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, dt, shape, b in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = raw_header if raw_header is not None else json.dumps(hdr, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = lambda *v: struct.pack("<%df" % len(v), *v)

# ---- safetensors ----
T = "fuzz_safetensors"
put(T, "f32_2x2", st([("w", "F32", [2, 2], f32(1, 2, 3, 4))]))
put(T, "meta", st([("a", "F32", [1], f32(1))], meta={"format": "pt", "k": "v"}))
put(T, "dtypes", st([("h", "F16", [2], b"\x00\x3c\x00\xc0"), ("b", "BF16", [2], b"\x80\x3f\x00\x40"),
                     ("i", "I64", [1], struct.pack("<q", -5)), ("u", "U8", [3], b"\x01\x02\x03"),
                     ("d", "F64", [1], struct.pack("<d", 0.5)), ("bo", "BOOL", [1], b"\x01")]))
put(T, "scalar_empty", st([("s", "F32", [], f32(7)), ("e", "F32", [0, 3], b"")]))
put(T, "empty_header", st([]))
put(T, "huge_header_len", struct.pack("<Q", 2**64 - 8) + b"{}")
put(T, "header_past_end", struct.pack("<Q", 100) + b"{}")
put(T, "overlap", st([], raw_header=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                   b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}') + b"\0" * 12)
put(T, "past_end", st([], raw_header=b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}') + b"\0" * 8)
put(T, "overflow_shape", st([], raw_header=b'{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}') + b"\0" * 4)
put(T, "bad_dtype", st([], raw_header=b'{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}') + b"\0" * 4)
put(T, "size_mismatch", st([], raw_header=b'{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,4]}}') + b"\0" * 4)
put(T, "dup_name", st([], raw_header=b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}') + b"\0" * 2)
put(T, "neg_offset", st([], raw_header=b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}') + b"\0")
put(T, "not_json", struct.pack("<Q", 4) + b"{\"a\"")

# ---- configs ----
T = "fuzz_config"
for part, fn in [("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"),
                 ("scheduler", "scheduler_config.json")]:
    copy(T, "tiny_" + part, os.path.join(shared, "golden", "tiny-sd1", part, fn))
    copy(T, "sd15_" + part, os.path.join(shared, "sd15", part, fn))
put(T, "wrong_types", '{"block_out_channels": "32", "layers_per_block": 1.5, "in_channels": true, '
                      '"hidden_size": [1], "num_train_timesteps": "x", "beta_schedule": 3}')
put(T, "absurd_sizes", '{"block_out_channels": [1e30, 64], "layers_per_block": 99999999, '
                       '"hidden_size": 1099511627776, "num_hidden_layers": -1, "num_train_timesteps": 1e12, '
                       '"norm_num_groups": 0, "sample_size": 2147483648, "latent_channels": 0}')
put(T, "nested", '{"a": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]], "b": {"c": null}, "trained_betas": [0.1, 0.2]}')
put(T, "infinity", '{"lambda_min_clipped": -Infinity, "beta_start": NaN}')
put(T, "not_object", '[1, 2, 3]')

# ---- tokenizer (encode) ----
T = "fuzz_tokenizer"
for i, s in enumerate([b"a photo of a cat", b"A RED square, 1234 'll wow!!",
                       "caf\u00e9 \u6771\u4eac \U0001F469\u200D\U0001F4BB \u00ad\u03a3\u03a3".encode(),
                       b"<|startoftext|>x<|endoftext|>", b"\xff\xfe bad utf8 \xc0\x80", b"\xed\xa0\x80 surrogate",
                       b"  \t\n\r  ", b"a" * 400]):
    put(T, "p%d" % i, s)

# ---- tokenizer (load) ----
T = "fuzz_tokenizer_load"
def b2u():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, map(chr, cs)))
bu = b2u()
vocab = {bu[b]: b for b in range(256)}
vocab.update({bu[b] + "</w>": 256 + b for b in range(256)})
vocab.update({"re": 512, "red</w>": 513, "<|startoftext|>": 514, "<|endoftext|>": 515})
merges = "#version: 0.2\nr e\nre d</w>\n"
tcfg = '{"model_max_length": 77, "pad_token": "<|endoftext|>", "bos_token": {"content": "<|startoftext|>"}, "unk_token": "<|endoftext|>", "added_tokens_decoder": {"516": {"content": "<new>"}}}'
vj = json.dumps(vocab, ensure_ascii=False)
put(T, "folder", b"\0" + (vj + "\n@@\n" + merges + "\n@@\n" + tcfg).encode())
put(T, "folder_no_cfg", b"\0" + (vj + "\n@@\n" + merges).encode())
put(T, "folder_bad_merge", b"\0" + (vj + "\n@@\n#v\nr\nq z</w>\n\n").encode())
put(T, "folder_bad_ids", b"\0" + ('{"a": -1, "b": 99999999999, "c": "x"}' + "\n@@\n#v\na b\n").encode())
put(T, "bpe_plain", b"\1" + b"#version\nr e\nre d</w>\nt h\nth e</w>\n")
put(T, "bpe_gz", b"\1" + zlib.compress(b"#version\nr e\nre d</w>\n", 9))
put(T, "bpe_empty", b"\1")

# ---- adapters ----
T = "fuzz_adapter"
def rnd(n, s=1):
    return f32(*[((i * 7919 + s) % 13 - 6) / 10 for i in range(n)])
mod = "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
put(T, "kohya", st([("lora_unet_%s.lora_down.weight" % mod, "F32", [2, 32], rnd(64)),
                    ("lora_unet_%s.lora_up.weight" % mod, "F32", [32, 2], rnd(64, 3)),
                    ("lora_unet_%s.alpha" % mod, "F32", [], f32(1))],
                   meta={"ss_network_module": "networks.lora", "ss_network_dim": "2"}))
put(T, "kohya_misfit", st([("lora_unet_%s.lora_down.weight" % mod, "F32", [2, 33], rnd(66)),
                           ("lora_unet_%s.lora_up.weight" % mod, "F32", [32, 2], rnd(64, 3))]))
put(T, "kohya_down_only", st([("lora_unet_%s.lora_down.weight" % mod, "F32", [2, 32], rnd(64))]))
pm = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
put(T, "peft_dora", st([(pm + ".lora_A.weight", "F16", [2, 32], b"\0\x3c" * 64),
                        (pm + ".lora_B.weight", "F16", [32, 2], b"\0\x3c" * 64),
                        (pm + ".lora_magnitude_vector", "F32", [32], rnd(32))],
                       meta={"stylora.lora_alpha": "2", "stylora.use_rslora": "true",
                             "stylora.alpha_pattern": '{"%s": 4}' % pm[5:]}))
put(T, "peft_nan", st([(pm + ".lora_A.weight", "F32", [1, 32], f32(float("nan")) * 32),
                       (pm + ".lora_B.weight", "F32", [32, 1], rnd(32))], meta={"stylora.lora_alpha": "1"}))
cm = "down_blocks_0_resnets_0_conv1"
put(T, "locon", st([("lora_unet_%s.lora_down.weight" % cm, "F32", [2, 32, 3, 3], rnd(576)),
                    ("lora_unet_%s.lora_up.weight" % cm, "F32", [32, 2, 1, 1], rnd(64)),
                    ("lora_unet_%s.alpha" % cm, "F32", [], f32(2))]))
put(T, "old_diffusers", st([("down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight", "F32", [2, 32], rnd(64)),
                            ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight", "F32", [32, 2], rnd(64))]))
put(T, "te", st([("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", "F32", [1, 4], rnd(4)),
                 ("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", "F32", [4, 1], rnd(4))]))
copy(T, "golden_peft", os.path.join(shared, "golden", "tiny-sd1", "lora", "pytorch_lora_weights.safetensors"))
put(T, "no_tensors", st([("something_else", "F32", [1], f32(0))]))

# ---- images ----
T = "fuzz_image"
def png(w, h, ctype, rows, extra=b""):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    bpp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)) + extra +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
put(T, "png_rgb", png(4, 3, 2, [bytes(range(12))] * 3))
put(T, "png_rgba_text", png(2, 2, 6, [bytes(range(8))] * 2, chunk(b"tEXt", b"parameters\0a cat") +
                        chunk(b"zTXt", b"k\0\0" + zlib.compress(b"v" * 20)) + chunk(b"iTXt", b"x\0\0\0\0\0caf\xc3\xa9")))
put(T, "png_gray", png(3, 1, 0, [b"\0\x80\xff"]))
put(T, "png_pal", png(2, 1, 3, [b"\0\1"], chunk(b"PLTE", b"\xff\0\0\0\xff\0") + chunk(b"tRNS", b"\x80")))
put(T, "png_huge", png(100000, 100000, 2, [b""]))
put(T, "png_trunc", png(4, 3, 2, [bytes(range(12))] * 3)[:60])
put(T, "ppm", b"P6 2 2 255\n" + bytes(range(12)))
put(T, "pgm_huge", b"P5 65536 65536 255\n\0\0\0")
for n in ["image_alpha.gif", "image_opaque.gif", "image_baseline.jpg", "image_gray.jpg", "image_progressive.jpg"]:
    copy(T, n, os.path.join(repo, "tests", "data", n))
jpg = open(os.path.join(repo, "tests", "data", "image_baseline.jpg"), "rb").read()
put(T, "jpg_trunc", jpg[:len(jpg) // 2])
put(T, "jpg_huge_sof", jpg[:2] + b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01")
print("corpus written to", C)

# ---- hand-made hostile files for tests/test_regress.c (tests/data/regress/) ----
R = os.path.join(repo, "tests", "data", "regress")
os.makedirs(R, exist_ok=True)
def reg(name, data):
    with open(os.path.join(R, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
def patched(part, fn, key, value):
    cfg = json.load(open(os.path.join(shared, "golden", "tiny-sd1", part, fn)))
    cfg[key] = value
    return json.dumps(cfg, indent=1)
# one wrong type and one absurd size per model config parser; the name says the key
for kind, part, fn, cases in [
    ("unet", "unet", "config.json", [("layers_per_block", "2"), ("block_out_channels", [32, 1e12]),
                                     ("cross_attention_dim", -4), ("in_channels", 1099511627776),
                                     ("norm_num_groups", 7), ("down_block_types", "DownBlock2D"),
                                     ("attention_head_dim", 0), ("sample_size", 1e300)]),
    ("vae", "vae", "config.json", [("latent_channels", 0), ("block_out_channels", "32,64"),
                                   ("layers_per_block", 1e9), ("norm_num_groups", 5),
                                   ("scaling_factor", "0.18"), ("in_channels", -3)]),
    ("clip", "text_encoder", "config.json", [("hidden_size", 1099511627776), ("num_attention_heads", 7),
                                             ("intermediate_size", "big"), ("vocab_size", -5),
                                             ("num_hidden_layers", 1e6), ("max_position_embeddings", 0),
                                             ("hidden_act", "relu6"), ("layer_norm_eps", "tiny")]),
    ("sched", "scheduler", "scheduler_config.json", [("num_train_timesteps", "1000"), ("beta_start", [1]),
                                                     ("num_train_timesteps", 1e12), ("beta_schedule", 3),
                                                     ("trained_betas", "x"), ("prediction_type", "noise"),
                                                     ("steps_offset", -7)]),
]:
    for key, val in cases:
        reg("config_%s_%s__%s.json" % (kind, "type" if isinstance(val, (str, list)) and not isinstance(val, bool) else "size", key),
            patched(part, fn, key, val))
for kind in ["unet", "vae", "clip", "sched"]:
    reg("config_%s_not_object.json" % kind, "[1,2]")
    reg("config_%s_truncated.json" % kind, '{"in_channels": 4, "block_')
    reg("config_%s_binary.json" % kind, b"\x00\xff\xfe{}")
# safetensors not covered by tests/test_safetensors.c
reg("st_offsets_float.safetensors", st([], raw_header=b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1e20]}}') + b"\0")
reg("st_shape_float.safetensors", st([], raw_header=b'{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}') + b"\0")
reg("st_shape_9dims.safetensors", st([], raw_header=b'{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}') + b"\0")
reg("st_header_len_2e64.safetensors", struct.pack("<Q", 2**64 - 1) + b"{}      ")
reg("st_header_len_wraps.safetensors", struct.pack("<Q", 2**64 - 7) + b"{}      ")
reg("st_offsets_3.safetensors", st([], raw_header=b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}') + b"\0")
reg("st_name_empty_dtype_obj.safetensors", st([], raw_header=b'{"":{"dtype":{"x":1},"shape":[1],"data_offsets":[0,1]}}') + b"\0")
# images: huge declared sizes and truncations
reg("image_png_huge_declared.png", png(100000, 100000, 2, [b""]))
reg("image_png_2e31.png", png(2**31 - 1, 2**31 - 1, 6, [b""]))
reg("image_png_zero_width.png", png(0, 5, 2, [b""]))
reg("image_pgm_huge.pgm", b"P5 65536 65536 255\n\0\0\0")
reg("image_jpg_huge_sof.jpg", jpg[:2] + b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01")
reg("image_jpg_trunc_header.jpg", jpg[:40])
reg("image_jpg_trunc_scan.jpg", jpg[:len(jpg) - 100])
reg("image_gif_trunc.gif", open(os.path.join(repo, "tests", "data", "image_alpha.gif"), "rb").read()[:30])
reg("image_bmp_huge.bmp", b"BM" + struct.pack("<IHHIIiiHHIIiiII", 0, 0, 0, 54, 40, 1000000, 1000000, 1, 24, 0, 0, 0, 0, 0, 0))
reg("image_text_not_image.png", b"hello, I am not an image")
# An 8x8 baseline JPEG whose scan runs out of bits exactly inside a magnitude: DC code
# '0' (symbol 15) + 15 bits leave 16, a 16-bit AC code (run 0, size 8) leaves 0, and the
# 8 magnitude bits hit a marker (RST0, then EOI). Debian's stb 2.27 took them anyway
# (code_bits -8) and shifted by 32 at the next refill; stb 2.28 returns 0s, then the
# stray RST0 is an "unknown marker" error.
def jseg(m, body):
    return b"\xff" + bytes([m]) + struct.pack(">H", len(body) + 2) + body
reg("image_jpeg_code_bits_negative.jpg", b"\xff\xd8" + jseg(0xdb, b"\0" + b"\1" * 64) +
    jseg(0xc0, b"\x08" + struct.pack(">HH", 8, 8) + b"\x01\x01\x11\x00") +
    jseg(0xc4, b"\x00" + bytes([1] + [0] * 15) + b"\x0f") +
    jseg(0xc4, b"\x10" + bytes([1] + [0] * 14 + [1]) + b"\x00\x08") +
    jseg(0xda, b"\x01\x01\x00\x00\x3f\x00") + b"\0\0\x80\0" + b"\xff\xd0\xff\xd9")
# adapters whose shapes do not fit the tiny U-Net
reg("adapter_kohya_wrong_in.safetensors", open(os.path.join(C, "fuzz_adapter", "kohya_misfit"), "rb").read())
reg("adapter_kohya_wrong_rank.safetensors", st([("lora_unet_%s.lora_down.weight" % mod, "F32", [2, 32], rnd(64)),
                                               ("lora_unet_%s.lora_up.weight" % mod, "F32", [32, 3], rnd(96))]))
reg("adapter_peft_unknown_module.safetensors", st([("unet.down_blocks.7.attentions.0.proj_in.lora_A.weight", "F32", [1, 32], rnd(32)),
                                                   ("unet.down_blocks.7.attentions.0.proj_in.lora_B.weight", "F32", [32, 1], rnd(32))],
                                                  meta={"stylora.lora_alpha": "1"}))
reg("adapter_locon_on_linear.safetensors", st([("lora_unet_%s.lora_down.weight" % mod, "F32", [2, 32, 3, 3], rnd(576)),
                                              ("lora_unet_%s.lora_up.weight" % mod, "F32", [32, 2, 1, 1], rnd(64))]))
reg("adapter_dora_wrong_mag.safetensors", st([(pm + ".lora_A.weight", "F32", [2, 32], rnd(64)),
                                             (pm + ".lora_B.weight", "F32", [32, 2], rnd(64)),
                                             (pm + ".lora_magnitude_vector", "F32", [31], rnd(31))],
                                            meta={"stylora.lora_alpha": "2"}))
reg("adapter_nan.safetensors", open(os.path.join(C, "fuzz_adapter", "peft_nan"), "rb").read())
reg("adapter_down_only.safetensors", open(os.path.join(C, "fuzz_adapter", "kohya_down_only"), "rb").read())
reg("adapter_no_tensors.safetensors", open(os.path.join(C, "fuzz_adapter", "no_tensors"), "rb").read())
reg("adapter_not_safetensors.safetensors", b"PK\x03\x04 a zip pickle")
print("regress files written to", R)
