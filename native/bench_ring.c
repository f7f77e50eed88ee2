/*
 * bench_ring.c - MPSC (one ring, every producer thread pushing with _mp) against
 * per-producer SPSC rings (one _sp ring per thread), both drained by one consumer thread
 * through ph_wait_pop_sc in batches of 256, as the dispatcher does.
 *
 * Producers are the load generator (ph_loadgen.h) with PH_LOADGEN_RETRY: a full ring makes
 * them yield and retry, so every run moves exactly `events` events and the figure is the
 * sustained throughput; "refused" counts the pushes that found the ring full.
 *
 * Usage: bench_ring [events_per_run] [repeats]     (defaults 4000000, 3)
 * Output: one JSON object per line and configuration (median of the repeats).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ph_api.h"
#include "ph_loadgen.h"

#define CAPACITY 4096
#define POP_MAX 256

struct result {
    double seconds;
    uint64_t refused;
};

static struct result run_once(int mpsc, uint32_t producers, uint32_t batch, uint64_t events)
{
    struct ph_bus *bus = ph_bus_new(CAPACITY, producers);
    uint32_t ids[8];
    for (uint32_t i = 0; i < producers; i++)
        ids[i] = mpsc && i > 0 ? ids[0] : (uint32_t)ph_bus_add_producer(bus);
    struct ph_event tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    tmpl.type = 1;
    tmpl.present = 1u << PH_F_NUM0;
    static struct ph_event out[POP_MAX];
    uint64_t per_thread = events / producers;
    uint64_t total = per_thread * producers, got = 0;

    struct ph_loadgen_ring ring = {bus, ph_push_batch_sp, ph_push_batch_mp, ph_bus_producer_count, ph_now_ns};
    uint64_t t0 = ph_now_ns();
    struct ph_loadgen *lg = ph_loadgen_start(&ring, ids, producers, &tmpl, per_thread, batch,
                                             PH_LOADGEN_RETRY | (mpsc ? PH_LOADGEN_MP : 0));
    if (lg == NULL) {
        perror("ph_loadgen_start");
        exit(1);
    }
    while (got < total)
        got += ph_wait_pop_sc(bus, out, POP_MAX, 100 * 1000000LL);
    uint64_t t1 = ph_now_ns();
    if (ph_loadgen_join(lg) != total) {
        fprintf(stderr, "lost events\n");
        exit(1);
    }
    ph_loadgen_free(lg);
    struct result r = {(double)(t1 - t0) / 1e9, 0};
    for (uint32_t p = 0; p < ph_bus_producer_count(bus); p++) {
        struct ph_producer_stats st;
        ph_bus_producer_stats(bus, p, &st);
        r.refused += st.dropped;
    }
    ph_bus_free(bus);
    return r;
}

static int cmp_result(const void *a, const void *b)
{
    double x = ((const struct result *)a)->seconds, y = ((const struct result *)b)->seconds;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    uint64_t events = argc > 1 ? strtoull(argv[1], NULL, 10) : 4000000;
    int repeats = argc > 2 ? atoi(argv[2]) : 3;
    if (events == 0 || repeats < 1 || repeats > 15) {
        fprintf(stderr, "usage: %s [events_per_run] [repeats 1..15]\n", argv[0]);
        return 2;
    }
    static const uint32_t batches[] = {32, 1};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        for (uint32_t producers = 1; producers <= 3; producers++) {
            for (int mpsc = 1; mpsc >= 0; mpsc--) {
                struct result rs[15];
                for (int k = 0; k < repeats; k++)
                    rs[k] = run_once(mpsc, producers, batches[b], events);
                qsort(rs, (size_t)repeats, sizeof rs[0], cmp_result);
                struct result med = rs[repeats / 2];
                uint64_t moved = events / producers * producers;
                printf("{\"bench\": \"bus_ring\", \"design\": \"%s\", \"producers\": %u, \"batch\": %u, "
                       "\"capacity\": %d, \"pop_max\": %d, \"events\": %llu, \"seconds\": %.4f, "
                       "\"events_per_s\": %.0f, \"refused\": %llu}\n",
                       mpsc ? "mpsc" : "spsc", producers, batches[b], CAPACITY, POP_MAX,
                       (unsigned long long)moved, med.seconds, (double)moved / med.seconds,
                       (unsigned long long)med.refused);
                fflush(stdout);
            }
        }
    }
    return 0;
}
