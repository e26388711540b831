/* tokenizer.c - CLIP byte-level BPE tokenizer (see tokenizer.h for the contract and which
 * reference behaviour it matches).
 *
 * Data layout: every string the BPE can produce or consume (vocabulary entries, both halves
 * and the join of every merge, the 2x256 byte symbols) is interned once as a "symbol" id in
 * a string pool with an open-addressing hash index. A symbol knows its vocabulary id (or -1).
 * Merges are a hash map (left symbol, right symbol) -> (rank, joined symbol), so the BPE
 * never touches strings: a word is an array of symbol ids in a linked list, and candidate
 * pairs sit in a min-heap keyed by (rank, position). Python's BPE merges *all* occurrences of
 * the best pair left to right before looking for the next pair; the heap reproduces that by
 * popping every entry of the current rank (they come out in position order) before pushing
 * the pairs those merges created. O(n log n) per word of n bytes, no allocation per merge.
 */
#include "textenc/tokenizer.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/file.h"
#include "textenc/unicode_norm.h"

#define SL_TOK_MAX_MERGES (49152 - 256 - 2)  /* merges[1 : 49152-256-2+1] in both readers */
#define SL_TOK_MAX_ID (1 << 24)
/* Bound on a tokenizer file after decompression (SD's are ~2 MB): a gzip bomb must not eat
 * all memory (issue 12). */
#define SL_TOK_MAX_FILE_BYTES ((size_t)64 << 20)
#define SL_TOK_DEFAULT_MAX_LEN 77
#define SL_TOK_MAX_SPLIT 64     /* special + added tokens cut out of the text before clean-up */

static const char SL_TOK_PATTERN[] =
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";
static const char SL_SOT[] = "<|startoftext|>";
static const char SL_EOT[] = "<|endoftext|>";

typedef struct SlTokSym {
    uint32_t off, len;  /* bytes in the pool */
    int32_t vocab_id;   /* -1 if the string is not a vocabulary entry */
} SlTokSym;

typedef struct SlTokMerge {
    uint64_t key;       /* (left << 32) | right; UINT64_MAX = empty slot */
    int32_t rank, joined;
} SlTokMerge;

struct SlTokenizer {
    char *pool;                 /* [pool_len] interned strings, each NUL-terminated */
    size_t pool_len, pool_cap;
    SlTokSym *syms;             /* [n_syms] */
    int32_t n_syms, syms_cap;
    int32_t *index;             /* [index_cap] symbol ids, -1 = empty (string hash) */
    uint32_t index_cap;
    SlTokMerge *merges;         /* [merge_cap] hash map of merge pairs */
    uint32_t merge_cap;
    int n_merges;
    int32_t *id_sym;            /* [id_cap] vocabulary id -> symbol, -1 = no such id */
    int32_t id_cap, n_vocab;
    int32_t byte_sym[256];      /* symbol of each byte */
    int32_t byte_end_sym[256];  /* symbol of each byte + "</w>" */
    int16_t cp_byte[324];       /* bytes_to_unicode inverse: code point -> byte, -1 if none */
    int32_t bos, eos, pad, unk, sot_id, eot_id;
    int32_t split_sym[SL_TOK_MAX_SPLIT];  /* special/added-token strings cut out first, longest first */
    int32_t split_id[SL_TOK_MAX_SPLIT];
    int n_split;
    int max_len;
    pcre2_code *re;
};

/* ---- string pool and symbols ---- */

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int32_t sym_find(const SlTokenizer *t, const char *s, size_t n) {
    uint32_t mask = t->index_cap - 1;
    for (uint32_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->index[i];
        if (id < 0) return -1;
        if (t->syms[id].len == n && memcmp(t->pool + t->syms[id].off, s, n) == 0) return id;
    }
}

static SlStatus index_grow(SlTokenizer *t, SlCtx *ctx) {
    uint32_t cap = t->index_cap ? t->index_cap * 2 : 1u << 16;
    int32_t *ix = malloc(sizeof(int32_t) * cap);
    if (!ix) return sl_fail(ctx, SL_ERR_NOMEM, "tokenizer: out of memory (symbol index)");
    memset(ix, 0xff, sizeof(int32_t) * cap);
    for (int32_t id = 0; id < t->n_syms; id++) {
        uint32_t i = hash_bytes(t->pool + t->syms[id].off, t->syms[id].len) & (cap - 1);
        while (ix[i] >= 0) i = (i + 1) & (cap - 1);
        ix[i] = id;
    }
    free(t->index);
    t->index = ix;
    t->index_cap = cap;
    return SL_OK;
}

/* Returns the symbol of s[0..n), creating it if new; -1 on allocation failure (ctx set). */
static int32_t sym_intern(SlTokenizer *t, const char *s, size_t n, SlCtx *ctx) {
    int32_t id = sym_find(t, s, n);
    if (id >= 0) return id;
    if ((uint32_t)(t->n_syms + 1) * 2 > t->index_cap && index_grow(t, ctx) != SL_OK) return -1;
    if (t->n_syms == t->syms_cap) {
        int32_t cap = t->syms_cap * 2;
        SlTokSym *p = realloc(t->syms, sizeof(SlTokSym) * (size_t)cap);
        if (!p) { sl_fail(ctx, SL_ERR_NOMEM, "tokenizer: out of memory (symbols)"); return -1; }
        t->syms = p;
        t->syms_cap = cap;
    }
    if (t->pool_len + n + 1 > t->pool_cap) {
        size_t cap = t->pool_cap * 2 + n + 1;
        char *p = realloc(t->pool, cap);
        if (!p) { sl_fail(ctx, SL_ERR_NOMEM, "tokenizer: out of memory (string pool)"); return -1; }
        t->pool = p;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, s, n);
    t->pool[t->pool_len + n] = '\0';
    id = t->n_syms++;
    t->syms[id] = (SlTokSym){(uint32_t)t->pool_len, (uint32_t)n, -1};
    t->pool_len += n + 1;
    uint32_t mask = t->index_cap - 1, i = hash_bytes(s, n) & mask;
    while (t->index[i] >= 0) i = (i + 1) & mask;
    t->index[i] = id;
    return id;
}

