/* memplan.c - the rows of a memory plan; see memplan.h. */
#include "pipeline/memplan.h"

#include <stdio.h>

void sl_mem_plan_add(SlMemPlan *p, const char *label, double bytes) {
    if (p->n >= SL_MEMPLAN_MAX_ROWS) return;
    if (p->n == SL_MEMPLAN_MAX_ROWS - 1) { /* the last slot says rows were dropped */
        snprintf(p->rows[p->n].label, sizeof p->rows[p->n].label, "(more rows than the plan holds)");
        p->rows[p->n++].bytes = 0;
        return;
    }
    snprintf(p->rows[p->n].label, sizeof p->rows[p->n].label, "%s", label);
    p->rows[p->n++].bytes = bytes;
}
