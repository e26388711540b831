/* dist.h - data-parallel training over MPI (issue 13): the process group, the
 * all-reduce that fills SlTrainer's reduce_grads slot, and small collectives
 * (loss for the log, agreement on errors and on stopping).
 *
 * Built only with -DSL_MPI=ON (which defines SL_WITH_MPI); the plain build
 * sees just sl_dist_sum_ranks, the rank-order sum, which needs no MPI and is
 * also the oracle of the tests.
 *
 * Reductions. The trainer's loss is normalised by the global batch, so the
 * gradients of the ranks are SUMMED. Two ways:
 *   SL_DIST_ORDERED (default): MPI_Allgather of every rank's buffer, then
 *     each rank sums the parts in rank order 0, 1, .., N-1 (in double, rounded
 *     once). The result is the same bytes on every rank and in every run,
 *     whatever reduction tree or algorithm MPI picks; it costs N x the buffer
 *     in memory (bounded: the buffer goes in chunks of SL_DIST_CHUNK floats)
 *     and N/2 x the bandwidth of a ring all-reduce. It is also the sum the
 *     trainer applies to its micro-batches (train.h, micro_batch), so N ranks
 *     x batch b give the bytes of one process with batch N b, micro-batch b.
 *   SL_DIST_MPI_SUM: MPI_Allreduce(MPI_SUM) in float. MPI gives the same
 *     result on every rank of one call but the summation order (and so the
 *     last bits) is the implementation's and may change with the rank count,
 *     message size or Open MPI's tuned-collective choice. Cheaper on many
 *     machines.
 *
 * Errors. MPI calls return codes (MPI_ERRORS_RETURN on a duplicated world
 * communicator) that become SlStatus with MPI's message. The reduce_grads slot
 * returns nothing, so a failed reduction fills the buffer with NaN (the
 * trainer then refuses the step and updates nothing) and records the reason,
 * which sl_dist_check returns. A rank that dies is seen by mpirun, which ends
 * the job naming the rank (Open MPI 4 has no fault-tolerant continuation).
 *
 * Not here: what each rank trains on (the trainer's rank/world indexing), and
 * printing (tools/train_mpi.c).
 */
#ifndef SL_PIPELINE_DIST_H
#define SL_PIPELINE_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* out[i] = sum over r = 0..world-1 in that order of parts[r * stride + i],
 * accumulated in double and rounded once to float. out may alias parts[0..n). */
static inline void sl_dist_sum_ranks(float *out, const float *parts, int world, size_t n, size_t stride) {
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < world; r++) s += (double)parts[(size_t)r * stride + i];
        out[i] = (float)s;
    }
}

#ifdef SL_WITH_MPI
#include <mpi.h>

typedef enum SlDistReduce { SL_DIST_ORDERED = 0, SL_DIST_MPI_SUM = 1 } SlDistReduce;

/* floats per all-gather in the ordered reduction (N x 16 MB of gather buffer) */
#define SL_DIST_CHUNK ((size_t)4 << 20)

typedef struct SlDist {
    int rank, world;
    int own_mpi;             /* 1: MPI_Init was called here (finalize calls MPI_Finalize) */
    MPI_Comm comm;           /* a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN */
    SlDistReduce mode;
    float *gather;           /* [world, SL_DIST_CHUNK] ordered-reduction buffer (lazily) */
    /* counters of the gradient reductions */
    int64_t n_reduce;
    double reduce_seconds;   /* wall time inside reduce_grads */
    uint64_t reduce_bytes;   /* gradient bytes per rank per reduction (the last one) */
    /* the first failure inside reduce_grads (it cannot return one) */
    SlStatus failed;
    char msg[SL_MSG_MAX];
} SlDist;

/* 1 if this process was started by mpirun/mpiexec/srun with a PMI(x) launcher
 * (the environment says so), so MPI should be initialised. */
int sl_dist_launched(void);
/* Joins the process group (MPI_Init_thread FUNNELED unless MPI is already up).
 * mode picks the gradient reduction. */
SlStatus sl_dist_init(SlDist *d, SlDistReduce mode, SlCtx *ctx);
/* Frees the buffers and finalizes MPI if init started it. */
void sl_dist_finalize(SlDist *d);
/* Ends every rank of the job at once (MPI_Abort): for errors that leave the
 * other ranks waiting in a collective. Does not return. */
void sl_dist_abort(SlDist *d, int code);

/* The SlTrainer reduce_grads slot (user = SlDist*): buf[n] becomes the sum of
 * every rank's buf, the same bytes on every rank. On failure: NaN + d->failed. */
void sl_dist_reduce_grads(void *user, float *buf, size_t n);
/* The failure recorded by sl_dist_reduce_grads (SL_OK if none), into ctx. */
SlStatus sl_dist_check(const SlDist *d, SlCtx *ctx);

/* x[n] = sum over ranks in rank order (small n: the loss for the log). */
SlStatus sl_dist_sum_f64(SlDist *d, double *x, int n, SlCtx *ctx);
/* *x = max over ranks (agreement: "did any rank fail / want to stop"). */
SlStatus sl_dist_max_i64(SlDist *d, int64_t *x, SlCtx *ctx);
/* all[world] = every rank's v, in rank order (consistency checks). */
SlStatus sl_dist_gather_u64(SlDist *d, uint64_t v, uint64_t *all, SlCtx *ctx);
SlStatus sl_dist_barrier(SlDist *d, SlCtx *ctx);
#endif /* SL_WITH_MPI */

#endif
