/*
 * ph_ring.c - the event rings and the bus that drains them (see ph_ring.h, ph_api.h).
 *
 * Measured (native/bench_ring.c, `make -C native bench`): x86-64 Firecracker VM with 2 vCPUs,
 * gcc 12 -O2. One consumer drains with ph_wait_pop_sc in batches of 256. The producers are the
 * load generator: batches of 32 (or single events), with a yield and retry when the ring is
 * full. Each figure is the median of 5 runs of 4 M events, in millions of events/s:
 *
 *   producers   batch   MPSC (1 ring, _mp)   per-producer SPSC (_sp)
 *       1         32           60.1                   95.2
 *       2         32           50.2                  143.0
 *       3         32           45.1                  106.8
 *       1          1            4.2                    7.4
 *       2          1            3.4                    6.2
 *       3          1            3.7                    8.2
 *
 * Per-producer SPSC rings win in every case, by 1.6x to 2.9x, so the bus gives every
 * producer id its own ring. The _mp path is kept for ids that several threads share. With
 * single-event pushes, the consumer empties the ring faster than it fills, sleeps, and
 * each push that finds it asleep pays one futex_wake: that costs more than the ring itself.
 * Runs vary by up to 2x on this VM.
 *
 * _mp design: CAS on `reserve` hands out a contiguous run of slots; the producer fills
 * it and marks each slot written (marks[i & mask] = i + 1, release); then it moves `head`
 * with CAS over every contiguous written slot it finds from head on, its own and any
 * later producer's, and goes on while more are marked. If a slot at head is not written
 * yet, it leaves: that slot's producer will move head over ours when it is done. The
 * consumer reads only head, as with _sp. No producer waits for another: a first version
 * with DPDK-style in-order commit (wait until head reaches your run) fell to 0.12 M
 * events/s with 3 single-event producers on 2 cores, every pre-empted committer stalling
 * the others for a time slice. What remains is inherent to one FIFO ring: the consumer
 * cannot see the events behind a pre-empted producer's run until it resumes, which is
 * why each hardware thread should get its own _sp ring.
 *
 * The hand-over between two _mp producers is a Dekker pair like the one below: the later
 * producer stores its marks, fences (seq_cst) and reads head; the earlier one moves head
 * (seq_cst CAS), fences and reads the next mark. One of them sees the other's store, so a
 * written run is never left unpublished.
 *
 * Sleeping consumer (ph_wait_pop_sc) and waking producers, without a lost wake-up:
 *
 *   consumer                                   producer (after publishing head)
 *   s = wake_seq                               fence(seq_cst)            F_p
 *   sleeping = 1                               if sleeping && xchg(sleeping, 0):
 *   fence(seq_cst)                  F_c            wake_seq += 1
 *   if any ring non-empty: return it               futex_wake(&wake_seq)
 *   futex_wait(&wake_seq, s)
 *
 * F_c and F_p are totally ordered. If F_c comes first, the producer's load after F_p sees
 * sleeping == 1 (or a later value: another producer cleared it and does the wake itself);
 * if F_p comes first, the consumer's re-check after F_c sees the published head and does
 * not sleep. A wake that bumps wake_seq after the consumer read s makes futex_wait return
 * at once (the kernel compares the word with s atomically with queueing the waiter); one
 * that comes later finds the consumer queued. So producers pay a fence and a load per push
 * call, and the futex_wake syscall only when the consumer actually sleeps, once per sleep.
 * ph_bus_wake sets a sticky wake_pending flag the same way (checked after F_c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ph_api.h"
#include "ph_ring.h"

/* 32-bit Linux with a 64-bit time_t (Debian 13 armhf) must use futex_time64: the old
 * syscall reads a 32-bit timespec. */
#if defined(SYS_futex_time64) && !defined(SYS_futex)
#define PH_SYS_FUTEX SYS_futex_time64
#elif defined(SYS_futex_time64)
#define PH_SYS_FUTEX (sizeof(struct timespec) > 2 * sizeof(long) ? SYS_futex_time64 : SYS_futex)
#else
#define PH_SYS_FUTEX SYS_futex
#endif

int ph_abi_version(void) { return PH_ABI_VERSION; }

uint64_t ph_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ ring */

