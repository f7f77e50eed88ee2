/*
 * ph_ring.h - the bounded event ring under the bus (internal: Python never sees this).
 *
 * One ring carries fixed 64-byte struct ph_event slots in a power-of-two array, indexed
 * by free-running 32-bit counters (kfifo style): a slot is slots[index & mask], the
 * ring holds head - tail events (wrap-around of the counters is harmless because the
 * capacity divides 2^32), so all `capacity` slots are usable.
 *
 *   producer line   head     next index to publish: slots [tail, head) are readable
 *                   reserve  _mp only: next index to hand out; head <= reserve
 *                   cached_tail, published, dropped
 *   consumer line   tail     next index to read: slots below tail may be overwritten
 *                   cached_head
 *   read-only line  capacity, mask, slots, marks (_mp only: marks[i & mask] == i + 1
 *                   once slot i is written; zeroed at init, which no index claims
 *                   before the counters first wrap)
 *
 * Each group sits on its own 64-byte cache line (the line size of x86-64 and of every
 * Raspberry Pi core, Cortex-A53/A72/A76), so a producer publishing and the consumer
 * draining do not invalidate each other's line on every event; each side re-reads the
 * other's index only when its cached copy says the ring looks full (producer) or empty
 * (consumer).
 *
 * Concurrency contract, in the names:
 *   ph_ring_push_sp   at most one thread at a time pushes into this ring
 *   ph_ring_push_mp   any number of threads push concurrently (CAS on reserve, per-slot
 *                     marks, and whoever finds written slots moves head over them; no
 *                     producer ever waits for another, see ph_ring.c)
 *   ph_ring_pop_sc    at most one thread at a time pops
 * A ring is used with _sp pushes only or with _mp pushes only for its whole life
 * (_sp keeps a plain cached copy of tail that _mp would not update).
 * Pushes never block on the consumer: what does not fit is dropped and counted.
 */
#ifndef PH_RING_H
#define PH_RING_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ph_event.h"

#define PH_CACHELINE 64
#define PH_RING_MAX_CAPACITY (1u << 24)

struct ph_ring {
    alignas(PH_CACHELINE) _Atomic uint32_t head;
    _Atomic uint32_t reserve;
    uint32_t cached_tail;
    _Atomic uint64_t published;
    _Atomic uint64_t dropped;

    alignas(PH_CACHELINE) _Atomic uint32_t tail;
    uint32_t cached_head;

    alignas(PH_CACHELINE) uint32_t capacity;
    uint32_t mask;
    struct ph_event *slots;
    _Atomic uint32_t *marks;
};

/* capacity must be a power of two in 2..PH_RING_MAX_CAPACITY.
 * Returns 0, or -1 with errno EINVAL / ENOMEM. */
int ph_ring_init(struct ph_ring *r, uint32_t capacity);
void ph_ring_destroy(struct ph_ring *r);

/* Copy the longest prefix of evs[0..n) that fits, stamping each copy's source field,
 * publish it, count the rest as dropped. Returns the number accepted. Never blocks and
 * never waits for another thread (an _mp push whose slots follow a pre-empted one's is
 * published by that one when it resumes). */
uint32_t ph_ring_push_sp(struct ph_ring *r, const struct ph_event *evs, uint32_t n, uint16_t source);
uint32_t ph_ring_push_mp(struct ph_ring *r, const struct ph_event *evs, uint32_t n, uint16_t source);

/* Move up to max events, oldest first, into out. Returns how many. */
uint32_t ph_ring_pop_sc(struct ph_ring *r, struct ph_event *out, uint32_t max);

/* Events waiting now (a snapshot, 0..capacity), callable from any thread. */
uint32_t ph_ring_depth(const struct ph_ring *r);

/* For tests, on a quiescent ring: empty it and restart its counters at `start`, so a test
 * can cross the 2^32 wrap of the indices without pushing 4 billion events. */
void ph_ring_reset_at(struct ph_ring *r, uint32_t start);

/* The futex timeout of ph_wait_pop_sc (exposed for its tests): the time from now_ns to
 * deadline_ns (ph_now_ns's clock) into *ts, at most PH_WAIT_MAX_SLEEP_S seconds, so that it
 * fits a 32-bit time_t; the wait sleeps again until the deadline. Returns 0, leaving *ts
 * alone, once the deadline has passed; else 1. */
#define PH_WAIT_MAX_SLEEP_S 86400
struct timespec;
int ph_wait_timeout(uint64_t now_ns, uint64_t deadline_ns, struct timespec *ts);

#endif
