/* pool.h - a work-sharing thread pool that never waits for a thread that is not running.
 *
 * sl_pool_for(n, fn, ctx) calls fn(ctx, i, tid) once for every i in [0, n): the
 * calling thread starts on the items at once and the pool's workers join when
 * they wake, each taking the next item from a shared counter. The call returns
 * when every item is done; it waits only for workers that took an item, never
 * for one the scheduler has not run yet (a late worker finds the counter
 * exhausted and goes back to sleep). So on a machine where another process
 * holds a core the caller does the work itself instead of stalling at a
 * barrier, and idle workers sleep (after a short spin) instead of spinning
 * against the thread they wait for (OpenMP's barrier does both: issue 18).
 *
 * Determinism is the caller's: which thread runs an item, and in which order
 * items run, vary from call to call, so fn must compute each item's output
 * from the item alone (disjoint outputs, fixed arithmetic per item).
 *
 * tid is in [0, threads): 0 is the caller; use it to index per-thread scratch.
 * Threads: omp_get_max_threads() of the caller (OMP_NUM_THREADS, or the
 * `--threads` option through omp_set_num_threads), capped at SL_POOL_MAX.
 * Runs serially (tid 0) when n < 2, when threads is 1, inside a pool item or
 * an OpenMP parallel region, or when another thread is using the pool (two
 * trainers in one process: tests/test_dist.c).
 *
 * Not here: nested parallelism, priorities, futures. Workers live until exit.
 */
#ifndef SL_POOL_H
#define SL_POOL_H

#include <stdint.h>

#define SL_POOL_MAX 64 /* most threads a call uses (caller included) */

typedef void (*SlPoolFn)(void *ctx, int64_t i, int tid);

/* Calls fn(ctx, i, tid) for i in [0, n) on up to sl_pool_threads() threads. */
void sl_pool_for(int64_t n, SlPoolFn fn, void *ctx);

/* Threads a call from this thread would use now (1 when it would run serially). */
int sl_pool_threads(void);

#endif
