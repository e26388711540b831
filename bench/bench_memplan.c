/* bench_memplan.c - the memory plan's predicted peak (pipeline/memplan.h, issue 22)
 * beside the measured peak RSS of a process running a few training steps.
 *
 * Usage: bench_memplan [--source DIR] [--shared DIR] [--steps N] [--sd15] [--res R]
 *   --source  the stylora tree (models/shapes64, tests/data/shapes64_styles/neon; default ".")
 *   --shared  the folder holding sd15/ (configs only; default "../shared")
 *   --only    only the cases whose name holds NAME (BENCH_MEMPLAN_TRACE=1: the plan's rows
 *             and the child's VmRSS/VmHWM after each phase, on stderr)
 *   --sd15    also the SD-1.5 shape at --res (default 256) with seeded random weights
 *             (~2-5 GB and tens of seconds per case)
 *
 * Each case runs in its own forked child (its own peak; wait4 reads the child's
 * ru_maxrss):
 *   shapes64 (real weights): sl_trainer_init + --steps sl_trainer_step, the program's
 *     own path, with --base fp32, the default (fp16: the file stores F16), bf16 and nf4;
 *   sd15 --random: no weight files, so the child builds what sl_trainer_init builds
 *     with the same library calls (random CLIP, VAE and U-Net, the U-Net converted to
 *     fp16 / bf16 / NF4 in place, then the peak reset: a real checkpoint streams into them
 *     and never holds the fp32 copy), encodes one image and one caption (the encoders'
 *     work buffers; every cache slot gets the result), plans the U-Net as set-up does
 *     (max(micro, 2)) and re-plans it for the micro-batch as the step does, and runs
 *     --steps LoRA steps (forward, MSE, backward, AdamW). The prediction is
 *     sl_train_predict_memory on the same settings (configs, data folder).
 * A bf16 base holds the same bytes as an fp16 one (its kernel's packing buffers are per
 * thread, ~1 MB, as the fp32 kernel's).
 *
 * Prints one RESULT line per case (bench_util.h) with predicted_mib, measured_mib and
 * ratio = predicted / measured (target: within 15%).
 */
#include <sys/resource.h>
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "core/rng.h"
#include "pipeline/optim.h"
#include "pipeline/train.h"

typedef struct Case {
    const char *name, *base; /* base NULL: the default */
    int sd15;
} Case;

static const char *g_source = ".", *g_shared = "../shared";
static int g_steps = 2;
static int64_t g_res = 256;
static char g_model[4096], g_data[4096], g_out[4096];

static void cfg_of(const Case *k, SlTrainConfig *c) {
    sl_train_config_default(c);
    snprintf(g_data, sizeof g_data, "%s/tests/data/shapes64_styles/neon", g_source);
    if (k->sd15) snprintf(g_model, sizeof g_model, "%s/sd15", g_shared);
    else snprintf(g_model, sizeof g_model, "%s/models/shapes64", g_source);
    snprintf(g_out, sizeof g_out, "/tmp/bench_memplan_%d.safetensors", (int)getpid());
    c->model = g_model;
    c->data = g_data;
    c->out = g_out;
    c->steps = g_steps;
    c->base = k->base;
    if (k->sd15) c->resolution = g_res;
}

/* child: the real trainer */
static int run_trainer(const SlTrainConfig *c) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    SlTrainer tr;
    if (sl_trainer_init(&tr, c, &ctx)) bench_die("bench_memplan", &ctx);
    for (int i = 0; i < g_steps; i++)
        if (sl_trainer_step(&tr, &ctx)) bench_die("bench_memplan", &ctx);
    sl_trainer_free(&tr);
    return 0;
}

static void rss_note(const char *what) {
    if (!getenv("BENCH_MEMPLAN_TRACE")) return;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS", 5) || !strncmp(line, "VmHWM", 5)) fprintf(stderr, "%s: %s", what, line);
    if (f) fclose(f);
}

