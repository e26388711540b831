/* cmd_quantize.c - `stylora quantize`: store a model with an NF4 U-Net.
 *
 *   stylora quantize --model DIR --out DIR [--layers LIST] [--double-quant] [--dtype fp32|fp16|bf16]
 *       Reads the diffusers folder DIR, quantizes the U-Net linears selected by --layers
 *       (attn,ff,proj by default; see pipeline/quant.h) to NF4 while streaming from the
 *       mapped weight file (their fp32 copies never exist in memory), and writes OUT as a
 *       diffusers folder: unet/config.json copied, unet/diffusion_pytorch_model.safetensors
 *       in the pre-quantized layout of pipeline/quant.h (the other U-Net weights in --dtype,
 *       fp32 by default), and symbolic links to DIR's other parts (text_encoder, vae,
 *       tokenizer, scheduler, model_index.json). train, sample and probe load it as NF4
 *       by themselves (the "stylora.quant" metadata; --base nf4 not needed, --base fp32
 *       dequantizes it); `stylora lora merge` into it re-quantizes and prints the error.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "core/config.h"
#include "core/safetensors.h"
#include "pipeline/quant.h"

static int copy_file(const char *src, const char *dst, SlCtx *ctx) {
    char *buf = NULL;
    size_t n = 0;
    if (sl_read_file(src, 64u << 20, &buf, &n, ctx) != SL_OK) return 0;
    FILE *f = fopen(dst, "wb");
    int ok = f && fwrite(buf, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    free(buf);
    if (!ok) sl_fail(ctx, SL_ERR_IO, "%s: cannot write: %s", dst, strerror(errno));
    return ok;
}

/* OUT, OUT/unet and the two files written there, before the model loads; the links to
 * the source's other parts replace a link or file in their place, but not a folder. */
static void check_outputs(const char *out) {
    char p[4200], f[4300];
    cli_check_out_dir("quantize", "--out", out);
    if (!sl_path_is_dir(out)) return;
    static const char *parts[] = {"text_encoder", "vae", "tokenizer", "scheduler", "model_index.json"};
    for (int i = 0; i < 5; i++) {
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", out, parts[i]);
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "stylora quantize: error: --out %s: a folder where the link to the model's %s goes; "
                            "remove it or choose another --out\n", p, parts[i]);
            exit(1);
        }
    }
    snprintf(p, sizeof p, "%s/unet", out);
    cli_check_out_dir("quantize", "--out", p);
    if (!sl_path_is_dir(p)) return;
    snprintf(f, sizeof f, "%s/config.json", p);
    cli_check_out_file("quantize", "--out", f);
    snprintf(f, sizeof f, "%s/diffusion_pytorch_model.safetensors", p);
    cli_check_out_file("quantize", "--out", f);
}

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *layers = NULL, *dq = NULL, *dtype = NULL, *threads = NULL, *quiet = NULL;
    const CliOpt opts[] = {
        {"--model", "DIR", "diffusers model folder (required)", &model, 0},
        {"--out", "DIR", "output model folder (required)", &out, 0},
        {"--layers", "LIST", "U-Net linears to quantize: attn,ff,proj (default), time, all, or patterns", &layers, 0},
        {"--double-quant", NULL, "8-bit double-quantized block scales (bitsandbytes compress_statistics)", &dq, 0},
        {"--dtype", "T", "dtype of the weights left dense: fp32 (default) | fp16 | bf16", &dtype, 0},
        {"--threads", "N", "threads (default: all cores)", &threads, 0},
        {"--quiet", NULL, "no info lines", &quiet, 0},
        {0},
    };
    const char *syn = "--model DIR --out DIR [options]";
    const char *pos[1];
    int npos;
    cli_parse("quantize", syn, opts, argc, argv, pos, 0, &npos);
    if (!model || !out) {
        fprintf(stderr, "stylora quantize: error: --model and --out are required\n");
        cli_usage(stderr, "quantize", syn, opts);
        return 2;
    }
    SlDType dt = SL_F32;
    if (dtype) {
        if (!strcmp(dtype, "fp16")) dt = SL_F16;
        else if (!strcmp(dtype, "bf16")) dt = SL_BF16;
        else if (strcmp(dtype, "fp32")) { fprintf(stderr, "stylora quantize: error: --dtype is fp32, fp16 or bf16\n"); return 2; }
    }
    if (threads) cli_threads(cli_int("quantize", "--threads", threads, 1, 1024));
    check_outputs(out);
    SlCtx ctx;
    cli_ctx_init(&ctx, quiet != NULL);
    if (sl_model_layout(model) != SL_LAYOUT_DIFFUSERS) {
        fprintf(stderr, "stylora quantize: error: %s: give a diffusers model folder (convert a single file first)\n", model);
        return 1;
    }
    SlModel m;
    SlModelOpts mo = {.skip_text = 1, .skip_vae = 1};
    if (sl_model_load_nf4(&m, model, &mo, layers, dq != NULL, &ctx) != SL_OK) return cli_fail("quantize", &ctx);
    char p[4096], q[4096];
    int rc = 0;
    snprintf(p, sizeof p, "%s/unet", out);
    if ((mkdir(out, 0755) != 0 && errno != EEXIST) || (mkdir(p, 0755) != 0 && errno != EEXIST)) {
        fprintf(stderr, "stylora quantize: error: %s: cannot create: %s\n", p, strerror(errno));
        sl_model_free(&m);
        return 1;
    }
    SlStWriter wr;
    sl_st_writer_init(&wr);
    SlStatus st = sl_unet_nf4_write(&m.unet, &wr, dt, layers, &ctx);
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", out);
    if (!st) st = sl_st_writer_save(&wr, p, &ctx);
    sl_st_writer_free(&wr);
    snprintf(q, sizeof q, "%s/unet/config.json", model);
    char cfg_out[4096];
    snprintf(cfg_out, sizeof cfg_out, "%s/unet/config.json", out);
    if (!st && !copy_file(q, cfg_out, &ctx)) st = ctx.status;
    /* the other parts: links to the source folder */
    const char *parts[] = {"text_encoder", "vae", "tokenizer", "scheduler", "model_index.json"};
    for (int i = 0; i < 5 && !st; i++) {
        char src[4096], abs_src[PATH_MAX], dst[4096];
        snprintf(src, sizeof src, "%s/%s", model, parts[i]);
        if (access(src, F_OK) != 0 || !realpath(src, abs_src)) continue;
        snprintf(dst, sizeof dst, "%s/%s", out, parts[i]);
        unlink(dst);
        if (symlink(abs_src, dst) != 0) st = sl_fail(&ctx, SL_ERR_IO, "%s: cannot link to %s: %s", dst, abs_src, strerror(errno));
    }
    if (st) rc = cli_fail("quantize", &ctx);
    else if (!quiet) {
        struct stat sb;
        if (stat(p, &sb) == 0) fprintf(stderr, "quantized %d U-Net linears -> %s (%.1f MB)\n", sl_unet_count_nf4(&m.unet), p, (double)sb.st_size / 1e6);
    }
    sl_model_free(&m);
    return rc;
}