/* Gives symbol `sym` vocabulary id `id` (a later assignment wins, as in a Python dict). */
static SlStatus vocab_set(SlTokenizer *t, int32_t sym, int32_t id, SlCtx *ctx) {
    if (id >= t->id_cap) {
        int32_t cap = t->id_cap ? t->id_cap : 1024;
        while (cap <= id) cap *= 2;
        int32_t *p = realloc(t->id_sym, sizeof(int32_t) * (size_t)cap);
        if (!p) return sl_fail(ctx, SL_ERR_NOMEM, "tokenizer: out of memory (vocabulary)");
        for (int32_t i = t->id_cap; i < cap; i++) p[i] = -1;
        t->id_sym = p;
        t->id_cap = cap;
    }
    if (t->syms[sym].vocab_id < 0) t->n_vocab++;
    else if (t->id_sym[t->syms[sym].vocab_id] == sym) t->id_sym[t->syms[sym].vocab_id] = -1;
    t->syms[sym].vocab_id = id;
    t->id_sym[id] = sym;
    return SL_OK;
}

/* ---- merges ---- */

static const SlTokMerge *merge_find(const SlTokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = t->merge_cap - 1;
    for (uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & mask;; i = (i + 1) & mask) {
        if (t->merges[i].key == key) return &t->merges[i];
        if (t->merges[i].key == UINT64_MAX) return NULL;
    }
}

static SlStatus merges_alloc(SlTokenizer *t, size_t n_lines, SlCtx *ctx) {
    uint32_t cap = 1024;
    while (cap < n_lines * 2 + 2) cap *= 2;
    t->merges = malloc(sizeof(SlTokMerge) * cap);
    if (!t->merges) return sl_fail(ctx, SL_ERR_NOMEM, "tokenizer: out of memory (merges)");
    for (uint32_t i = 0; i < cap; i++) t->merges[i].key = UINT64_MAX;
    t->merge_cap = cap;
    return SL_OK;
}

/* Adds merge a+b with the given rank; a repeated pair takes the later rank (dict(zip(...))). */
static void merge_put(SlTokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t joined) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = t->merge_cap - 1;
    uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & mask;
    while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key) i = (i + 1) & mask;
    if (t->merges[i].key == UINT64_MAX) t->n_merges++;
    t->merges[i] = (SlTokMerge){key, rank, joined};
}

/* ---- bytes_to_unicode ---- */

static int byte_is_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); }

static int utf8_put(char *out, uint32_t cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Code point of byte b in CLIP's bytes_to_unicode: printable bytes keep their value, the
 * other 68 get 256, 257, ... in byte order. */
static uint32_t byte_cp(int b) {
    if (byte_is_printable(b)) return (uint32_t)b;
    uint32_t n = 0;
    for (int i = 0; i < b; i++) n += !byte_is_printable(i);
    return 256 + n;
}

/* bytes_to_unicode's dict order: the printable bytes ascending, then the others ascending. */
static int byte_in_dict_order(int k) {
    int seen = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int b = 0; b < 256; b++)
            if (byte_is_printable(b) == !pass && seen++ == k) return b;
    return -1;
}

static SlStatus intern_byte_symbols(SlTokenizer *t, SlCtx *ctx) {
    memset(t->cp_byte, 0xff, sizeof t->cp_byte);
    for (int b = 0; b < 256; b++) {
        char s[8];
        uint32_t cp = byte_cp(b);
        int n = utf8_put(s, cp);
        t->cp_byte[cp] = (int16_t)b;
        if ((t->byte_sym[b] = sym_intern(t, s, (size_t)n, ctx)) < 0) return ctx ? ctx->status : SL_ERR_NOMEM;
        memcpy(s + n, "</w>", 4);
        if ((t->byte_end_sym[b] = sym_intern(t, s, (size_t)n + 4, ctx)) < 0) return ctx ? ctx->status : SL_ERR_NOMEM;
    }
    return SL_OK;
}

/* ---- files ---- */

/* gzip data (one or more members) inflated into a new NUL-terminated buffer,
 * at most SL_TOK_MAX_FILE_BYTES of it (a small .gz can inflate to gigabytes). */
static SlStatus gunzip(const char *path, const uint8_t *src, size_t n_src, char **out, size_t *len, SlCtx *ctx) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        free(buf);
        return sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path);
    }
    z.next_in = (Bytef *)src;
    SlStatus st = SL_OK;
    size_t left = n_src;
    for (;;) {
        if (n == cap) {
            if (cap >= SL_TOK_MAX_FILE_BYTES) {
                st = sl_fail(ctx, SL_ERR_NOMEM, "%s: larger than %zu MiB", path, SL_TOK_MAX_FILE_BYTES >> 20);
                break;
            }
            char *p = realloc(buf, cap * 2 + 1);
            if (!p) { st = sl_fail(ctx, SL_ERR_NOMEM, "%s: out of memory", path); break; }
            buf = p;
            cap *= 2;
        }
        uInt in_chunk = left > (1u << 30) ? (1u << 30) : (uInt)left;
        z.avail_in = in_chunk;
        z.next_out = (Bytef *)buf + n;
        z.avail_out = (uInt)(cap - n > (1u << 30) ? (1u << 30) : cap - n);
        uInt out_before = z.avail_out;
        int zr = inflate(&z, Z_NO_FLUSH);
        n += out_before - z.avail_out;
        left -= in_chunk - z.avail_in;
        if (zr == Z_STREAM_END) {
            /* another member of a concatenated .gz; other trailing bytes are ignored, as gzread did */
            if (left < 2 || z.next_in[0] != 0x1f || z.next_in[1] != 0x8b) break;
            inflateReset(&z);
            continue;
        }
        if (zr == Z_BUF_ERROR && left == 0) {
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: gzip read failed: truncated file", path);
            break;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: gzip read failed: %s", path, z.msg ? z.msg : "corrupt data");
            break;
        }
    }
    inflateEnd(&z);
    if (st) { free(buf); return st; }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return SL_OK;
}

