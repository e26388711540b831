/* memplan.h - what a training run holds in memory: the plan printed before
 * step 1 and shown in the run's report (issue 22).
 *
 * A plan is rows of (label, bytes) in the order a person reads them (frozen
 * weights by dtype, trainable parameters, gradients, optimizer state,
 * activations per micro-batch, caches, ...), the predicted peak resident set,
 * and what was available. Its producer is sl_trainer_mem_plan; its consumers
 * (tools/ printing, the HTML report) only render the rows, so a row added
 * later needs no change there.
 *
 * Not here: measuring. The measured peak RSS is the caller's (getrusage).
 */
#ifndef SL_MEMPLAN_H
#define SL_MEMPLAN_H

#include <stddef.h>

#include "core/status.h"

#define SL_MEMPLAN_MAX_ROWS 32

typedef struct SlMemRow {
    char label[96];  /* "frozen weights, fp16 (U-Net linears+convs)" */
    double bytes;
} SlMemRow;

typedef struct SlMemPlan {
    int n;
    SlMemRow rows[SL_MEMPLAN_MAX_ROWS];
    double predicted_peak; /* bytes; 0: no prediction made */
    double available;      /* bytes: MemAvailable or --max-memory; 0: unknown */
    char advice[512];      /* "" when the run fits; else what to change, naming the setting */
} SlMemPlan;

/* Adds a row (ignored past SL_MEMPLAN_MAX_ROWS: the plan says so in its last row). */
void sl_mem_plan_add(SlMemPlan *p, const char *label, double bytes);

#endif
