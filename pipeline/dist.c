/* dist.c - data-parallel training over MPI; see dist.h. Compiles to nothing
 * without SL_WITH_MPI (the plain build has no MPI). */
#include "pipeline/dist.h"

#ifdef SL_WITH_MPI
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"

/* "MPI_Allgather: <MPI's text>" into ctx. */
static SlStatus mpi_fail(SlCtx *ctx, int rc, const char *what) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error code %d", rc);
    return sl_fail(ctx, SL_ERR_IO, "%s failed: %s", what, text);
}

int sl_dist_launched(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

SlStatus sl_dist_init(SlDist *d, SlDistReduce mode, SlCtx *ctx) {
    memset(d, 0, sizeof *d);
    d->mode = mode;
    d->comm = MPI_COMM_NULL;
    int up = 0, rc;
    MPI_Initialized(&up);
    if (!up) {
        int provided = 0;
        /* only the main thread calls MPI; OpenMP runs between the calls */
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return sl_fail(ctx, SL_ERR_IO, "MPI_Init_thread failed (code %d)", rc);
        d->own_mpi = 1;
    }
    /* errors come back as codes on our own communicator, not as a job abort */
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(ctx, rc, "MPI_Comm_dup");
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->world);
    return SL_OK;
}

void sl_dist_finalize(SlDist *d) {
    sl_free(d->gather);
    d->gather = NULL;
    if (d->comm != MPI_COMM_NULL) MPI_Comm_free(&d->comm);
    int fin = 0;
    MPI_Finalized(&fin);
    if (d->own_mpi && !fin) MPI_Finalize();
    d->own_mpi = 0;
}

void sl_dist_abort(SlDist *d, int code) { MPI_Abort(d->comm != MPI_COMM_NULL ? d->comm : MPI_COMM_WORLD, code); }

/* buf[n] = sum over ranks: ordered (all-gather + rank-order sum) or MPI_SUM. */
static SlStatus reduce(SlDist *d, float *buf, size_t n, SlCtx *ctx) {
    if (d->mode == SL_DIST_MPI_SUM) {
        for (size_t o = 0; o < n; o += SL_DIST_CHUNK) { /* counts are int */
            const int k = (int)(n - o < SL_DIST_CHUNK ? n - o : SL_DIST_CHUNK);
            int rc = MPI_Allreduce(MPI_IN_PLACE, buf + o, k, MPI_FLOAT, MPI_SUM, d->comm);
            if (rc != MPI_SUCCESS) return mpi_fail(ctx, rc, "MPI_Allreduce of the gradients");
        }
        return SL_OK;
    }
    if (!d->gather && !(d->gather = sl_alloc((size_t)d->world * SL_DIST_CHUNK * sizeof(float))))
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory for the all-gather buffer (%d x %zu floats)", d->world,
                       (size_t)SL_DIST_CHUNK);
    for (size_t o = 0; o < n; o += SL_DIST_CHUNK) {
        const size_t k = n - o < SL_DIST_CHUNK ? n - o : SL_DIST_CHUNK;
        /* gather: [world, k] with rank r's part at r * k */
        int rc = MPI_Allgather(buf + o, (int)k, MPI_FLOAT, d->gather, (int)k, MPI_FLOAT, d->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(ctx, rc, "MPI_Allgather of the gradients");
        sl_dist_sum_ranks(buf + o, d->gather, d->world, k, k);
    }
    return SL_OK;
}

void sl_dist_reduce_grads(void *user, float *buf, size_t n) {
    SlDist *d = user;
    SlCtx ctx;
    sl_ctx_init(&ctx);
    const double t0 = MPI_Wtime();
    SlStatus st = d->failed ? d->failed : reduce(d, buf, n, &ctx);
    d->reduce_seconds += MPI_Wtime() - t0;
    d->n_reduce++;
    d->reduce_bytes = (uint64_t)n * sizeof(float);
    if (st) {
        if (!d->failed) {
            d->failed = st;
            snprintf(d->msg, sizeof d->msg, "rank %d of %d: %.900s", d->rank, d->world, ctx.msg);
        }
        for (size_t i = 0; i < n; i++) buf[i] = NAN; /* the trainer refuses a non-finite step */
    }
}

SlStatus sl_dist_check(const SlDist *d, SlCtx *ctx) {
    return d->failed ? sl_fail(ctx, d->failed, "gradient all-reduce: %s", d->msg) : SL_OK;
}

SlStatus sl_dist_sum_f64(SlDist *d, double *x, int n, SlCtx *ctx) {
    double all[64 * 16], *a = all;
    const size_t need = (size_t)d->world * (size_t)n;
    if (need > sizeof all / sizeof all[0] && !(a = malloc(need * sizeof(double))))
        return sl_fail(ctx, SL_ERR_NOMEM, "out of memory");
    int rc = MPI_Allgather(x, n, MPI_DOUBLE, a, n, MPI_DOUBLE, d->comm);
    if (rc == MPI_SUCCESS)
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int r = 0; r < d->world; r++) s += a[(size_t)r * n + i];
            x[i] = s;
        }
    if (a != all) free(a);
    return rc == MPI_SUCCESS ? SL_OK : mpi_fail(ctx, rc, "MPI_Allgather of the loss");
}

SlStatus sl_dist_max_i64(SlDist *d, int64_t *x, SlCtx *ctx) {
    int rc = MPI_Allreduce(MPI_IN_PLACE, x, 1, MPI_INT64_T, MPI_MAX, d->comm);
    return rc == MPI_SUCCESS ? SL_OK : mpi_fail(ctx, rc, "MPI_Allreduce (agreement)");
}

SlStatus sl_dist_gather_u64(SlDist *d, uint64_t v, uint64_t *all, SlCtx *ctx) {
    int rc = MPI_Allgather(&v, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, d->comm);
    return rc == MPI_SUCCESS ? SL_OK : mpi_fail(ctx, rc, "MPI_Allgather");
}

SlStatus sl_dist_barrier(SlDist *d, SlCtx *ctx) {
    int rc = MPI_Barrier(d->comm);
    return rc == MPI_SUCCESS ? SL_OK : mpi_fail(ctx, rc, "MPI_Barrier");
}
#endif /* SL_WITH_MPI */