/* A vocabulary or merges file, inflated if gz and it starts as gzip does
 * (gzread read plain files through unchanged, and so do we). */
static SlStatus read_file(const char *path, int gz, char **out, size_t *len, SlCtx *ctx) {
    SL_TRY(sl_read_file(path, SL_TOK_MAX_FILE_BYTES, out, len, ctx));
    const uint8_t *b = (const uint8_t *)*out;
    if (!gz || *len < 2 || b[0] != 0x1f || b[1] != 0x8b) return SL_OK;
    char *raw = *out;
    SlStatus st = gunzip(path, b, *len, out, len, ctx);
    free(raw);
    if (st) { *out = NULL; *len = 0; }
    return st;
}

/* Parses JSON text; on a syntax error names the file, line and column. */
static SlStatus parse_json(const char *path, const char *text, size_t len, cJSON **out, SlCtx *ctx) {
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out) return SL_OK;
    size_t pos = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    int line = 1, col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') { line++; col = 1; }
        else col++;
    }
    return sl_fail(ctx, SL_ERR_FORMAT, "%s:%d:%d: malformed JSON", path, line, col);
}

static SlStatus load_vocab_json(SlTokenizer *t, const char *path, SlCtx *ctx) {
    char *text;
    size_t len;
    SL_TRY(read_file(path, 0, &text, &len, ctx));
    cJSON *root;
    SlStatus st = parse_json(path, text, len, &root, ctx);
    free(text);
    if (st != SL_OK) return st;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: expected a JSON object mapping token -> id", path);
    }
    for (cJSON *it = root->child; it; it = it->next) {
        double v = it->valuedouble;
        /* range first: casting an out-of-range double to int32 is undefined (found by fuzz_tokenizer_load) */
        if (!cJSON_IsNumber(it) || !(v >= 0 && v < SL_TOK_MAX_ID) || v != (double)(int32_t)v) {
            st = sl_fail(ctx, SL_ERR_FORMAT, "%s: token \"%.64s\": id must be an integer in [0, %d)", path,
                         it->string ? it->string : "", SL_TOK_MAX_ID);
            break;
        }
        int32_t sym = sym_intern(t, it->string, strlen(it->string), ctx);
        if (sym < 0) { st = ctx ? ctx->status : SL_ERR_NOMEM; break; }
        if ((st = vocab_set(t, sym, (int32_t)v, ctx)) != SL_OK) break;
    }
    cJSON_Delete(root);
    if (st == SL_OK && t->n_vocab == 0) st = sl_fail(ctx, SL_ERR_FORMAT, "%s: empty vocabulary", path);
    return st;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\n'; }

/* Reads merge lines [1, 1+SL_TOK_MAX_MERGES) of text (line 0 is the header). `strip` trims
 * surrounding whitespace first (transformers does, CLIP's reader does not). With
 * `add_to_vocab` each joined merge also becomes the next vocabulary id (CLIP's .gz format),
 * starting at *next_id. */
static SlStatus load_merges(SlTokenizer *t, const char *path, char *text, size_t len, int strip,
                            int add_to_vocab, int32_t *next_id, SlCtx *ctx) {
    char *p = text, *end = text + len;
    int line_no = 1;
    if (strip) {
        while (p < end && is_ws(*p)) line_no += *p++ == '\n';
        while (end > p && is_ws(end[-1])) end--;
    }
    size_t n_lines = 1;
    for (char *q = p; q < end; q++) n_lines += *q == '\n';
    SL_TRY(merges_alloc(t, n_lines < SL_TOK_MAX_MERGES ? n_lines : SL_TOK_MAX_MERGES, ctx));
    char joined[1024];
    for (int idx = 0; p <= end && idx <= SL_TOK_MAX_MERGES; idx++, line_no++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        if (idx > 0) {
            /* split on whitespace: exactly two parts */
            char *part[3];
            size_t plen[3];
            int np = 0;
            for (char *q = p; q < le;) {
                while (q < le && is_ws(*q)) q++;
                if (q == le) break;
                char *s = q;
                while (q < le && !is_ws(*q)) q++;
                if (np < 3) { part[np] = s; plen[np] = (size_t)(q - s); }
                np++;
            }
            if (np != 2)
                return sl_fail(ctx, SL_ERR_FORMAT, "%s:%d: a merge line needs exactly two symbols, found %d",
                               path, line_no, np);
            if (plen[0] + plen[1] >= sizeof joined)
                return sl_fail(ctx, SL_ERR_FORMAT, "%s:%d: merge symbols too long", path, line_no);
            memcpy(joined, part[0], plen[0]);
            memcpy(joined + plen[0], part[1], plen[1]);
            int32_t a = sym_intern(t, part[0], plen[0], ctx);
            int32_t b = a < 0 ? -1 : sym_intern(t, part[1], plen[1], ctx);
            int32_t j = b < 0 ? -1 : sym_intern(t, joined, plen[0] + plen[1], ctx);
            if (j < 0) return ctx ? ctx->status : SL_ERR_NOMEM;
            merge_put(t, a, b, idx - 1, j);
            if (add_to_vocab) SL_TRY(vocab_set(t, j, (*next_id)++, ctx));
        }
        if (!nl) break;
        p = nl + 1;
    }
    if (t->n_merges == 0) return sl_fail(ctx, SL_ERR_FORMAT, "%s: no merges after the header line", path);
    return SL_OK;
}