/* child: what sl_trainer_init and sl_trainer_step hold, on random SD-1.5-shaped weights */
static int run_random(const SlTrainConfig *c) {
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const char *dir = c->model;
    SlClip *clip;
    SlClipConfig ccfg;
    SlVae *vae;
    SlVaeConfig vcfg;
    SlUNet u;
    SlUNetConfig ucfg;
    if (bench_clip_open(&clip, &ccfg, dir, 1, &ctx) || bench_vae_open(&vae, &vcfg, dir, 1, &ctx)) bench_die("bench_memplan", &ctx);
    const int nf4 = c->base && !strcmp(c->base, "nf4");
    const int half = c->base && !strcmp(c->base, "fp16") ? SL_HALF_FP16 : c->base && !strcmp(c->base, "bf16") ? SL_HALF_BF16 : 0;
    SlNf4Stats ns;
    SlHalfStats hs;
    if (nf4 ? bench_unet_open_nf4(&u, &ucfg, dir, 1, NULL, 0, &ns, &ctx)
            : half ? bench_unet_open_half(&u, &ucfg, dir, 1, (SlHalfFmt)half, &hs, &ctx)
                   : bench_unet_open(&u, &ucfg, dir, 1, &ctx))
        bench_die("bench_memplan", &ctx);
    rss_note("encoders + U-Net");
    if ((nf4 || half) && bench_reset_peak_rss()) fprintf(stderr, "bench_memplan: cannot reset the peak RSS\n");
    SlDataset ds;
    SlDataOpts dopts = {0};
    if (sl_dataset_scan(&ds, c->data, &dopts, &ctx)) bench_die("bench_memplan", &ctx);
    const int n = ds.n;
    sl_dataset_free(&ds);
    const int64_t R = c->resolution, f = sl_vae_downscale(&vcfg), h = R / f, C = vcfg.latent_channels, T = ccfg.P,
                  D = ccfg.D, nl = C * h * h, nt = T * D, B = c->micro_batch > 0 ? c->micro_batch : c->batch;
    /* caches: one image and one caption really encoded (the work buffers), copied into every slot */
    float *lat_mean = sl_alloc((size_t)n * nl * 4), *lat_std = sl_alloc((size_t)n * nl * 4);
    float *text = sl_alloc((size_t)(n + 1) * nt * 4), *img = sl_alloc((size_t)3 * R * R * 4), *logvar = sl_alloc((size_t)nl * 4);
    int32_t *ids = calloc((size_t)T, sizeof *ids);
    if (!lat_mean || !lat_std || !text || !img || !logvar || !ids) return fprintf(stderr, "bench_memplan: out of memory\n"), 1;
    sl_rng_uniform(img, 3 * R * R, 5, 0, 0);
    if (sl_vae_encode(vae, img, 1, R, R, lat_mean, logvar, &ctx)) bench_die("bench_memplan", &ctx);
    for (int64_t i = 0; i < T; i++) ids[i] = (int32_t)(i ? ccfg.eos_id : ccfg.bos_id);
    if (sl_clip_forward(clip, ids, 1, (int)T, text, NULL, NULL, &ctx)) bench_die("bench_memplan", &ctx);
    for (int i = 0; i < n; i++) {
        memcpy(lat_mean + (size_t)i * nl, lat_mean, (size_t)nl * 4);
        for (int64_t k = 0; k < nl; k++) lat_std[(size_t)i * nl + k] = expf(0.5f * logvar[k]);
        memcpy(text + (size_t)(i + 1) * nt, text, (size_t)nt * 4);
    }
    sl_free(img);
    sl_free(logvar);
    rss_note("caches encoded");
    /* set-up's plan, the adapter and its caches, the optimizer, the step buffers */
    if (sl_unet_plan(&u, B > 2 ? B : 2, h, h, T, &ctx)) bench_die("bench_memplan", &ctx);
    SlSites sites;
    SlAdapter ad;
    SlAdapterSet set;
    sl_sites_init(&sites);
    SlAdapterOpts ao = sl_adapter_opts_default();
    ao.rank = c->rank;
    ao.alpha = c->alpha;
    if (sl_sites_add_unet(&sites, &u, &ctx) || sl_adapter_create(&ad, &sites, &ao, &ctx) ||
        sl_adapter_enable_grads(&ad, &ctx))
        bench_die("bench_memplan", &ctx);
    SlAdapter *ads[1] = {&ad};
    float w1[1] = {1.0f};
    if (sl_adapter_set_apply(&set, &sites, ads, w1, 1, 0.0f, 9, &ctx)) bench_die("bench_memplan", &ctx);
    sl_adapter_set_training(&set, 1);
    SlParamRef *params = calloc((size_t)ad.n * 2, sizeof *params);
    int np = 0;
    for (int i = 0; i < ad.n; i++) {
        SlLoraMod *m = &ad.mods[i];
        params[np++] = (SlParamRef){m->A, m->dA, m->r * m->I * m->k * m->k, 1, m->name};
        params[np++] = (SlParamRef){m->B, m->dB, m->O * m->r, 1, m->name};
    }
    SlAdamW opt;
    if (sl_adamw_init(&opt, params, np, &c->adam, &ctx)) bench_die("bench_memplan", &ctx);
    float *xt = sl_alloc((size_t)B * nl * 4), *target = sl_alloc((size_t)B * nl * 4), *pred = sl_alloc((size_t)B * nl * 4);
    float *dout = sl_alloc((size_t)B * nl * 4), *x0 = sl_alloc((size_t)B * nl * 4), *eps = sl_alloc((size_t)B * nl * 4);
    float *ehs = sl_alloc((size_t)B * nt * 4), *ts = sl_alloc((size_t)B * 4);
    rss_note("set-up done");
    /* the steps: the U-Net re-planned for the micro-batch (sl_trainer_step's plan_batch) */
    if (sl_unet_plan(&u, B, h, h, T, &ctx)) bench_die("bench_memplan", &ctx);
    for (int s = 0; s < g_steps; s++) {
        sl_adapter_zero_grads(&ad);
        for (int64_t b = 0; b < B; b++) {
            memcpy(x0 + b * nl, lat_mean + (size_t)(b % n) * nl, (size_t)nl * 4);
            memcpy(ehs + b * nt, text + (size_t)(b % n + 1) * nt, (size_t)nt * 4);
            ts[b] = 500.0f;
        }
        sl_rng_normal(eps, B * nl, 3, (uint64_t)s, 0);
        for (int64_t i = 0; i < B * nl; i++) xt[i] = 0.7f * x0[i] + 0.7f * eps[i], target[i] = eps[i];
        sl_unet_forward(&u, pred, xt, ts, ehs);
        rss_note("forward");
        for (int64_t i = 0; i < B * nl; i++) dout[i] = 2.0f * (pred[i] - target[i]) / (float)(B * nl);
        sl_unet_backward(&u, NULL, dout);
        sl_adamw_step(&opt, 1e-4f);
        rss_note("step");
    }
    return 0; /* (the process ends: the OS frees it all) */
}

