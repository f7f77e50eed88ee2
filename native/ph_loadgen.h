/*
 * ph_loadgen.h - the load generator: C producer threads pushing synthetic events, with no
 * Python involved, for the benchmarks and tests.
 *
 * It is not part of the product: pihub._native (ph_api.h) does not contain it. It is built
 * into the development-only extension pihub.devtools._loadgen (native/build_loadgen.py,
 * `make build`) and linked into the C tests and bench_ring. It pushes through the entry
 * points of the library that owns the bus, handed over as function pointers
 * (struct ph_loadgen_ring), so its events take exactly the product's push code and no
 * second copy of ph_ring.c is linked anywhere.
 *
 * This file is also the cffi cdef of that extension (with ph_event.h): plain prototypes,
 * POD structs and integer #defines only.
 */
#ifndef PH_LOADGEN_H
#define PH_LOADGEN_H

#include "ph_event.h"

struct ph_bus;

/* The bus to push into and the ph_api.h entry points of the library that owns it:
 * { bus, ph_push_batch_sp, ph_push_batch_mp, ph_bus_producer_count, ph_now_ns }. */
struct ph_loadgen_ring {
    struct ph_bus *bus;
    uint32_t (*push_batch_sp)(struct ph_bus *bus, uint32_t producer, const struct ph_event *evs, uint32_t n);
    uint32_t (*push_batch_mp)(struct ph_bus *bus, uint32_t producer, const struct ph_event *evs, uint32_t n);
    uint32_t (*producer_count)(const struct ph_bus *bus);
    uint64_t (*now_ns)(void);
};

#define PH_LOADGEN_MP 1     /* push with the _mp calls (threads may share a producer id) */
#define PH_LOADGEN_RETRY 2  /* a refused event is retried (after sched_yield) until accepted
                               or stopped, instead of dropped; refusals still count as drops */

struct ph_loadgen;

/* PH_ABI_VERSION as compiled into the load generator (its struct ph_event layout). */
int ph_loadgen_abi_version(void);

/* Starts nthreads (1..1024) threads. Thread i pushes events_per_thread copies of *tmpl
 * through producers[i] in batches of `batch` (1..4096), each copy with ts_ns = now_ns() at
 * its batch and num[0] = its sequence number 0, 1, 2, ... within the thread. The arguments
 * are copied. Without PH_LOADGEN_MP the producer ids must be distinct (one _sp thread per
 * id). Returns NULL (errno EINVAL for bad arguments, a NULL ring member included, or the
 * pthread_create error) with no thread left running. */
struct ph_loadgen *ph_loadgen_start(const struct ph_loadgen_ring *ring, const uint32_t *producers,
                                    uint32_t nthreads, const struct ph_event *tmpl,
                                    uint64_t events_per_thread, uint32_t batch, uint32_t flags);
/* Asks the threads to stop after their current batch; returns at once. Safe while another
 * thread is in ph_loadgen_join. */
void ph_loadgen_stop(struct ph_loadgen *lg);
/* Waits for every thread and returns the number of events the bus accepted; a second call
 * returns the same number at once. Calls must not overlap. */
uint64_t ph_loadgen_join(struct ph_loadgen *lg);
/* Frees lg after ph_loadgen_join (joins first when it was not called). */
void ph_loadgen_free(struct ph_loadgen *lg);

#endif