int ph_ring_init(struct ph_ring *r, uint32_t capacity)
{
    if (capacity < 2 || capacity > PH_RING_MAX_CAPACITY || (capacity & (capacity - 1)) != 0) {
        errno = EINVAL;
        return -1;
    }
    memset(r, 0, sizeof *r);
    /* Slots are written before they are read, so the pages are left for the kernel to
     * commit on first use: a large, mostly idle ring costs no RAM on a Pi Zero. */
    r->slots = aligned_alloc(PH_CACHELINE, (size_t)capacity * sizeof(struct ph_event));
    r->marks = calloc(capacity, sizeof *r->marks);
    if (r->slots == NULL || r->marks == NULL) {
        ph_ring_destroy(r);
        errno = ENOMEM;
        return -1;
    }
    r->capacity = capacity;
    r->mask = capacity - 1;
    return 0;
}

void ph_ring_destroy(struct ph_ring *r)
{
    free(r->slots);
    free((void *)r->marks);
    r->slots = NULL;
    r->marks = NULL;
}

void ph_ring_reset_at(struct ph_ring *r, uint32_t start)
{
    atomic_store(&r->head, start);
    atomic_store(&r->reserve, start);
    atomic_store(&r->tail, start);
    r->cached_tail = r->cached_head = start;
    /* each slot claims the index one lap before the first one that will use it */
    for (uint32_t j = 0; j < r->capacity; j++) {
        uint32_t first = start + ((j - start) & r->mask);
        atomic_store(&r->marks[j], first - r->capacity + 1);
    }
}

/* Copy evs[0..k) into the slots from index `pos` on (two runs when it wraps). */
static void ph_ring_fill(struct ph_ring *r, uint32_t pos, const struct ph_event *evs, uint32_t k,
                         uint16_t source)
{
    for (uint32_t j = 0; j < k; j++) {
        struct ph_event *slot = &r->slots[(pos + j) & r->mask];
        *slot = evs[j];
        slot->source = source;
    }
}

static void ph_ring_count(struct ph_ring *r, uint32_t accepted, uint32_t refused, int shared)
{
    if (shared) {
        if (accepted)
            atomic_fetch_add_explicit(&r->published, accepted, memory_order_relaxed);
        if (refused)
            atomic_fetch_add_explicit(&r->dropped, refused, memory_order_relaxed);
        return;
    }
    /* One writer: a plain load + store is enough, and cheaper than a locked add. */
    if (accepted)
        atomic_store_explicit(&r->published,
                              atomic_load_explicit(&r->published, memory_order_relaxed) + accepted,
                              memory_order_relaxed);
    if (refused)
        atomic_store_explicit(&r->dropped,
                              atomic_load_explicit(&r->dropped, memory_order_relaxed) + refused,
                              memory_order_relaxed);
}

uint32_t ph_ring_push_sp(struct ph_ring *r, const struct ph_event *evs, uint32_t n, uint16_t source)
{
    uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint32_t free_slots = r->capacity - (head - r->cached_tail);
    if (free_slots < n) {
        /* acquire: the consumer released these slots after reading them, so overwriting
         * them below cannot race with its copy. */
        r->cached_tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        free_slots = r->capacity - (head - r->cached_tail);
    }
    uint32_t k = n < free_slots ? n : free_slots;
    if (k) {
        ph_ring_fill(r, head, evs, k, source);
        /* release: publishes the k slot copies above to the consumer's acquire of head. */
        atomic_store_explicit(&r->head, head + k, memory_order_release);
    }
    ph_ring_count(r, k, n - k, 0);
    return k;
}

/* Move head over every contiguous written slot from head on (_mp only). */
static void ph_ring_advance(struct ph_ring *r)
{
    uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    for (;;) {
        uint32_t end = head;
        /* acquire: pairs with the writer's release of the mark, so the slot is complete
         * before our head CAS republishes it to the consumer. */
        while (end - head < r->capacity &&
               atomic_load_explicit(&r->marks[end & r->mask], memory_order_acquire) == end + 1)
            end++;
        if (end == head)
            return; /* slot `head` is not written yet: its producer moves head on later */
        /* seq_cst CAS: publishes [head, end) to the consumer's acquire of head, and is the
         * earlier producer's half of the hand-over pair. On failure, head is reloaded. */
        if (atomic_compare_exchange_strong_explicit(&r->head, &head, end, memory_order_seq_cst,
                                                    memory_order_relaxed)) {
            /* seq_cst fence: orders our head store before reading the next mark. */
            atomic_thread_fence(memory_order_seq_cst);
            head = end;
        }
    }
}

