/* config.h - reading diffusers/transformers config.json files with cJSON.
 *
 * Every getter checks the JSON type and reports "<file>: key '<k>' ..." on a
 * mismatch, so a malformed config never turns into a silent default. Getters
 * with a default use it only when the key is absent or null.
 *
 * Not here: the meaning of keys (each model reads its own).
 */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <cJSON.h>
#include <stdint.h>

#include "file.h" /* sl_read_file, which config files are read with */
#include "status.h"

/* Upper bound on a config file's size (configs are a few KiB). */
#define SL_CONFIG_MAX_BYTES (16u * 1024u * 1024u)

typedef struct SlConfig {
    cJSON *root;       /* an object */
    char path[1024];   /* for messages */
} SlConfig;

/* Reads and parses path; the root must be a JSON object. */
SlStatus sl_config_load(SlConfig *cfg, const char *path, SlCtx *ctx);
/* Parses text (label names it in messages). */
SlStatus sl_config_parse(SlConfig *cfg, const char *text, const char *label, SlCtx *ctx);
void sl_config_free(SlConfig *cfg);

/* 1 if key is present and not null. */
int sl_config_has(const SlConfig *cfg, const char *key);
/* Integers must be whole numbers within [lo, hi]. */
SlStatus sl_config_int(const SlConfig *cfg, const char *key, int64_t def, int64_t lo, int64_t hi,
                       int64_t *out, SlCtx *ctx);
SlStatus sl_config_num(const SlConfig *cfg, const char *key, double def, double *out, SlCtx *ctx);
SlStatus sl_config_bool(const SlConfig *cfg, const char *key, int def, int *out, SlCtx *ctx);
/* *out points into cfg (valid until free); def may be NULL. */
SlStatus sl_config_str(const SlConfig *cfg, const char *key, const char *def, const char **out, SlCtx *ctx);
/* An int or a list of ints: fills out[0..*n) (max cap). A single int is returned as n=1. */
SlStatus sl_config_int_list(const SlConfig *cfg, const char *key, int64_t lo, int64_t hi,
                            int64_t *out, int cap, int *n, SlCtx *ctx);
/* A list of strings: out[i] points into cfg. */
SlStatus sl_config_str_list(const SlConfig *cfg, const char *key, const char **out, int cap, int *n,
                            SlCtx *ctx);

#endif
