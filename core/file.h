/* file.h - reading a whole (small) file into memory.
 *
 * The one place files are read whole (configs, tokenizer vocabularies, images,
 * captions, prompt lists), so every caller gets the same checks and messages:
 * "<file>: cannot open: <why>", "<file>: not a regular file", "<file>: N bytes
 * is over the M-byte limit for this kind of file", "<file>: read error: <why>".
 *
 * Not here: safetensors (mapped, see safetensors.h) and streaming reads.
 */
#ifndef SL_FILE_H
#define SL_FILE_H

#include <stddef.h>

#include "status.h"

/* Reads path into a new malloc'd buffer with a '\0' after the last byte
 * (so text can be used as a C string; it may still hold NUL bytes: use *len).
 * Refuses anything but a regular file, and files over max_bytes. On success
 * *out is the caller's to free and *len (if len is not NULL) the byte count;
 * on failure *out is NULL and ctx names the file. */
SlStatus sl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, SlCtx *ctx);

#endif