uint32_t ph_ring_push_mp(struct ph_ring *r, const struct ph_event *evs, uint32_t n, uint16_t source)
{
    uint32_t pos = atomic_load_explicit(&r->reserve, memory_order_relaxed);
    uint32_t k;
    for (;;) {
        /* acquire: as in _sp, slots below tail are no longer being read by the consumer. */
        uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        uint32_t used = pos - tail;
        if (used > r->capacity) {
            /* pos is older than the tail just read: re-read it, the CAS would fail anyway */
            pos = atomic_load_explicit(&r->reserve, memory_order_relaxed);
            continue;
        }
        uint32_t free_slots = r->capacity - used;
        k = n < free_slots ? n : free_slots;
        if (k == 0)
            break;
        /* relaxed: the reservation publishes nothing; the slots are published by head. */
        if (atomic_compare_exchange_weak_explicit(&r->reserve, &pos, pos + k, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    if (k) {
        ph_ring_fill(r, pos, evs, k, source);
        for (uint32_t j = 0; j < k; j++)
            /* release: whoever reads this mark with acquire sees the slot's contents. */
            atomic_store_explicit(&r->marks[(pos + j) & r->mask], pos + j + 1, memory_order_release);
        /* seq_cst fence: orders the mark stores before the head load below (the later
         * producer's half of the hand-over pair). */
        atomic_thread_fence(memory_order_seq_cst);
        ph_ring_advance(r);
    }
    ph_ring_count(r, k, n - k, 1);
    return k;
}

uint32_t ph_ring_pop_sc(struct ph_ring *r, struct ph_event *out, uint32_t max)
{
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint32_t avail = r->cached_head - tail;
    if (avail < max) {
        /* acquire: every slot below head was completely written before head moved. */
        r->cached_head = atomic_load_explicit(&r->head, memory_order_acquire);
        avail = r->cached_head - tail;
    }
    uint32_t k = max < avail ? max : avail;
    if (k == 0)
        return 0;
    uint32_t first = tail & r->mask;
    uint32_t run = r->capacity - first;
    if (run > k)
        run = k;
    memcpy(out, &r->slots[first], (size_t)run * sizeof *out);
    memcpy(out + run, &r->slots[0], (size_t)(k - run) * sizeof *out);
    /* release: our reads of these slots are done; licenses the producer to overwrite them. */
    atomic_store_explicit(&r->tail, tail + k, memory_order_release);
    return k;
}

uint32_t ph_ring_depth(const struct ph_ring *r)
{
    /* acquire, tail first: head is then read no earlier, so head - tail is not negative */
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint32_t depth = head - tail;
    /* head was read later than tail; both may have moved in between */
    return depth > r->capacity ? r->capacity : depth;
}

/* ------------------------------------------------------------------------- bus */

struct ph_bus {
    struct ph_ring *rings; /* max_producers rings; ring i is set up by the i-th add_producer */
    uint32_t capacity;
    uint32_t max_producers;
    _Atomic uint32_t nproducers; /* rings [0, nproducers) are ready */
    uint32_t rr;                 /* consumer only: ring that gets the first share next time */

    alignas(PH_CACHELINE) _Atomic uint32_t wake_seq; /* the futex word */
    _Atomic uint32_t sleeping;                        /* 1 while the consumer may be in futex_wait */
    _Atomic uint32_t wake_pending;                    /* set by ph_bus_wake until a wait consumes it */
};

struct ph_bus *ph_bus_new(uint32_t capacity, uint32_t max_producers)
{
    if (capacity == 0 || capacity > PH_RING_MAX_CAPACITY || max_producers == 0 || max_producers > 4096) {
        errno = EINVAL;
        return NULL;
    }
    uint32_t cap = 2;
    while (cap < capacity)
        cap <<= 1;
    struct ph_bus *bus = aligned_alloc(PH_CACHELINE, sizeof *bus);
    if (bus == NULL)
        return NULL;
    memset(bus, 0, sizeof *bus);
    bus->rings = aligned_alloc(PH_CACHELINE, (size_t)max_producers * sizeof *bus->rings);
    if (bus->rings == NULL) {
        free(bus);
        return NULL;
    }
    memset(bus->rings, 0, (size_t)max_producers * sizeof *bus->rings);
    bus->capacity = cap;
    bus->max_producers = max_producers;
    return bus;
}

void ph_bus_free(struct ph_bus *bus)
{
    if (bus == NULL)
        return;
    /* acquire: pairs with add_producer's release; every ready ring has its buffers */
    uint32_t n = atomic_load_explicit(&bus->nproducers, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        ph_ring_destroy(&bus->rings[i]);
    free(bus->rings);
    free(bus);
}

int ph_bus_add_producer(struct ph_bus *bus)
{
    uint32_t n = atomic_load_explicit(&bus->nproducers, memory_order_relaxed);
    if (n >= bus->max_producers)
        return -1;
    if (ph_ring_init(&bus->rings[n], bus->capacity) != 0)
        return -1;
    /* release: publishes the initialised ring to the consumer and to pushes that check the id. */
    atomic_store_explicit(&bus->nproducers, n + 1, memory_order_release);
    return (int)n;
}

uint32_t ph_bus_producer_count(const struct ph_bus *bus)
{
    /* acquire: the counted rings are initialised for whoever uses the ids */
    return atomic_load_explicit(&bus->nproducers, memory_order_acquire);
}

static void ph_futex_wake(_Atomic uint32_t *word, int count)
{
    syscall(PH_SYS_FUTEX, (uint32_t *)word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

/* After a successful push: wake the consumer if (and only if) it is going to sleep. */
static void ph_bus_notify(struct ph_bus *bus)
{
    /* seq_cst fence F_p: orders the head store of the push before the load of sleeping
     * (pairs with the consumer's F_c, see the top of the file). */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&bus->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&bus->sleeping, 0, memory_order_seq_cst)) {
        /* seq_cst: the exchange read the consumer's sleeping = 1, so its read of wake_seq
         * came before this bump: futex_wait sees the new value or is woken below. */
        atomic_fetch_add_explicit(&bus->wake_seq, 1, memory_order_seq_cst);
        ph_futex_wake(&bus->wake_seq, 1);
    }
}

static struct ph_ring *ph_bus_ring(struct ph_bus *bus, uint32_t producer)
{
    /* acquire: pairs with add_producer's release, so the ring's fields are initialised. */
    if (producer >= atomic_load_explicit(&bus->nproducers, memory_order_acquire))
        return NULL;
    return &bus->rings[producer];
}

uint32_t ph_push_batch_sp(struct ph_bus *bus, uint32_t producer, const struct ph_event *evs, uint32_t n)
{
    struct ph_ring *r = ph_bus_ring(bus, producer);
    if (r == NULL || n == 0)
        return 0;
    uint32_t k = ph_ring_push_sp(r, evs, n, (uint16_t)producer);
    if (k)
        ph_bus_notify(bus);
    return k;
}

uint32_t ph_push_batch_mp(struct ph_bus *bus, uint32_t producer, const struct ph_event *evs, uint32_t n)
{
    struct ph_ring *r = ph_bus_ring(bus, producer);
    if (r == NULL || n == 0)
        return 0;
    uint32_t k = ph_ring_push_mp(r, evs, n, (uint16_t)producer);
    if (k)
        ph_bus_notify(bus);
    return k;
}

int ph_push_sp(struct ph_bus *bus, uint32_t producer, const struct ph_event *ev)
{
    return (int)ph_push_batch_sp(bus, producer, ev, 1);
}

int ph_push_mp(struct ph_bus *bus, uint32_t producer, const struct ph_event *ev)
{
    return (int)ph_push_batch_mp(bus, producer, ev, 1);
}

uint32_t ph_pop_sc(struct ph_bus *bus, struct ph_event *out, uint32_t max)
{
    /* acquire: the rings counted here are initialised (pairs with add_producer) */
    uint32_t n = atomic_load_explicit(&bus->nproducers, memory_order_acquire);
    if (n == 0 || max == 0)
        return 0;
    uint32_t start = bus->rr < n ? bus->rr : 0;
    uint32_t share = max / n ? max / n : 1;
    uint32_t got = 0;
    /* Pass 1 gives every ring up to an equal share; pass 2 fills what is left from the
     * busy ones. Starting one ring later on each call rotates who gets the leftover. */
    for (uint32_t pass = 0; pass < 2; pass++) {
        uint32_t i = start;
        for (uint32_t j = 0; j < n && got < max; j++) {
            uint32_t want = max - got;
            if (pass == 0 && want > share)
                want = share;
            got += ph_ring_pop_sc(&bus->rings[i], out + got, want);
            if (++i == n)
                i = 0;
        }
    }
    if (got)
        bus->rr = start + 1 < n ? start + 1 : 0;
    return got;
}

int ph_wait_timeout(uint64_t now_ns, uint64_t deadline_ns, struct timespec *ts)
{
    if (now_ns >= deadline_ns)
        return 0;
    uint64_t left = deadline_ns - now_ns;
    /* Capped so that tv_sec fits a 32-bit time_t (armhf before Debian 13): a longer timeout
     * would wrap negative, futex would fail with EINVAL at once and the consumer would spin.
     * The caller sleeps again after a capped sleep, so only the futex call is shortened. */
    if (left >= (uint64_t)PH_WAIT_MAX_SLEEP_S * 1000000000u) {
        ts->tv_sec = PH_WAIT_MAX_SLEEP_S;
        ts->tv_nsec = 0;
        return 1;
    }
    ts->tv_sec = (time_t)(left / 1000000000u);
    ts->tv_nsec = (long)(left % 1000000000u);
    return 1;
}

uint32_t ph_wait_pop_sc(struct ph_bus *bus, struct ph_event *out, uint32_t max, int64_t timeout_ns)
{
    uint32_t got = ph_pop_sc(bus, out, max);
    if (got || max == 0 || timeout_ns == 0)
        return got;
    uint64_t deadline = timeout_ns > 0 ? ph_now_ns() + (uint64_t)timeout_ns : UINT64_MAX;
    for (;;) {
        /* read before announcing the sleep: any wake after this point changes the word */
        uint32_t seq = atomic_load_explicit(&bus->wake_seq, memory_order_acquire);
        /* seq_cst: producers that see it will bump wake_seq and wake us */
        atomic_store_explicit(&bus->sleeping, 1, memory_order_seq_cst);
        /* seq_cst fence F_c: orders the sleeping store before the re-check of the rings
         * and of wake_pending (pairs with F_p in ph_bus_notify). */
        atomic_thread_fence(memory_order_seq_cst);
        got = ph_pop_sc(bus, out, max);
        /* acq_rel: consumes one ph_bus_wake, and sees what its caller did before it */
        if (got || atomic_exchange_explicit(&bus->wake_pending, 0, memory_order_acq_rel)) {
            atomic_store_explicit(&bus->sleeping, 0, memory_order_relaxed);
            return got;
        }
        struct timespec ts, *tsp = NULL;
        if (deadline != UINT64_MAX) {
            if (!ph_wait_timeout(ph_now_ns(), deadline, &ts)) {
                atomic_store_explicit(&bus->sleeping, 0, memory_order_relaxed);
                return 0;
            }
            tsp = &ts;
        }
        /* Returns on a wake, a signal, a timeout, or at once (EAGAIN) if wake_seq moved
         * since it was read above; every case loops back to re-check. */
        syscall(PH_SYS_FUTEX, (uint32_t *)&bus->wake_seq, FUTEX_WAIT_PRIVATE, seq, tsp, NULL, 0);
        atomic_store_explicit(&bus->sleeping, 0, memory_order_relaxed);
    }
}

void ph_bus_wake(struct ph_bus *bus)
{
    /* seq_cst, pending before the bump: a consumer that missed the flag after its fence F_c
     * read wake_seq before this bump, so its futex_wait returns at once or is woken below */
    atomic_store_explicit(&bus->wake_pending, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&bus->wake_seq, 1, memory_order_seq_cst);
    ph_futex_wake(&bus->wake_seq, INT_MAX);
}

int ph_bus_producer_stats(const struct ph_bus *bus, uint32_t producer, struct ph_producer_stats *out)
{
    /* acquire: pairs with add_producer's release, as in ph_bus_ring */
    if (producer >= atomic_load_explicit(&bus->nproducers, memory_order_acquire))
        return -1;
    const struct ph_ring *r = &bus->rings[producer];
    out->published = atomic_load_explicit(&r->published, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&r->dropped, memory_order_relaxed);
    out->depth = ph_ring_depth(r);
    out->capacity = r->capacity;
    return 0;
}
