/* pool.c - the work-sharing pool of pool.h.
 *
 * One process-wide pool: workers are created on first use (up to the threads a
 * call wants) and wait on a condition variable after spinning for about
 * SL_POOL_SPIN_NS (a product usually follows another within microseconds; a
 * longer spin only burns a core another process may need). A call posts its
 * job under the mutex (a new generation), works on it at once, then closes it
 * to further joins and waits for the workers that joined: a worker joins under
 * the mutex only while the job is open, so the caller never waits for a worker
 * that has not started.
 */
#define _GNU_SOURCE
#include "core/pool.h"

#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define pool_relax() _mm_pause()
#else
#define pool_relax() ((void)0)
#endif

#define SL_POOL_SPIN_NS 50000 /* a worker's spin before it sleeps */

typedef struct Pool {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* workers: a new generation */
    pthread_cond_t done; /* the caller: the last worker that joined has left */
    atomic_uint gen;     /* job generation; written under mu */
    SlPoolFn fn;         /* the job, under mu */
    void *ctx;
    int64_t n;
    int threads;         /* of the job: workers with tid < threads may join */
    int open;            /* joins allowed; under mu */
    int active;          /* workers in the job; under mu */
    int started;         /* workers created (tids 1..started); under mu */
    atomic_llong next;   /* the next item to take */
    atomic_int busy;     /* a caller owns the pool */
} Pool;

static Pool g_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
                      .done = PTHREAD_COND_INITIALIZER};
static _Thread_local int t_in_pool; /* this thread is a worker, or a caller inside sl_pool_for */

static void pool_take(Pool *p, SlPoolFn fn, void *ctx, int64_t n, int tid) {
    for (int64_t i; (i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed)) < n;) fn(ctx, i, tid);
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *pool_worker(void *arg) {
    Pool *p = &g_pool;
    const int tid = (int)(intptr_t)arg;
    t_in_pool = 1;
    pthread_mutex_lock(&p->mu);
    unsigned seen = atomic_load(&p->gen);
    for (;;) {
        /* spin a little for the next job, then sleep */
        pthread_mutex_unlock(&p->mu);
        const int64_t t0 = now_ns();
        for (int s = 1; atomic_load_explicit(&p->gen, memory_order_relaxed) == seen; s++) {
            pool_relax();
            if (s % 64 == 0 && now_ns() - t0 > SL_POOL_SPIN_NS) break;
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->gen, memory_order_relaxed) == seen) pthread_cond_wait(&p->wake, &p->mu);
        seen = atomic_load_explicit(&p->gen, memory_order_relaxed);
        if (!p->open || tid >= p->threads) continue;
        p->active++;
        const SlPoolFn fn = p->fn;
        void *ctx = p->ctx;
        const int64_t n = p->n;
        pthread_mutex_unlock(&p->mu);
        pool_take(p, fn, ctx, n, tid);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0 && !p->open) pthread_cond_signal(&p->done);
    }
    return NULL;
}

int sl_pool_threads(void) {
    if (t_in_pool || omp_in_parallel()) return 1;
    const int t = omp_get_max_threads();
    return t < 1 ? 1 : t > SL_POOL_MAX ? SL_POOL_MAX : t;
}

static void pool_serial(int64_t n, SlPoolFn fn, void *ctx) {
    const int outer = t_in_pool;
    t_in_pool = 1; /* nested calls stay serial too */
    for (int64_t i = 0; i < n; i++) fn(ctx, i, 0);
    t_in_pool = outer;
}

void sl_pool_for(int64_t n, SlPoolFn fn, void *ctx) {
    Pool *p = &g_pool;
    int threads = sl_pool_threads();
    if (threads > n) threads = (int)(n < 1 ? 1 : n);
    if (threads < 2 || atomic_exchange(&p->busy, 1)) {
        pool_serial(n, fn, ctx);
        return;
    }
    pthread_mutex_lock(&p->mu);
    while (p->started < threads - 1) {
        pthread_t th;
        pthread_attr_t at;
        int ok = pthread_attr_init(&at) == 0;
        if (ok) pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        ok = ok && pthread_create(&th, &at, pool_worker, (void *)(intptr_t)(p->started + 1)) == 0;
        pthread_attr_destroy(&at);
        if (!ok) break; /* run with the workers there are */
        p->started++;
    }
    if (threads > p->started + 1) threads = p->started + 1;
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->threads = threads;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->open = 1;
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    t_in_pool = 1;
    pool_take(p, fn, ctx, n, 0);
    t_in_pool = 0;

    pthread_mutex_lock(&p->mu);
    p->open = 0;
    while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    atomic_store(&p->busy, 0);
}
