#!/usr/bin/env -S /usr/bin/python3
"""clip_tokenizer_ref.py - independent Python re-implementation of the CLIP tokenizer
as transformers' CLIPTokenizer runs it when ftfy is NOT installed (the usual case in a
diffusers environment: ftfy is not a dependency of transformers or diffusers).

Text clean-up (transformers BasicTokenizer(strip_accents=False, do_split_on_punc=False)):
  drop U+0000, U+FFFD and category C* (except \\t\\n\\r); whitespace (\\t\\n\\r, Zs) -> ' ';
  put spaces around CJK ideographs; NFC; split on str.isspace; str.lower() each piece;
  join with ' '. Then the CLIP regex, byte-to-unicode, BPE with '</w>', vocab lookup,
  truncation to model_max_length keeping BOS/EOS, padding with the pad token.
The special-token strings (bos, eos, unk, pad; for SD 2.x the pad token "!") are split off
first, exactly and case-sensitively, as PreTrainedTokenizer.tokenize does with its added-token
trie (transformers >= 4.34 registers every special token there even when it is already in the
vocabulary); each maps to its vocabulary id. Everything else goes through _tokenize.

Original CLIP (openai/CLIP simple_tokenizer) differs: ftfy.fix_text + html.unescape twice,
whitespace collapse (no control-char removal, no CJK spacing), lower(); it pads with 0.

Usage: /usr/bin/python3 tests/reference/clip_tokenizer_ref.py [tokenizer_dir] [out.json]
Writes tests/data/tokenizer_cases.json: a list of {text, ids (77 ints), n_real}, and
tests/data/tokenizer_cases_sd2.json: the fixed cases with an SD 2.x config (pad_token "!").
With --bench N it only times N prompts and prints tokens/s.
"""
import json
import os
import sys
import time
import unicodedata

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def byte_table():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_clean(text):
    out = []
    for ch in text:
        cp = ord(ch)
        cat = unicodedata.category(ch)
        if ch in "\t\n\r" or cat == "Zs" or ch == " ":
            out.append(" ")
        elif cp == 0 or cp == 0xFFFD or cat.startswith("C"):
            continue
        elif is_cjk(cp):
            out.append(" " + ch + " ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFC", "".join(out))
    return " ".join(piece.lower() for piece in text.split())


class Tok:
    def __init__(self, folder):
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            lines = f.read().strip().split("\n")[1:49152 - 256 - 2 + 1]
        self.ranks = {}
        for i, line in enumerate(lines):
            self.ranks[tuple(line.split())] = i
        cfg = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):  # later file wins
            p = os.path.join(folder, name)
            if os.path.exists(p):
                with open(p, encoding="utf-8") as f:
                    cfg.update(json.load(f))

        def tok_of(key, default):
            v = cfg.get(key, default)
            return v["content"] if isinstance(v, dict) else v
        self.bos = self.vocab[tok_of("bos_token", "<|startoftext|>")]
        self.eos = self.vocab[tok_of("eos_token", "<|endoftext|>")]
        self.pad = self.vocab[tok_of("pad_token", "<|endoftext|>")]
        self.unk = self.vocab[tok_of("unk_token", "<|endoftext|>")]
        self.split_tokens = sorted({tok_of(k, d) for k, d in (("bos_token", "<|startoftext|>"),
                                    ("eos_token", "<|endoftext|>"), ("pad_token", "<|endoftext|>"),
                                    ("unk_token", "<|endoftext|>"))}, key=len, reverse=True)
        self.split_re = regex.compile("(" + "|".join(regex.escape(t) for t in self.split_tokens) + ")")
        self.max_len = int(cfg.get("model_max_length", 77))
        self.bytes = byte_table()
        self.pat = regex.compile(PATTERN, regex.IGNORECASE)

    def bpe(self, word):
        # Plain quadratic BPE on lists of strings, lowest rank first, all occurrences
        # of that pair merged left to right in one pass.
        sym = list(word[:-1]) + [word[-1] + "</w>"]
        while len(sym) > 1:
            best, best_rank = None, None
            for a, b in zip(sym, sym[1:]):
                r = self.ranks.get((a, b))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = (a, b), r
            if best is None:
                break
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and sym[i] == best[0] and sym[i + 1] == best[1]:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            sym = out
        return sym

    def content_ids(self, text):
        ids = []
        # split off exact special strings first (the added-token trie)
        pieces = self.split_re.split(text)
        for k, piece in enumerate(pieces):
            if k % 2 == 1:  # a captured special-token string
                ids.append(self.vocab[piece])
                continue
            for word in self.pat.findall(basic_clean(piece)):
                if word in SPECIALS:
                    ids.append(self.vocab[word])
                    continue
                mapped = "".join(self.bytes[b] for b in word.encode("utf-8"))
                ids.extend(self.vocab.get(s, self.unk) for s in self.bpe(mapped))
        return ids

    def encode(self, text, max_len=None):
        max_len = max_len or self.max_len
        ids = [self.bos] + self.content_ids(text)[:max_len - 2] + [self.eos]
        n_real = len(ids)
        return ids + [self.pad] * (max_len - n_real), n_real


