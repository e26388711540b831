/* tokenizer.h - the CLIP byte-level BPE tokenizer (SD 1.x / 2.x text encoders).
 *
 * Usage:
 *     SlTokenizer *tok;
 *     SL_TRY(sl_tokenizer_load(&tok, "model/tokenizer", ctx));  // or ".../bpe_simple_vocab_16e6.txt.gz"
 *     int32_t ids[77]; int n_real;                              // [T] token ids
 *     SL_TRY(sl_tokenizer_encode(tok, "a photo of a cat", ids, 77, &n_real, ctx));
 *     sl_tokenizer_free(tok);
 *
 * Sources it loads:
 *   - a diffusers `tokenizer/` folder: vocab.json (token -> id), merges.txt (first line is a
 *     header and skipped, then at most 49152-256-2 merges "a b", rank = line order, a repeated
 *     pair keeps its last rank), and when present tokenizer_config.json / special_tokens_map.json
 *     (the latter wins) for bos/eos/pad/unk tokens (a string or {"content": ...}),
 *     model_max_length (77 when absent or absurdly large, e.g. transformers' 1e30 "unset") and
 *     tokenizer_config's "added_tokens_decoder" ({"id": {"content": ...}}; lstrip/rstrip flags
 *     ignored). added_tokens.json and "additional_special_tokens" are not read.
 *   - OpenAI CLIP's bpe_simple_vocab_16e6.txt.gz (any path that is a file; zlib also reads it
 *     uncompressed): the vocabulary is rebuilt as CLIP's simple_tokenizer does (the 256 byte
 *     symbols in bytes_to_unicode order, the same with "</w>", each merge joined, then
 *     <|startoftext|>, <|endoftext|>); pad is <|endoftext|>, model_max_length 77. (OpenAI's
 *     clip.tokenize() and open_clip pad with id 0 instead; SD 2.x diffusers folders say so with
 *     pad_token "!", which the folder loader honours.)
 *
 * Which text clean-up this matches: transformers' CLIPTokenizer (the slow one diffusers
 * pipelines use) when ftfy is NOT installed, i.e. BasicTokenizer(strip_accents=False,
 * do_split_on_punc=False): drop U+0000, U+FFFD and category C* except \t\n\r (so ZWJ in emoji
 * sequences and soft hyphens vanish); whitespace -> space; spaces around CJK ideographs (each
 * becomes its own word); NFC; split on whitespace; Python str.lower() per word (full mapping,
 * CPython's Final_Sigma rule; tables generated from Python 3.11's unicodedata). Before that,
 * as PreTrainedTokenizer.tokenize does with its added-token trie, the exact (case-sensitive)
 * strings of the special tokens and added tokens are cut out of the raw text, longest first,
 * and each becomes its id; the pieces between are cleaned and tokenized separately. Since
 * transformers 4.34 every special token is in that trie even when it is an ordinary vocabulary
 * entry, so with SD 2.x's pad_token "!" the text "wow!!" gives wow</w>, "!", "!" (ids 0, 0),
 * not the BPE token "!!</w>" that OpenAI/open_clip produce; we match transformers. Then the CLIP
 * pattern (PCRE2, UTF+UCP+CASELESS)
 *     <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * (so "1234" gives four digit tokens), UTF-8 bytes -> bytes_to_unicode symbols, the last symbol
 * gets "</w>", BPE by merge rank, vocab lookup (unknown -> unk token). A regex match equal to a
 * special string maps straight to its id. Output: BOS, the first max_len-2 tokens, EOS, padding.
 * OpenAI's original simple_tokenizer instead runs ftfy.fix_text, html.unescape twice (so
 * "&amp;" becomes "&"), collapses whitespace and lowercases, without control-character removal
 * or CJK splitting; CLIPTokenizerFast (Rust) does NFC, whitespace collapse and lowercase only.
 * For plain ASCII prompts without HTML entities all variants agree: the golden ids in
 * shared/golden/tiny-sd1 (`tok.input_ids`, the SD 1.5 tokenizer's ids for three ASCII prompts)
 * equal ours exactly but cannot tell the variants apart.
 *
 * Input text must be valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF):
 * anything else is SL_ERR_ARG naming the byte offset, rather than silently replacing bytes
 * (Python could not even hold such a string). Texts over 16 MiB are SL_ERR_ARG too; scratch
 * is about 80 bytes per input byte, freed before returning.
 *
 * Thread safety: a loaded tokenizer is read-only; encode may run concurrently (each call
 * allocates its own scratch, sized by the text, once).
 * Not here: decoding whole sequences, pairs of texts, ftfy, the fast tokenizer's normalization.
 *
 * Dimension letters: T tokens (max_len, normally model_max_length = 77).
 */