/* Token string of a special-token entry: "text" or {"content": "text"}; NULL if absent. */
static const char *special_string(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Reads an optional JSON config into *out (NULL if the file does not exist). */
static SlStatus load_optional_json(const char *path, cJSON **out, SlCtx *ctx) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return SL_OK;
    char *text;
    size_t len;
    SL_TRY(read_file(path, 0, &text, &len, ctx));
    SlStatus st = parse_json(path, text, len, out, ctx);
    free(text);
    if (st == SL_OK && !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        st = sl_fail(ctx, SL_ERR_FORMAT, "%s: expected a JSON object", path);
    }
    return st;
}

/* Registers symbol `sym` as a string cut out of the text before clean-up and encoded as `id`
 * (transformers' added-token trie). Kept sorted longest first, so the longest match wins. */
static SlStatus add_split(SlTokenizer *t, int32_t sym, int32_t id, const char *where, SlCtx *ctx) {
    if (t->syms[sym].len == 0) return sl_fail(ctx, SL_ERR_FORMAT, "%s: a special/added token is the empty string", where);
    for (int i = 0; i < t->n_split; i++)
        if (t->split_sym[i] == sym) { t->split_id[i] = id; return SL_OK; }
    if (t->n_split == SL_TOK_MAX_SPLIT)
        return sl_fail(ctx, SL_ERR_UNSUPPORTED, "%s: more than %d special/added tokens", where, SL_TOK_MAX_SPLIT);
    int i = t->n_split++;
    while (i > 0 && t->syms[t->split_sym[i - 1]].len < t->syms[sym].len) {
        t->split_sym[i] = t->split_sym[i - 1];
        t->split_id[i] = t->split_id[i - 1];
        i--;
    }
    t->split_sym[i] = sym;
    t->split_id[i] = id;
    return SL_OK;
}

/* Finds special token s in the vocabulary and registers it as a split token (transformers puts
 * every special token in its added-token trie, even one already in the vocabulary). */
static SlStatus resolve_special(SlTokenizer *t, const char *name, const char *s, const char *where,
                                int32_t *out, SlCtx *ctx) {
    int32_t sym = sym_find(t, s, strlen(s));
    if (sym < 0 || t->syms[sym].vocab_id < 0)
        return sl_fail(ctx, SL_ERR_MISSING, "%s: %s \"%s\" is not in the vocabulary", where, name, s);
    *out = t->syms[sym].vocab_id;
    return add_split(t, sym, *out, where, ctx);
}

/* tokenizer_config.json "added_tokens_decoder": {"<id>": {"content": "<text>", ...}}. Each
 * entry becomes a split token with that id; a content missing from vocab.json joins it. The
 * lstrip/rstrip/single_word flags are not supported (CLIP's specials have them all false). */
static SlStatus load_added_tokens(SlTokenizer *t, const cJSON *cfg, const char *where, SlCtx *ctx) {
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    if (!added) return SL_OK;
    if (!cJSON_IsObject(added)) return sl_fail(ctx, SL_ERR_FORMAT, "%s: added_tokens_decoder must be an object", where);
    for (const cJSON *it = added->child; it; it = it->next) {
        char *endp;
        long id = strtol(it->string, &endp, 10);
        const char *content = special_string(added, it->string);
        if (*endp || endp == it->string || id < 0 || id >= SL_TOK_MAX_ID || !content)
            return sl_fail(ctx, SL_ERR_FORMAT, "%s: added_tokens_decoder \"%.32s\": needs an id key and a content string",
                           where, it->string);
        int32_t sym = sym_intern(t, content, strlen(content), ctx);
        if (sym < 0) return ctx ? ctx->status : SL_ERR_NOMEM;
        if (t->syms[sym].vocab_id < 0) SL_TRY(vocab_set(t, sym, (int32_t)id, ctx));
        SL_TRY(add_split(t, sym, (int32_t)id, where, ctx));
    }
    return SL_OK;
}

static SlStatus load_folder(SlTokenizer *t, const char *dir, SlCtx *ctx) {
    char path[4096], where[4096];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    SL_TRY(load_vocab_json(t, path, ctx));
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    char *text;
    size_t len;
    SL_TRY(read_file(path, 0, &text, &len, ctx));
    SlStatus st = load_merges(t, path, text, len, 1, 0, NULL, ctx);
    free(text);
    if (st != SL_OK) return st;

    const char *tok_names[4] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    const char *tok_vals[4] = {SL_SOT, SL_EOT, SL_EOT, SL_EOT};
    const char *tok_from[4];
    cJSON *cfgs[2] = {NULL, NULL};
    char cfg_paths[2][4096];
    snprintf(cfg_paths[0], sizeof cfg_paths[0], "%s/tokenizer_config.json", dir);
    snprintf(cfg_paths[1], sizeof cfg_paths[1], "%s/special_tokens_map.json", dir);
    snprintf(where, sizeof where, "%s/vocab.json", dir);
    for (int k = 0; k < 4; k++) tok_from[k] = where;
    t->max_len = SL_TOK_DEFAULT_MAX_LEN;
    for (int c = 0; c < 2 && st == SL_OK; c++) {
        if ((st = load_optional_json(cfg_paths[c], &cfgs[c], ctx)) != SL_OK || !cfgs[c]) continue;
        for (int k = 0; k < 4; k++) {  /* special_tokens_map.json (read second) wins */
            const char *s = special_string(cfgs[c], tok_names[k]);
            if (s) { tok_vals[k] = s; tok_from[k] = cfg_paths[c]; }
        }
        if (c == 0 && (st = load_added_tokens(t, cfgs[c], cfg_paths[c], ctx)) != SL_OK) continue;
        const cJSON *ml = cJSON_GetObjectItemCaseSensitive(cfgs[c], "model_max_length");
        if (c == 0 && cJSON_IsNumber(ml)) {
            double v = ml->valuedouble;
            /* no int cast of huge values (transformers' 1e30 "unset" marker): undefined behaviour */
            if (!(v >= 2) || (v <= 1000000 && v != (double)(int)v))
                st = sl_fail(ctx, SL_ERR_FORMAT, "%s: model_max_length %g must be an integer >= 2",
                             cfg_paths[c], v);
            else if (v <= 1000000) t->max_len = (int)v;  /* larger: transformers' "unset" marker */
        }
    }
    int32_t *dst[4] = {&t->bos, &t->eos, &t->pad, &t->unk};
    for (int k = 0; k < 4 && st == SL_OK; k++) st = resolve_special(t, tok_names[k], tok_vals[k], tok_from[k], dst[k], ctx);
    cJSON_Delete(cfgs[0]);
    cJSON_Delete(cfgs[1]);
    return st;
}

