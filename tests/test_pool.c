/* test_pool.c - core/pool.h: every item runs exactly once, tids stay within the
 * threads a call uses (they index per-thread scratch), nested calls and calls
 * from two threads at once (two trainers in one process) still run every item.
 * Speed under load is measured by bench/bench_contended.sh, not here.
 */
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/pool.h"
#include "test_util.h"

#define N_ITEMS 1000

typedef struct Count {
    atomic_int hits[N_ITEMS];
    atomic_int bad_tid;  /* items run with tid outside [0, threads) */
    int threads;         /* sl_pool_threads() of the caller */
    atomic_int nested;   /* items of nested calls */
} Count;

static void count_item(void *ctx, int64_t i, int tid) {
    Count *c = ctx;
    for (volatile int k = 0; k < 2000; k++) {} /* a few microseconds: long enough for workers to join */
    atomic_fetch_add(&c->hits[i], 1);
    if (tid < 0 || tid >= c->threads) atomic_fetch_add(&c->bad_tid, 1);
}

static int hits_ok(Count *c, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (atomic_load(&c->hits[i]) != 1) return 0;
    return 1;
}

/* Each item calls the pool again: the inner call runs serially on tid 0. */
static void nest_item(void *ctx, int64_t i, int tid) {
    (void)i;
    (void)tid;
    Count *c = ctx;
    Count inner = {.threads = 1};
    const int serial = sl_pool_threads() == 1; /* no CHECK here: items run on several threads */
    sl_pool_for(10, count_item, &inner);
    if (serial && hits_ok(&inner, 10) && atomic_load(&inner.bad_tid) == 0) atomic_fetch_add(&c->nested, 1);
}

typedef struct Caller {
    int ok;
} Caller;

static void *caller_main(void *arg) {
    Caller *r = arg;
    r->ok = 1;
    for (int rep = 0; rep < 200; rep++) {
        static _Thread_local Count c;
        memset(&c, 0, sizeof c);
        c.threads = sl_pool_threads();
        sl_pool_for(N_ITEMS, count_item, &c);
        if (!hits_ok(&c, N_ITEMS) || atomic_load(&c.bad_tid)) r->ok = 0;
    }
    return NULL;
}

int main(void) {
    static Count c;
    const int settings[] = {1, 8, 2, 200, 3}; /* down as well as up: idle workers with high tids must stay out */
    for (size_t s = 0; s < sizeof settings / sizeof settings[0]; s++) {
        omp_set_num_threads(settings[s]);
        const int t = sl_pool_threads();
        CHECK(t == (settings[s] < SL_POOL_MAX ? settings[s] : SL_POOL_MAX), "threads %d for a setting of %d", t,
              settings[s]);
        for (int64_t n = 0; n <= N_ITEMS; n = n ? n * 10 : 1) {
            for (int rep = 0; rep < 50; rep++) {
                memset(&c, 0, sizeof c);
                c.threads = t;
                sl_pool_for(n, count_item, &c);
                CHECK(hits_ok(&c, n), "setting %d, n %lld: an item ran other than once", settings[s], (long long)n);
                CHECK(atomic_load(&c.bad_tid) == 0, "setting %d, n %lld: %d items with tid outside [0,%d)",
                      settings[s], (long long)n, atomic_load(&c.bad_tid), t);
            }
        }
    }

    omp_set_num_threads(2);
    memset(&c, 0, sizeof c);
    sl_pool_for(20, nest_item, &c);
    CHECK(atomic_load(&c.nested) == 20, "nested calls: %d of 20 ran all their items", atomic_load(&c.nested));

    /* inside an OpenMP region the pool is serial too (no oversubscription) */
    int in_omp = 0;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        in_omp = sl_pool_threads();
    }
    CHECK(in_omp == 1, "inside an OpenMP region: %d threads", in_omp);

    /* two callers at once: one gets the pool, the other runs serially; both complete */
    pthread_t th[2];
    Caller r[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, caller_main, &r[i]) == 0, "pthread_create");
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        CHECK(r[i].ok, "caller %d: an item ran other than once, or with a bad tid", i);
    }

    printf("test_pool: %d checks, %d failures\n", sl_test_checks, sl_test_failures);
    return sl_test_failures != 0;
}
