/* stylora.c - the command-line entry point: dispatches to subcommands.
 *
 *   stylora inspect PATH      what a file or folder holds and what it is
 *   stylora probe COMPONENT   run one model component on tensors from a file
 *   stylora tokenize TEXT     CLIP token ids
 *   stylora lora convert|merge  adapter files: kohya <-> PEFT; merge into a U-Net
 *   stylora train             a style adapter from a folder of images
 *   stylora sample            images from prompts
 *   stylora quantize          a model with NF4 U-Net linears (QLoRA)
 *   stylora eval              style distance and prompt fidelity of an adapter
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/gemm.h"

#include "cli.h"

static const CliCmd k_cmds[] = {
    {"inspect", "PATH", "show a file's or folder's tensors, metadata and what it is recognized as", cmd_inspect},
    {"probe", "COMPONENT --model DIR --in IN.safetensors --out OUT.safetensors",
     "run one model component on tensors from a file and write its outputs", cmd_probe},
    {"tokenize", "--model DIR TEXT", "print CLIP token ids of a text", cmd_tokenize},
    {"lora", "convert|merge ...", "convert adapter files (kohya <-> PEFT) or merge adapters into a U-Net", cmd_lora},
    {"train", "--model DIR --data FOLDER --out ADAPTER.safetensors [options]", "train a style adapter on a folder of images", cmd_train},
    {"sample", "--model DIR --prompt TEXT [options]", "draw images from prompts", cmd_sample},
    {"quantize", "--model DIR --out DIR [options]", "store a model with its U-Net linears in NF4 (4-bit NormalFloat)", cmd_quantize},
    {"eval", "--model DIR --lora FILE[:W] --style-dir DIR [options]", "measure a style adapter: style distance and prompt fidelity", cmd_eval},
};

static void usage(FILE *out) {
    fprintf(out,
            "stylora - teach a Stable-Diffusion-style model a style with LoRA, on the CPU\n\n"
            "usage: stylora COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        fprintf(out, "  %-10s %s\n", k_cmds[i].name, k_cmds[i].summary);
    fprintf(out, "\n'stylora COMMAND --help' lists the options of a command.\n");
}

/* Idle OpenMP threads spin only briefly (GOMP_SPINCOUNT 3000, a few microseconds)
 * and then sleep: libgomp's default 300,000 steals the cores the working threads
 * need on a busy machine (issue 18: the demo's training at 0.31 of its idle speed
 * beside one busy loop), and no spin at all (passive) cost 14% of the idle speed.
 * bench/bench_contended.sh, one run each on this 2-core machine: default spin idle
 * 26.1 it/s, beside a busy loop 0.31, two at once 0.23; passive 22.4 it/s, 1.05,
 * 0.88; spin 3000 26.0 it/s, 0.63, 0.57. libgomp reads its variables in a load-time
 * constructor, before main, so a setenv here comes too late: the program runs
 * itself again with it set (once: the variable is then set). A user's
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept. Without /proc the exec fails and the
 * run continues as it is. */
static void omp_wait_short(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", "3000", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv) {
    omp_wait_short(argv);
    sl_gemm_init();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (strcmp(argv[1], k_cmds[i].name) == 0) return k_cmds[i].run(argc - 1, argv + 1);
    fprintf(stderr, "stylora: error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