/* CLIP's simple_tokenizer: the vocabulary is implied by the merges file. */
static SlStatus load_clip_gz(SlTokenizer *t, const char *path, SlCtx *ctx) {
    int32_t next_id = 0;
    for (int k = 0; k < 256; k++) SL_TRY(vocab_set(t, t->byte_sym[byte_in_dict_order(k)], next_id++, ctx));
    for (int k = 0; k < 256; k++) SL_TRY(vocab_set(t, t->byte_end_sym[byte_in_dict_order(k)], next_id++, ctx));
    char *text;
    size_t len;
    SL_TRY(read_file(path, 1, &text, &len, ctx));
    SlStatus st = load_merges(t, path, text, len, 0, 1, &next_id, ctx);
    free(text);
    SL_TRY(st);
    int32_t s = sym_intern(t, SL_SOT, strlen(SL_SOT), ctx);
    if (s < 0) return ctx ? ctx->status : SL_ERR_NOMEM;
    SL_TRY(vocab_set(t, s, next_id++, ctx));
    s = sym_intern(t, SL_EOT, strlen(SL_EOT), ctx);
    if (s < 0) return ctx ? ctx->status : SL_ERR_NOMEM;
    SL_TRY(vocab_set(t, s, next_id++, ctx));
    SL_TRY(resolve_special(t, "bos_token", SL_SOT, path, &t->bos, ctx));
    SL_TRY(resolve_special(t, "eos_token", SL_EOT, path, &t->eos, ctx));
    t->pad = t->unk = t->eos;
    t->max_len = SL_TOK_DEFAULT_MAX_LEN;
    return SL_OK;
}

