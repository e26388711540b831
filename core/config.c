/* config.c - type-checked cJSON getters; see config.h. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

SlStatus sl_config_parse(SlConfig *cfg, const char *text, const char *label, SlCtx *ctx) {
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->path, sizeof cfg->path, "%s", label ? label : "<config>");
    const char *end = NULL;
    cfg->root = cJSON_ParseWithOpts(text, &end, 1);
    if (!cfg->root) {
        long off = end ? (long)(end - text) : -1;
        int line = 1;
        for (long i = 0; i < off; i++) line += text[i] == '\n';
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: malformed JSON near line %d", cfg->path, line);
    }
    if (!cJSON_IsObject(cfg->root)) {
        cJSON_Delete(cfg->root);
        cfg->root = NULL;
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: top level is not a JSON object", cfg->path);
    }
    return SL_OK;
}

SlStatus sl_config_load(SlConfig *cfg, const char *path, SlCtx *ctx) {
    memset(cfg, 0, sizeof *cfg);
    char *text;
    SL_TRY(sl_read_file(path, SL_CONFIG_MAX_BYTES, &text, NULL, ctx));
    SlStatus st = sl_config_parse(cfg, text, path, ctx);
    free(text);
    return st;
}

void sl_config_free(SlConfig *cfg) {
    cJSON_Delete(cfg->root);
    cfg->root = NULL;
}

static const cJSON *get(const SlConfig *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

int sl_config_has(const SlConfig *cfg, const char *key) { return get(cfg, key) != NULL; }

static SlStatus to_int(const SlConfig *cfg, const char *key, const cJSON *v, int64_t lo, int64_t hi, int64_t *out,
                       SlCtx *ctx) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' must be an integer", cfg->path, key);
    int64_t x = (int64_t)v->valuedouble;
    if (x < lo || x > hi)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' = %lld is outside [%lld, %lld]", cfg->path, key, (long long)x,
                       (long long)lo, (long long)hi);
    *out = x;
    return SL_OK;
}

SlStatus sl_config_int(const SlConfig *cfg, const char *key, int64_t def, int64_t lo, int64_t hi, int64_t *out,
                       SlCtx *ctx) {
    const cJSON *v = get(cfg, key);
    if (!v) { *out = def; return SL_OK; }
    return to_int(cfg, key, v, lo, hi, out, ctx);
}

SlStatus sl_config_num(const SlConfig *cfg, const char *key, double def, double *out, SlCtx *ctx) {
    const cJSON *v = get(cfg, key);
    if (!v) { *out = def; return SL_OK; }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' must be a finite number", cfg->path, key);
    *out = v->valuedouble;
    return SL_OK;
}

SlStatus sl_config_bool(const SlConfig *cfg, const char *key, int def, int *out, SlCtx *ctx) {
    const cJSON *v = get(cfg, key);
    if (!v) { *out = def; return SL_OK; }
    if (!cJSON_IsBool(v)) return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' must be true or false", cfg->path, key);
    *out = cJSON_IsTrue(v);
    return SL_OK;
}

SlStatus sl_config_str(const SlConfig *cfg, const char *key, const char *def, const char **out, SlCtx *ctx) {
    const cJSON *v = get(cfg, key);
    if (!v) { *out = def; return SL_OK; }
    if (!cJSON_IsString(v)) return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' must be a string", cfg->path, key);
    *out = v->valuestring;
    return SL_OK;
}

SlStatus sl_config_int_list(const SlConfig *cfg, const char *key, int64_t lo, int64_t hi, int64_t *out, int cap,
                            int *n, SlCtx *ctx) {
    const cJSON *v = get(cfg, key);
    *n = 0;
    if (!v) return SL_OK;
    if (cJSON_IsNumber(v)) {
        *n = 1;
        return to_int(cfg, key, v, lo, hi, out, ctx);
    }
    if (!cJSON_IsArray(v)) return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' must be an integer or a list", cfg->path, key);
    if (cJSON_GetArraySize(v) > cap)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' has %d entries, at most %d supported", cfg->path, key,
                       cJSON_GetArraySize(v), cap);
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        SL_TRY(to_int(cfg, key, it, lo, hi, &out[*n], ctx));
        (*n)++;
    }
    return SL_OK;
}

SlStatus sl_config_str_list(const SlConfig *cfg, const char *key, const char **out, int cap, int *n, SlCtx *ctx) {
    const cJSON *v = get(cfg, key);
    *n = 0;
    if (!v) return SL_OK;
    if (!cJSON_IsArray(v)) return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' must be a list of strings", cfg->path, key);
    if (cJSON_GetArraySize(v) > cap)
        return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' has %d entries, at most %d supported", cfg->path, key,
                       cJSON_GetArraySize(v), cap);
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        if (!cJSON_IsString(it)) return sl_fail(ctx, SL_ERR_FORMAT, "%s: key '%s' must be a list of strings", cfg->path, key);
        out[(*n)++] = it->valuestring;
    }
    return SL_OK;
}