#ifndef SL_TEXTENC_TOKENIZER_H
#define SL_TEXTENC_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct SlTokenizer SlTokenizer;

/* Loads a tokenizer from a diffusers tokenizer folder or from a CLIP .txt.gz merges file.
 * On failure *out is NULL and ctx names the file (and line, for JSON and merges). */
SlStatus sl_tokenizer_load(SlTokenizer **out, const char *dir_or_file, SlCtx *ctx);

void sl_tokenizer_free(SlTokenizer *tok);

/* Tokenizes utf8 (NUL-terminated) into ids[0..max_len): BOS, at most max_len-2 tokens, EOS,
 * then the pad id. *n_real (may be NULL) gets the count before padding (>= 2).
 * max_len must be >= 2. SL_ERR_ARG for invalid UTF-8 (the message names the byte offset). */
SlStatus sl_tokenizer_encode(const SlTokenizer *tok, const char *utf8, int32_t *ids, int max_len,
                             int *n_real, SlCtx *ctx);

/* Like sl_tokenizer_encode for a text of `len` bytes (may contain no NUL). */
SlStatus sl_tokenizer_encode_n(const SlTokenizer *tok, const char *utf8, size_t len, int32_t *ids,
                               int max_len, int *n_real, SlCtx *ctx);

/* Like sl_tokenizer_encode, and also says what did not fit: *n_dropped gets how many
 * tokens of the text are past the max_len-2 kept (0 if none; a lower bound past 4M
 * tokens), and dropped[0..cap) (may be NULL) their decoded text, cut with "..." if
 * longer. For A1111's "N tokens over the limit of 75 were dropped" warning. A text
 * that fits costs one encode; one that fills max_len is encoded twice. */
SlStatus sl_tokenizer_encode_dropped(const SlTokenizer *tok, const char *utf8, int32_t *ids, int max_len,
                                     int *n_real, int *n_dropped, char *dropped, size_t cap, SlCtx *ctx);

int32_t sl_tokenizer_bos(const SlTokenizer *tok);
int32_t sl_tokenizer_eos(const SlTokenizer *tok);
int32_t sl_tokenizer_pad(const SlTokenizer *tok);
int32_t sl_tokenizer_unk(const SlTokenizer *tok);
int32_t sl_tokenizer_vocab_size(const SlTokenizer *tok);   /* vocabulary entries, incl. new added tokens */
int sl_tokenizer_max_length(const SlTokenizer *tok);       /* model_max_length */
int sl_tokenizer_n_merges(const SlTokenizer *tok);

/* Looks up a token string as stored in the vocabulary (byte-level form, e.g. "cat</w>");
 * returns its id or -1. */
int32_t sl_tokenizer_token_id(const SlTokenizer *tok, const char *token);

/* The vocabulary string of id (byte-level form), or NULL if no token has that id. */
const char *sl_tokenizer_token_text(const SlTokenizer *tok, int32_t id);

/* Decodes one token for printing: the original UTF-8 bytes, "</w>" turned into a space.
 * Writes at most cap-1 bytes plus a NUL into buf (cap >= 1); returns the full length the
 * decoded token needs (like snprintf), or 0 for an unknown id. A token may hold a partial
 * UTF-8 sequence (byte-level BPE splits characters). */
size_t sl_tokenizer_decode_token(const SlTokenizer *tok, int32_t id, char *buf, size_t cap);

#endif