SlStatus sl_tokenizer_load(SlTokenizer **out, const char *dir_or_file, SlCtx *ctx) {
    *out = NULL;
    struct stat sb;
    if (stat(dir_or_file, &sb) != 0)
        return sl_fail(ctx, SL_ERR_IO, "cannot open tokenizer %s: %s", dir_or_file, strerror(errno));
    SlTokenizer *t = calloc(1, sizeof *t);
    if (!t) return sl_fail(ctx, SL_ERR_NOMEM, "tokenizer: out of memory");
    t->syms_cap = 1 << 16;
    t->pool_cap = 1 << 20;
    t->syms = malloc(sizeof(SlTokSym) * (size_t)t->syms_cap);
    t->pool = malloc(t->pool_cap);
    SlStatus st = (t->syms && t->pool) ? index_grow(t, ctx) : sl_fail(ctx, SL_ERR_NOMEM, "tokenizer: out of memory");
    if (st == SL_OK) st = intern_byte_symbols(t, ctx);
    if (st == SL_OK) st = S_ISDIR(sb.st_mode) ? load_folder(t, dir_or_file, ctx) : load_clip_gz(t, dir_or_file, ctx);
    if (st == SL_OK) {
        t->sot_id = t->eot_id = t->unk;
        int32_t s = sym_find(t, SL_SOT, strlen(SL_SOT));
        if (s >= 0 && t->syms[s].vocab_id >= 0) t->sot_id = t->syms[s].vocab_id;
        s = sym_find(t, SL_EOT, strlen(SL_EOT));
        if (s >= 0 && t->syms[s].vocab_id >= 0) t->eot_id = t->syms[s].vocab_id;
        int err;
        PCRE2_SIZE off;
        t->re = pcre2_compile((PCRE2_SPTR)SL_TOK_PATTERN, PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &err, &off, NULL);
        if (!t->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            st = sl_fail(ctx, SL_ERR_UNSUPPORTED, "tokenizer: PCRE2 rejected the CLIP pattern at %zu: %s",
                         (size_t)off, (const char *)msg);
        } else {
            (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
        }
    }
    if (st != SL_OK) {
        sl_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SL_OK;
}

void sl_tokenizer_free(SlTokenizer *t) {
    if (!t) return;
    if (t->re) pcre2_code_free(t->re);
    free(t->pool);
    free(t->syms);
    free(t->index);
    free(t->merges);
    free(t->id_sym);
    free(t);
}

/* ---- encoding ---- */

/* Decodes valid UTF-8 into cps; returns the count, or -1 with *bad_at = offending offset. */
static long utf8_decode(const uint8_t *s, size_t n, uint32_t *cps, size_t *bad_at) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint32_t c = s[i];
        size_t k;
        uint32_t min;
        if (c < 0x80) { cps[o++] = c; i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { k = 1; c &= 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; c &= 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; c &= 0x07; min = 0x10000; }
        else { *bad_at = i; return -1; }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) { *bad_at = i; return -1; }
            c = (c << 6) | (s[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) { *bad_at = i; return -1; }
        cps[o++] = c;
        i += k + 1;
    }
    return (long)o;
}

typedef struct SlBpeHeapItem { int32_t rank, left, a, b, joined; } SlBpeHeapItem;

typedef struct SlBpeScratch {
    size_t cap;                  /* longest word it has room for, in bytes */
    int32_t *sym, *next, *prev;  /* [cap] per byte of the word */
    SlBpeHeapItem *heap;         /* [3*cap] */
    int32_t *pending;            /* [2*cap] */
} SlBpeScratch;

/* Makes room for a word of n bytes (grows geometrically; words are usually short). */
static int bpe_reserve(SlBpeScratch *s, size_t n) {
    if (n <= s->cap) return 1;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    free(s->sym);
    free(s->heap);
    free(s->pending);
    s->sym = malloc(sizeof(int32_t) * cap * 3);
    s->heap = malloc(sizeof(SlBpeHeapItem) * cap * 3);
    s->pending = malloc(sizeof(int32_t) * cap * 2);
    s->cap = (s->sym && s->heap && s->pending) ? cap : 0;
    if (!s->cap) return 0;
    s->next = s->sym + cap;
    s->prev = s->sym + 2 * cap;
    return 1;
}

static int heap_less(const SlBpeHeapItem *x, const SlBpeHeapItem *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static void heap_push(SlBpeHeapItem *h, int *n, SlBpeHeapItem it) {
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!heap_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static SlBpeHeapItem heap_pop(SlBpeHeapItem *h, int *n) {
    SlBpeHeapItem top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static void bpe_push_pair(const SlTokenizer *t, SlBpeScratch *s, int *nh, int32_t left) {
    int32_t right = s->next[left];
    if (right < 0) return;
    const SlTokMerge *m = merge_find(t, s->sym[left], s->sym[right]);
    if (m) heap_push(s->heap, nh, (SlBpeHeapItem){m->rank, left, s->sym[left], s->sym[right], m->joined});
}

/* BPE of one pre-token w[0..n) (raw UTF-8 bytes); appends up to `room` vocabulary ids to out
 * and returns how many it appended. */
static int bpe_word(const SlTokenizer *t, const uint8_t *w, int n, SlBpeScratch *s, int32_t *out, int room) {
    for (int i = 0; i < n; i++) {
        s->sym[i] = i == n - 1 ? t->byte_end_sym[w[i]] : t->byte_sym[w[i]];
        s->next[i] = i + 1 < n ? i + 1 : -1;
        s->prev[i] = i - 1;
    }
    int nh = 0;
    for (int i = 0; i + 1 < n; i++) bpe_push_pair(t, s, &nh, i);
    while (nh > 0) {
        int32_t rank = s->heap[0].rank;
        int np = 0;
        while (nh > 0 && s->heap[0].rank == rank) {  /* one pass: every occurrence, left to right */
            SlBpeHeapItem it = heap_pop(s->heap, &nh);
            int32_t l = it.left, r = s->next[l];
            if (s->sym[l] != it.a || r < 0 || s->sym[r] != it.b) continue;  /* stale */
            s->sym[l] = it.joined;
            s->sym[r] = -1;
            s->next[l] = s->next[r];
            if (s->next[r] >= 0) s->prev[s->next[r]] = l;
            if (s->prev[l] >= 0) s->pending[np++] = s->prev[l];
            s->pending[np++] = l;
        }
        for (int k = 0; k < np; k++)
            if (s->sym[s->pending[k]] >= 0) bpe_push_pair(t, s, &nh, s->pending[k]);
    }
    int got = 0;
    for (int i = 0; i >= 0 && got < room; i = s->next[i]) {
        int32_t v = t->syms[s->sym[i]].vocab_id;
        out[got++] = v >= 0 ? v : t->unk;
    }
    return got;
}

/* Per-call scratch, sized once from the whole text (every piece is shorter). */
typedef struct SlTokScratch {
    uint32_t *cps;      /* [len] code points of the piece */
    uint32_t *clean;    /* [SL_UC_MAX_DECOMP * m] cleaned text, then NFC in place */
    uint32_t *low;      /* [2 * SL_UC_MAX_DECOMP * m] lowercased words joined by ' ' */
    char *text;         /* [8 * SL_UC_MAX_DECOMP * m] its UTF-8 */
    SlBpeScratch bpe;   /* per byte of text */
    pcre2_match_data *md;
} SlTokScratch;

/* Encodes one piece of valid UTF-8 that holds no special-token string: BasicTokenizer
 * clean-up, CLIP pattern, BPE. Appends at most room - *n_tok ids to content. */
static SlStatus encode_piece(const SlTokenizer *t, const char *utf8, size_t len, SlTokScratch *s,
                             int32_t *content, int *n_tok, int room, SlCtx *ctx) {
    size_t bad_at = 0;
    long n_cp = utf8_decode((const uint8_t *)utf8, len, s->cps, &bad_at);
    if (n_cp < 0) return sl_fail(ctx, SL_ERR_ARG, "tokenizer encode: internal UTF-8 error");
    /* 1. _clean_text + _tokenize_chinese_chars */
    size_t m = 0;
    for (long i = 0; i < n_cp; i++) {
        uint32_t cp = s->cps[i];
        int c = sl_uc_char_class(cp);
        if (c == SL_UC_DROP) continue;
        if (c == SL_UC_SPACE) { s->clean[m++] = ' '; continue; }
        if (c == SL_UC_CJK) { s->clean[m++] = ' '; s->clean[m++] = cp; s->clean[m++] = ' '; continue; }
        s->clean[m++] = cp;
    }
    /* 2. NFC, 3. split on whitespace, str.lower() each word, join with one space */
    m = sl_uc_nfc(s->clean, m);
    size_t nl = 0;
    for (size_t i = 0; i < m;) {
        while (i < m && s->clean[i] == ' ') i++;
        size_t w0 = i;
        while (i < m && s->clean[i] != ' ') i++;
        if (i == w0) break;
        if (nl) s->low[nl++] = ' ';
        nl += sl_uc_lowercase(s->low + nl, s->clean + w0, i - w0);
    }
    size_t tl = 0;
    for (size_t i = 0; i < nl; i++) tl += (size_t)utf8_put(s->text + tl, s->low[i]);
    s->text[tl] = '\0';
    /* 4. CLIP pattern, 5. BPE per match */
    PCRE2_SIZE pos = 0;
    while (pos < tl && *n_tok < room) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s->text, tl, pos, PCRE2_NO_UTF_CHECK, s->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return sl_fail(ctx, SL_ERR_UNSUPPORTED, "tokenizer encode: PCRE2 match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        size_t a = ov[0], b = ov[1];
        if (b <= a) { pos = a + 1; continue; } /* cannot happen: no alternative matches empty */
        pos = b;
        const char *w = s->text + a;
        if (b - a == sizeof SL_SOT - 1 && memcmp(w, SL_SOT, b - a) == 0) content[(*n_tok)++] = t->sot_id;
        else if (b - a == sizeof SL_EOT - 1 && memcmp(w, SL_EOT, b - a) == 0) content[(*n_tok)++] = t->eot_id;
        else if (!bpe_reserve(&s->bpe, b - a)) return sl_fail(ctx, SL_ERR_NOMEM, "tokenizer encode: out of memory");
        else *n_tok += bpe_word(t, (const uint8_t *)w, (int)(b - a), &s->bpe, content + *n_tok, room - *n_tok);
    }
    return SL_OK;
}

/* Length of the special-token string starting at p (longest first), 0 if none; *id its id. */
static size_t split_match(const SlTokenizer *t, const char *p, size_t left, int32_t *id) {
    for (int k = 0; k < t->n_split; k++) {
        const SlTokSym *sy = &t->syms[t->split_sym[k]];
        if (sy->len <= left && p[0] == t->pool[sy->off] && memcmp(p, t->pool + sy->off, sy->len) == 0) {
            *id = t->split_id[k];
            return sy->len;
        }
    }
    return 0;
}

SlStatus sl_tokenizer_encode_n(const SlTokenizer *t, const char *utf8, size_t len, int32_t *ids,
                               int max_len, int *n_real, SlCtx *ctx) {
    if (!t || !ids || (!utf8 && len)) return sl_fail(ctx, SL_ERR_ARG, "tokenizer encode: NULL argument");
    if (max_len < 2) return sl_fail(ctx, SL_ERR_ARG, "tokenizer encode: max_len %d < 2 (BOS and EOS)", max_len);
    if (len > ((size_t)1 << 24))
        return sl_fail(ctx, SL_ERR_ARG, "tokenizer encode: text of %zu bytes is too long", len);
    int room = max_len - 2, n_tok = 0;
    int32_t *content = ids + 1; /* [room] */
    SlStatus st = SL_OK;
    SlTokScratch s = {0};
    s.cps = malloc(sizeof(uint32_t) * (len + 1));
    if (!s.cps) return sl_fail(ctx, SL_ERR_NOMEM, "tokenizer encode: out of memory");
    size_t bad_at = 0;
    long n_cp = utf8_decode((const uint8_t *)utf8, len, s.cps, &bad_at);
    if (n_cp < 0) {
        st = sl_fail(ctx, SL_ERR_ARG, "tokenizer encode: invalid UTF-8 at byte offset %zu (byte 0x%02x)", bad_at,
                     (unsigned)(uint8_t)utf8[bad_at]);
        goto done;
    }
    size_t m = 1; /* bound on the cleaned length of any piece */
    for (long i = 0; i < n_cp; i++) {
        int c = sl_uc_char_class(s.cps[i]);
        m += c == SL_UC_DROP ? 0 : c == SL_UC_CJK ? 3 : 1;
    }
    size_t mt = SL_UC_MAX_DECOMP * m; /* after NFC's decomposition room */
    s.clean = malloc(sizeof(uint32_t) * mt);
    s.low = malloc(sizeof(uint32_t) * 2 * mt);
    s.text = malloc(8 * mt + 1);
    s.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!s.clean || !s.low || !s.text || !s.md || !bpe_reserve(&s.bpe, 64)) {
        st = sl_fail(ctx, SL_ERR_NOMEM, "tokenizer encode: out of memory");
        goto done;
    }
    /* special-token strings split the text first (transformers' added-token trie) */
    size_t p0 = 0;
    for (size_t i = 0; i <= len && n_tok < room && st == SL_OK;) {
        int32_t sid = 0;
        size_t k = i < len ? split_match(t, utf8 + i, len - i, &sid) : 0;
        if (i < len && !k) { i++; continue; }
        if (i > p0) st = encode_piece(t, utf8 + p0, i - p0, &s, content, &n_tok, room, ctx);
        if (i == len) break;
        if (st == SL_OK && n_tok < room) content[n_tok++] = sid;
        i += k;
        p0 = i;
    }
done:
    if (st == SL_OK) {
        ids[0] = t->bos;
        ids[1 + n_tok] = t->eos;
        for (int i = n_tok + 2; i < max_len; i++) ids[i] = t->pad;
        if (n_real) *n_real = n_tok + 2;
    }
    pcre2_match_data_free(s.md);
    free(s.bpe.sym);
    free(s.bpe.heap);
    free(s.bpe.pending);
    free(s.text);
    free(s.low);
    free(s.clean);
    free(s.cps);
    return st;
}

SlStatus sl_tokenizer_encode(const SlTokenizer *t, const char *utf8, int32_t *ids, int max_len, int *n_real,
                             SlCtx *ctx) {
    return sl_tokenizer_encode_n(t, utf8, utf8 ? strlen(utf8) : 0, ids, max_len, n_real, ctx);
}

/* The length of s[0..n) without a last character cut short (a lead byte whose
 * continuation bytes are missing). */
static size_t utf8_whole_prefix(const char *s, size_t n) {
    size_t j = n;
    while (j > 0 && n - j < 3 && ((uint8_t)s[j - 1] & 0xC0) == 0x80) j--;
    if (j == 0) return n;
    uint8_t c = (uint8_t)s[j - 1];
    size_t need = c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return n - (j - 1) >= need ? n : j - 1;
}

/* Room for counting the tokens of a text that overflowed: 16 MiB of ids at most. */
#define SL_TOK_MAX_COUNT ((size_t)1 << 22)

SlStatus sl_tokenizer_encode_dropped(const SlTokenizer *t, const char *utf8, int32_t *ids, int max_len,
                                     int *n_real, int *n_dropped, char *dropped, size_t cap, SlCtx *ctx) {
    *n_dropped = 0;
    if (dropped && cap) dropped[0] = '\0';
    size_t len = utf8 ? strlen(utf8) : 0;
    int nr = 0;
    SL_TRY(sl_tokenizer_encode_n(t, utf8, len, ids, max_len, &nr, ctx));
    if (n_real) *n_real = nr;
    if (nr < max_len) return SL_OK; /* room to spare: nothing was cut */
    /* Full: encode again with room for every token. A token holds at least one byte of
     * the cleaned text, which NFC and lowercasing grow by well under 4x. */
    size_t big = 4 * len + 4;
    if (big > SL_TOK_MAX_COUNT) big = SL_TOK_MAX_COUNT;
    if (big < (size_t)max_len) big = (size_t)max_len;
    int32_t *all = malloc(big * sizeof *all);
    if (!all) return sl_fail(ctx, SL_ERR_NOMEM, "tokenizer encode: out of memory counting dropped tokens");
    int na = 0;
    SlStatus st = sl_tokenizer_encode_n(t, utf8, len, all, (int)big, &na, ctx);
    if (st == SL_OK) {
        const int kept = max_len - 2, first = 1 + kept, end = na - 1; /* all[first..end) were dropped */
        *n_dropped = end - first;
        if (dropped && cap >= 4) {
            size_t o = 0, room = cap - 4; /* leaves "..." and the NUL */
            int i = first;
            for (; i < end && o < room; i++) {
                size_t k = sl_tokenizer_decode_token(t, all[i], dropped + o, room + 1 - o);
                if (k > room - o) { o = room; break; }
                o += k;
            }
            o = utf8_whole_prefix(dropped, o);
            if (i < end) {
                memcpy(dropped + o, "...", 4);
            } else {
                while (o > 0 && dropped[o - 1] == ' ') o--; /* the last word's "</w>" */
                dropped[o] = '\0';
            }
            /* byte-level BPE may have split a character between the kept and dropped tokens */
            size_t skip = 0;
            while (skip < 3 && ((uint8_t)dropped[skip] & 0xC0) == 0x80) skip++;
            memmove(dropped, dropped + skip, strlen(dropped + skip) + 1);
        }
    }
    free(all);
    return st;
}

/* ---- accessors ---- */

int32_t sl_tokenizer_bos(const SlTokenizer *t) { return t->bos; }
int32_t sl_tokenizer_eos(const SlTokenizer *t) { return t->eos; }
int32_t sl_tokenizer_pad(const SlTokenizer *t) { return t->pad; }
int32_t sl_tokenizer_unk(const SlTokenizer *t) { return t->unk; }
int32_t sl_tokenizer_vocab_size(const SlTokenizer *t) { return t->n_vocab; }
int sl_tokenizer_max_length(const SlTokenizer *t) { return t->max_len; }
int sl_tokenizer_n_merges(const SlTokenizer *t) { return t->n_merges; }

int32_t sl_tokenizer_token_id(const SlTokenizer *t, const char *token) {
    int32_t s = sym_find(t, token, strlen(token));
    return s >= 0 ? t->syms[s].vocab_id : -1;
}

const char *sl_tokenizer_token_text(const SlTokenizer *t, int32_t id) {
    if (id < 0 || id >= t->id_cap || t->id_sym[id] < 0) return NULL;
    return t->pool + t->syms[t->id_sym[id]].off;
}

size_t sl_tokenizer_decode_token(const SlTokenizer *t, int32_t id, char *buf, size_t cap) {
    const char *s = sl_tokenizer_token_text(t, id);
    if (cap) buf[0] = '\0';
    if (!s) return 0;
    size_t n = strlen(s), o = 0;
    int word_end = n >= 4 && memcmp(s + n - 4, "</w>", 4) == 0;
    if (word_end) n -= 4;
    for (size_t i = 0; i < n;) {
        uint32_t cps[1];
        size_t bad, k = 1;
        uint8_t c = (uint8_t)s[i];
        k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (i + k > n || utf8_decode((const uint8_t *)s + i, k, cps, &bad) != 1) { cps[0] = c; k = 1; }
        char tmp[4];
        int tn;
        if (cps[0] < 324 && t->cp_byte[cps[0]] >= 0) { tmp[0] = (char)t->cp_byte[cps[0]]; tn = 1; }
        else tn = utf8_put(tmp, cps[0]);
        for (int j = 0; j < tn; j++, o++)
            if (o + 1 < cap) buf[o] = tmp[j];
        i += k;
    }
    if (word_end) {
        if (o + 1 < cap) buf[o] = ' ';
        o++;
    }
    if (cap) buf[o < cap ? o : cap - 1] = '\0';
    return o;
}