/* Runs the case in a child; returns its peak RSS in bytes (0 on failure). */
static double measure(const Case *k, const SlTrainConfig *c, double *seconds) {
    fflush(stdout);
    const double t0 = bench_now();
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) _exit(k->sd15 ? run_random(c) : run_trainer(c));
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) return 0;
    *seconds = bench_now() - t0;
    return (double)ru.ru_maxrss * 1024.0;
}

int main(int argc, char **argv) {
    int sd15 = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "--sd15")) sd15 = 1;
        else if (v && !strcmp(s, "--source")) g_source = argv[++i];
        else if (v && !strcmp(s, "--shared")) g_shared = argv[++i];
        else if (v && !strcmp(s, "--steps")) g_steps = atoi(argv[++i]);
        else if (v && !strcmp(s, "--res")) g_res = atoll(argv[++i]);
        else if (v && !strcmp(s, "--only")) only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--source DIR] [--shared DIR] [--steps N] [--sd15] [--res R] [--only NAME]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const Case cases[] = {
        {"shapes64_lora_fp32", "fp32", 0}, {"shapes64_lora_fp16", NULL, 0}, {"shapes64_lora_bf16", "bf16", 0},
        {"shapes64_lora_nf4", "nf4", 0},   {"sd15_lora_fp32", "fp32", 1},   {"sd15_lora_fp16", "fp16", 1},
        {"sd15_lora_bf16", "bf16", 1},     {"sd15_lora_nf4", "nf4", 1},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const Case *k = &cases[i];
        if ((k->sd15 && !sd15) || (only && !strstr(k->name, only))) continue;
        SlTrainConfig c;
        cfg_of(k, &c);
        SlCtx ctx;
        sl_ctx_init(&ctx);
        SlMemPlan plan;
        if (sl_train_predict_memory(&c, &plan, &ctx)) bench_die("bench_memplan", &ctx);
        if (getenv("BENCH_MEMPLAN_TRACE"))
            for (int r = 0; r < plan.n; r++) fprintf(stderr, "  %-64s %10.1f\n", plan.rows[r].label, plan.rows[r].bytes / 1048576);
        double secs = 0;
        const double got = measure(k, &c, &secs);
        unlink(g_out);
        char st[4200];
        snprintf(st, sizeof st, "%s.state", g_out);
        unlink(st);
        if (got <= 0) {
            fprintf(stderr, "bench_memplan: %s: the child failed\n", k->name);
            bad = 1;
            continue;
        }
        const double r = plan.predicted_peak / got;
        char extra[256];
        snprintf(extra, sizeof extra, " predicted_mib=%.1f measured_mib=%.1f ratio=%.3f within_15pct=%d", plan.predicted_peak / 1048576,
                 got / 1048576, r, fabs(r - 1) <= 0.15);
        bench_result(k->name, secs, 0, extra);
    }
    return bad;
}
