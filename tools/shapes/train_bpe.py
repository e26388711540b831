#!/usr/bin/env -S /usr/bin/python3
"""train_bpe.py - learns a byte-level BPE in CLIP's format from the scene captions.

Usage: /usr/bin/python3 tools/shapes/train_bpe.py OUT_DIR [--merges N] [--captions N] [--seed S]
Writes OUT_DIR/{vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json}:
  vocab.json: CLIP layout - the 256 bytes_to_unicode symbols, the same with "</w>", one entry
    per merge (in merge order), then <|startoftext|>, <|endoftext|> (the two largest ids).
  merges.txt: "#version: 0.2" then one "a b" pair per line, rank = line order.
Words are pre-tokenized exactly as CLIPTokenizer does (clean-up, lower case, CLIP's regex,
"</w>" on the last symbol) using tests/reference/clip_tokenizer_ref.py, counted over a seeded
caption corpus (tools/shapes/scene.py) only (so style trigger words split into rare pieces), and merged greedily by
pair frequency (ties: the lexicographically smallest pair) until N merges or no pair occurs
twice. Deterministic for a seed.
"""
import argparse
import collections
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import clip_tokenizer_ref as ctr  # noqa: E402
import scene  # noqa: E402

SPECIAL_MAP = {
    "bos_token": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                  "single_word": False},
    "eos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                  "single_word": False},
    "pad_token": "<|endoftext|>",
    "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                  "single_word": False},
}


def word_counts(texts):
    table = ctr.byte_table()
    pat = ctr.regex.compile(ctr.PATTERN, ctr.regex.IGNORECASE)
    counts = collections.Counter()
    for t in texts:
        for w in pat.findall(ctr.basic_clean(t)):
            sym = [table[b] for b in w.encode("utf-8")]
            sym[-1] += "</w>"
            counts[tuple(sym)] += 1
    return counts


def learn(counts, n_merges):
    words = {w: c for w, c in counts.items()}
    merges = []
    while len(merges) < n_merges:
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if best[1] < 2:
            break
        (a, b) = best[0]
        merges.append((a, b))
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    return merges


def corpus(n, seed):
    return [c for _, c in scene.make_dataset(n, seed)]


def write(out_dir, merges):
    os.makedirs(out_dir, exist_ok=True)
    table = ctr.byte_table()
    syms = [table[b] for b in range(256)]
    vocab_list = syms + [s + "</w>" for s in syms] + [a + b for a, b in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab_list)) == len(vocab_list), "duplicate vocabulary entry"
    vocab = {t: i for i, t in enumerate(vocab_list)}
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write("%s %s\n" % (a, b))
    cfg = {"add_prefix_space": False, "bos_token": dict(SPECIAL_MAP["bos_token"], __type="AddedToken"),
           "clean_up_tokenization_spaces": True, "do_lower_case": True,
           "eos_token": dict(SPECIAL_MAP["eos_token"], __type="AddedToken"), "errors": "replace",
           "model_max_length": 77, "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer",
           "unk_token": dict(SPECIAL_MAP["unk_token"], __type="AddedToken")}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump(SPECIAL_MAP, f, indent=2)
        f.write("\n")
    return len(vocab_list)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--merges", type=int, default=300)
    ap.add_argument("--captions", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    texts = corpus(a.captions, a.seed)
    merges = learn(word_counts(texts), a.merges)
    n = write(a.out_dir, merges)
    tok = ctr.Tok(a.out_dir)
    lens = [tok.encode(t)[1] for t in texts[:2000]]
    unk = sum(tok.encode(t)[0].count(tok.unk) - (77 - tok.encode(t)[1]) - 1 for t in texts[:200])
    print("vocab %d entries (%d merges); caption length %d..%d tokens incl. BOS/EOS; extra eos ids %d"
          % (n, len(merges), min(lens), max(lens), unk))


if __name__ == "__main__":
    main()
