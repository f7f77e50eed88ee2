/*
 * ph_loadgen.c - the load generator: C producer threads, an example of the producer API
 * (ph_api.h) and the feed of the drain benchmarks. No Python object is touched here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "ph_api.h"

#define PH_LOADGEN_MAX_THREADS 1024u
#define PH_LOADGEN_MAX_BATCH 4096u

struct ph_loadgen_thread {
    pthread_t thread;
    struct ph_loadgen *lg;
    uint32_t producer;
    uint64_t accepted; /* written by the thread, read after pthread_join */
};

struct ph_loadgen {
    struct ph_bus *bus;
    struct ph_event tmpl;
    uint64_t per_thread;
    uint32_t batch;
    uint32_t flags;
    uint32_t nthreads; /* threads actually started */
    _Atomic int stop;
    struct ph_loadgen_thread threads[];
};

static void *ph_loadgen_run(void *arg)
{
    struct ph_loadgen_thread *th = arg;
    struct ph_loadgen *lg = th->lg;
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
        uint64_t now = ph_now_ns();
        for (uint32_t j = 0; j < k; j++) {
            buf[j].ts_ns = now;
            buf[j].num[0] = (double)(seq + j);
        }
        uint32_t done = 0;
        for (;;) {
            done += shared ? ph_push_batch_mp(lg->bus, th->producer, buf + done, k - done)
                           : ph_push_batch_sp(lg->bus, th->producer, buf + done, k - done);
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

struct ph_loadgen *ph_loadgen_start(struct ph_bus *bus, const uint32_t *producers, uint32_t nthreads,
                                    const struct ph_event *tmpl, uint64_t events_per_thread,
                                    uint32_t batch, uint32_t flags)
{
    if (bus == NULL || producers == NULL || tmpl == NULL || nthreads == 0 ||
        nthreads > PH_LOADGEN_MAX_THREADS || batch == 0 || batch > PH_LOADGEN_MAX_BATCH ||
        (flags & ~(uint32_t)(PH_LOADGEN_MP | PH_LOADGEN_RETRY)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    uint32_t nprod = ph_bus_producer_count(bus);
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
    lg->bus = bus;
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
            ph_loadgen_join(lg);
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
    uint64_t total = 0;
    for (uint32_t i = 0; i < lg->nthreads; i++) {
        pthread_join(lg->threads[i].thread, NULL);
        total += lg->threads[i].accepted;
    }
    free(lg);
    return total;
}