CASES = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "A Cat, sitting on a mat!! 42",
    "Hello, World! How's it going?? ...yes;no:maybe (really) [x] {y} <z> @user #tag $5 %20 ^_^ ~/path|pipe",
    "1234 5678.90 3.14159 1,000,000 2nd 21st",
    "don't it's we're they've I'm you'll he'd DON'T IT'S",
    "café naïve résumé Ångström façade",
    "cafe\u0301 nai\u0308ve",  # decomposed accents: NFC composes them
    "emoji \U0001F600\U0001F680 \U0001F469\u200D\U0001F4BB family \U0001F468\u200D\U0001F469\u200D\U0001F467 flag \U0001F1EF\U0001F1F5 \u2764\ufe0f",
    "\u732b\u54aa\u5728\u5e8a\u4e0a \u65e5\u672c\u8a9e\u306e\u6587\u7ae0 \ud55c\uad6d\uc5b4 \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u03b5\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "fish &amp; chips &lt;b&gt; &#39;quoted&#39; &quot;x&quot;",
    "  multiple   spaces\n\nnew lines\ttabs\r\n and\u00a0nbsp\u2003em\u3000ideographic  ",
    "MiXeD CaSe WoRdS ThE QuIcK BrOwN FoX",
    "a masterpiece, best quality, highly detailed oil painting of a majestic castle on a hill at sunset, "
    "dramatic lighting, volumetric clouds, golden hour, trending on artstation, by greg rutkowski and "
    "alphonse mucha, 8k, ultra realistic, intricate details, sharp focus, cinematic composition, "
    "wide angle lens, vibrant colors, epic fantasy landscape with rivers and mountains and dragons",
    "<|startoftext|>start and end<|endoftext|> inside<|endoftext|>word <|ENDOFTEXT|>",
    "zero\u200bwidth soft\u00adhyphen bell\x07 del\x7f c1\x85 vt\x0bff\x0c",
    "ΟΔΟΣ ΣΊΣΥΦΟΣ İstanbul ǅemal ß ﬁne",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 300,
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!! ???? ...... ---- ____ ****",
    "٣ ١٢ ½ ² Ⅻ ① digits ０１２",
    "\U00010348 gothic \U0001D11E music \uE000 private \U000E0001 tag",
    "tab\tonly",
    "   ",
    "'s 't 're 've 'm 'll 'd ' 'x '' rock'n'roll",
]


FRAGMENTS = [
    "a", "photo", "of", "The", "CAT", "sitting", "on", "mat", "4k", "8K", "HDR", "x2", "3.5", "100%",
    "don't", "it's", "'ll", "O'Neil", "rock'n'roll", ",", ".", "!!", "?!", "...", "--", "(", ")", "[", "]",
    "{", "}", "<", ">", "/", "\\", "|", "#", "@", "&amp;", "&", ";", ":", "_", "*", "+", "=", "~", "`", "^",
    "\"", "'", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u2028", "\u200b", "\u200d",
    "\u00ad", "\ufeff", "\x07", "\x1f", "\x85", "\ufffd", "caf\u00e9", "cafe\u0301",
    "n\u0303", "A\u030a", "\u1e9b\u0323", "q\u0307\u0323", "\u00c5", "\u212b", "\u2126",
    "\u03a3", "\u039f\u0394\u039f\u03a3", "\u03a3\u03b1", "\u0130", "\u00df", "\ufb01", "\u01c5",
    "\u1100\u1161\u11a8", "\ud55c\uad6d", "\u304b\u3099", "\u30ab\u30e1\u30e9",
    "\u732b", "\u72d7\u5728\u8dd1", "\uf900", "\U00020000", "\u0e01\u0e34\u0e19", "\u0915\u094d\u0937",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "\u05e9\u05dc\u05d5\u05dd", "\u0660\u0661",
    "\u00bd", "\u00b2", "\u2167", "\u2460", "\uff10\uff11", "\U0001F600", "\U0001F44D\U0001F3FD",
    "\U0001F468\u200d\U0001F4BB", "\U0001F1FA\U0001F1F8", "\u2764\ufe0f", "\u2122", "\u00a9",
    "\u20ac5", "\u00a3", "\u00b0C", "\u2014", "\u201cquoted\u201d", "\u00ab\u00bb", "\u0301",
    "<|startoftext|>", "<|endoftext|>", "<|ENDOFTEXT|>", "supercalifragilistic", "zzzzzzzzzzzz",
    "\u00e0\u00e8\u00ec\u00f2\u00f9", "\u0105\u0119\u0142\u017c", "\u0131", "\u1e9e", "\u0587",
]


