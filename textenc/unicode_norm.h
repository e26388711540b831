/* unicode_norm.h - the Unicode pieces of the CLIP tokenizer's text clean-up.
 *
 * Reproduces, on arrays of code points, what CPython does inside transformers'
 * BasicTokenizer: the character classes of _clean_text / _tokenize_chinese_chars /
 * str.split(), str.lower() (including U+0130 -> "i\u0307" and the Final_Sigma rule)
 * and unicodedata.normalize("NFC"). The data (textenc/unicode_tables.c) is generated from
 * Python 3.11's unicodedata 14.0.0 by tools/gen_unicode_tables.py, so results match the
 * Python reference exactly; the PCRE2 pre-tokenizer has its own (PCRE2 10.42) tables.
 *
 * Not here: NFD/NFKC as public operations, case folding, grapheme clusters, UTF-8 I/O.
 * No allocation, no global mutable state.
 */
#ifndef SL_UNICODE_NORM_H
#define SL_UNICODE_NORM_H

#include <stddef.h>
#include <stdint.h>

typedef struct SlUcRange { uint32_t lo, hi; uint32_t v; } SlUcRange;    /* [lo,hi] -> v */
typedef struct SlUcPair { uint32_t cp, to; } SlUcPair;                   /* simple lower */
typedef struct SlUcDecomp { uint32_t cp; uint32_t off, len; } SlUcDecomp; /* into pool */
typedef struct SlUcComp { uint32_t a, b, c; } SlUcComp;                  /* a+b -> c */

/* Generated tables (sorted by code point). */
extern const char sl_uc_version[];
extern const SlUcRange sl_uc_class[];   extern const size_t sl_uc_class_n;
extern const SlUcPair sl_uc_lower[];    extern const size_t sl_uc_lower_n;
extern const SlUcRange sl_uc_sigma[];   extern const size_t sl_uc_sigma_n;
extern const SlUcRange sl_uc_ccc[];     extern const size_t sl_uc_ccc_n;
extern const SlUcDecomp sl_uc_decomp[]; extern const size_t sl_uc_decomp_n;
extern const uint32_t sl_uc_decomp_pool[];
extern const SlUcComp sl_uc_comp[];     extern const size_t sl_uc_comp_n;

/* Character classes of the BasicTokenizer clean-up. */
enum {
    SL_UC_OTHER = 0,
    SL_UC_DROP = 1,  /* U+0000, U+FFFD, general category C* except \t \n \r: removed */
    SL_UC_SPACE = 2, /* \t \n \r, Zs, and other str.isspace() chars: word separator */
    SL_UC_CJK = 3    /* CJK ideograph: becomes its own word */
};
int sl_uc_char_class(uint32_t cp);

/* Longest canonical decomposition of one code point (Hangul included). */
#define SL_UC_MAX_DECOMP 4

/* NFC in place. `cps` holds n code points and has room for n * SL_UC_MAX_DECOMP; returns
 * the new length (<= that room; NFC never ends longer than the full decomposition). */
size_t sl_uc_nfc(uint32_t *cps, size_t n);

/* str.lower() of cps[0..n) into out (room for 2*n: U+0130 becomes two code points);
 * returns the output length. Capital sigma uses CPython's Final_Sigma context within cps. */
size_t sl_uc_lowercase(uint32_t *out, const uint32_t *cps, size_t n);

#endif
