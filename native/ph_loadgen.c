/*
 * ph_loadgen.c - the load generator (ph_loadgen.h): C producer threads, an example of the
 * producer API and the feed of the drain benchmarks. Development only, never in
 * pihub._native. No Python object is touched here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "ph_loadgen.h"

#define PH_LOADGEN_MAX_THREADS 1024u
#define PH_LOADGEN_MAX_BATCH 4096u

struct ph_loadgen_thread {
    pthread_t thread;
    struct ph_loadgen *lg;
    uint32_t producer;
    uint64_t accepted; /* written by the thread, read after pthread_join */
};

struct ph_loadgen {
    struct ph_loadgen_ring ring;
    struct ph_event tmpl;
    uint64_t per_thread;
    uint32_t batch;
    uint32_t flags;
    uint32_t nthreads; /* threads actually started */
    int joined;        /* ph_loadgen_join has returned */
    uint64_t accepted; /* its result */
    _Atomic int stop;
    struct ph_loadgen_thread threads[];
};

static void *ph_loadgen_run(void *arg)
{
    struct ph_loadgen_thread *th = arg;
    struct ph_loadgen *lg = th->lg;
    const struct ph_loadgen_ring *ring = &lg->ring;
    int shared = (lg->flags & PH_LOADGEN_MP) != 0;
    int retry = (lg->flags & PH_LOADGEN_RETRY) != 0;
    struct ph_event *buf = malloc((size_t)lg->batch * sizeof *buf);
    if (buf == NULL)
        return NULL;
    for (uint32_t j = 0; j < lg->batch; j++)
        buf[j] = lg->tmpl;

    uint64_t seq = 0;
    while (seq < lg->per_thread && !atomic_load_explicit(&lg->stop, memory_order_relaxed)) {
        uint64_t left = lg->per_thread - seq;
        uint32_t k = left < lg->batch ? (uint32_t)left : lg->batch;
        uint64_t now = ring->now_ns();
        for (uint32_t j = 0; j < k; j++) {
            buf[j].ts_ns = now;
            buf[j].num[0] = (double)(seq + j);
        }
        uint32_t done = 0;
        for (;;) {
            done += shared ? ring->push_batch_mp(ring->bus, th->producer, buf + done, k - done)
                           : ring->push_batch_sp(ring->bus, th->producer, buf + done, k - done);
            if (done == k || !retry || atomic_load_explicit(&lg->stop, memory_order_relaxed))
                break;
            /* The ring is full: give the consumer the CPU rather than spin against it. */
            sched_yield();
        }
        th->accepted += done;
        seq += k;
    }
    free(buf);
    return NULL;
}

int ph_loadgen_abi_version(void) { return PH_ABI_VERSION; }

struct ph_loadgen *ph_loadgen_start(const struct ph_loadgen_ring *ring, const uint32_t *producers,
                                    uint32_t nthreads, const struct ph_event *tmpl,
                                    uint64_t events_per_thread, uint32_t batch, uint32_t flags)
{
    if (ring == NULL || ring->bus == NULL || ring->push_batch_sp == NULL || ring->push_batch_mp == NULL ||
        ring->producer_count == NULL || ring->now_ns == NULL || producers == NULL || tmpl == NULL ||
        nthreads == 0 ||
        nthreads > PH_LOADGEN_MAX_THREADS || batch == 0 || batch > PH_LOADGEN_MAX_BATCH ||
        (flags & ~(uint32_t)(PH_LOADGEN_MP | PH_LOADGEN_RETRY)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    uint32_t nprod = ring->producer_count(ring->bus);
    for (uint32_t i = 0; i < nthreads; i++) {
        if (producers[i] >= nprod) {
            errno = EINVAL;
            return NULL;
        }
        /* _sp allows one pushing thread per producer id */
        for (uint32_t j = 0; j < i && !(flags & PH_LOADGEN_MP); j++) {
            if (producers[j] == producers[i]) {
                errno = EINVAL;
                return NULL;
            }
        }
    }
    struct ph_loadgen *lg = calloc(1, sizeof *lg + (size_t)nthreads * sizeof lg->threads[0]);
    if (lg == NULL)
        return NULL;
    lg->ring = *ring;
    lg->tmpl = *tmpl;
    lg->per_thread = events_per_thread;
    lg->batch = batch;
    lg->flags = flags;
    for (uint32_t i = 0; i < nthreads; i++) {
        lg->threads[i].lg = lg;
        lg->threads[i].producer = producers[i];
        int err = pthread_create(&lg->threads[i].thread, NULL, ph_loadgen_run, &lg->threads[i]);
        if (err != 0) {
            ph_loadgen_stop(lg);
            ph_loadgen_free(lg);
            errno = err;
            return NULL;
        }
        lg->nthreads = i + 1;
    }
    return lg;
}

void ph_loadgen_stop(struct ph_loadgen *lg)
{
    atomic_store_explicit(&lg->stop, 1, memory_order_relaxed);
}

uint64_t ph_loadgen_join(struct ph_loadgen *lg)
{
    if (!lg->joined) {
        for (uint32_t i = 0; i < lg->nthreads; i++) {
            pthread_join(lg->threads[i].thread, NULL);
            lg->accepted += lg->threads[i].accepted;
        }
        lg->joined = 1;
    }
    return lg->accepted;
}

void ph_loadgen_free(struct ph_loadgen *lg)
{
    if (lg == NULL)
        return;
    ph_loadgen_join(lg);
    free(lg);
}