def random_cases(n, seed=1234):
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 14)
        parts = []
        for _ in range(k):
            parts.append(rng.choice(FRAGMENTS))
            parts.append(rng.choice([" ", " ", " ", "", ""]))
        out.append("".join(parts))
    # long words over small alphabets: many merge passes with repeated and overlapping pairs
    for k in range(24):
        alphabet = rng.choice(["ab", "lo", "aeiou", "st", "an", "!?.", "0o", "ee"])
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(5, 120))))
    return out


# Keep in sync with PROMPTS in bench/bench_tokenizer.c.
BENCH_PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "A Cat, sitting on a mat!! 42",
    "a masterpiece, best quality, highly detailed oil painting of a majestic castle on a hill at sunset, "
    "dramatic lighting, volumetric clouds, golden hour, trending on artstation, by greg rutkowski and "
    "alphonse mucha, 8k, ultra realistic, intricate details, sharp focus, cinematic composition",
    "portrait of a young woman, watercolor, soft pastel colors, don't overexpose, it's delicate",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 in the style of sks, \U0001F600 emoji",
    "\u732b\u54aa\u5728\u5e8a\u4e0a, a cat on the bed, 4k photo",
    "fish &amp; chips   on a\ttable\nwith    a  beer, (bokeh:1.2), [blurry]",
    "cyberpunk city street at night, neon signs, rain, reflections, ultra wide angle, 35mm",
]


def main():
    args = sys.argv[1:]
    if args and args[0] == "--bench":
        n = int(args[1]) if len(args) > 1 else 2000
        tok = Tok(os.path.join(os.environ.get("SL_SHARED_DIR", "/work/shared"), "sd15", "tokenizer"))
        prompts = ["%s variant %d" % (BENCH_PROMPTS[i % 8], i) for i in range(n)]
        t0 = time.perf_counter()
        total = sum(tok.encode(p)[1] for p in prompts)
        dt = time.perf_counter() - t0
        print("python reference: %d prompts, %d tokens, %.3f s, %.0f tokens/s" % (n, total, dt, total / dt))
        return
    folder = args[0] if args else os.path.join(os.environ.get("SL_SHARED_DIR", "/work/shared"), "sd15", "tokenizer")
    out = args[1] if len(args) > 1 else os.path.join(HERE, "..", "data", "tokenizer_cases.json")
    tok = Tok(folder)
    cases = []
    for text in CASES + random_cases(200):
        ids, n_real = tok.encode(text)
        assert len(ids) == 77
        cases.append({"text": text, "ids": ids, "n_real": n_real})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=True, indent=0)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases), out))

    # SD 2.x style: the same vocabulary with pad_token "!" (stabilityai/stable-diffusion-2*
    # tokenizer_config.json): padding with id 0, and "!" is cut out as a special token.
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(folder, name), os.path.join(tmp, name))
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump({"model_max_length": 77, "pad_token": "!"}, f)
        tok2 = Tok(tmp)
        cases2 = []
        for text in CASES:
            ids, n_real = tok2.encode(text)
            cases2.append({"text": text, "ids": ids, "n_real": n_real})
    out2 = out.replace("tokenizer_cases.json", "tokenizer_cases_sd2.json")
    with open(out2, "w", encoding="utf-8") as f:
        json.dump(cases2, f, ensure_ascii=True, indent=0)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases2), out2))


if __name__ == "__main__":
    main()
