/* train_mpi.h - `stylora train` under mpirun (issue 13; only with -DSL_MPI=ON).
 * cmd_train hands over to train_mpi_run when the process was started by an MPI
 * launcher; see train_mpi.c. */
#ifndef SL_TOOLS_TRAIN_MPI_H
#define SL_TOOLS_TRAIN_MPI_H

#ifdef SL_WITH_MPI
#include "pipeline/dist.h"
#include "pipeline/train.h"

/* 1 if started by mpirun/mpiexec/srun (then cmd_train calls train_mpi_run). */
static inline int train_mpi_launched(void) { return sl_dist_launched(); }
/* The data-parallel training loop: every rank trains, rank 0 writes the
 * adapter, state, CSV log (c->log_csv), loss curve and the HTML report at
 * `report` (NULL: none; showing `cmdline`) (pipeline/train_run.c).
 * Returns the exit code (0, 1 error, 2 usage, 130 interrupted). */
int train_mpi_run(SlTrainConfig *c, int quiet, const char *report, const char *cmdline);
#endif

#endif
