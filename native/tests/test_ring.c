/*
 * test_ring.c - the rings and the bus: full/empty, wrap-around, exact drop counts,
 * per-producer order with concurrent _sp and _mp producers, fairness, the blocking wait
 * (woken by a push, by ph_bus_wake, or timing out; timeouts beyond a 32-bit time_t) and
 * the load generator.
 *
 * Producer threads tag each event: key[0] = thread number, num[0] = its sequence number.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "../ph_api.h"
#include "../ph_loadgen.h"
#include "../ph_ring.h"
#include "check.h"

static struct ph_event make_event(uint32_t thread, uint64_t seq)
{
    struct ph_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = 1;
    ev.key[0] = thread;
    ev.num[0] = (double)seq;
    ev.present = 1u << PH_F_KEY0 | 1u << PH_F_NUM0;
    return ev;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------ single thread */

static void test_ring_full_empty_and_drops(void)
{
    struct ph_ring r;
    CHECK(ph_ring_init(&r, 8) == 0);
    struct ph_event evs[12], out[16];
    for (uint32_t i = 0; i < 12; i++)
        evs[i] = make_event(0, i);

    CHECK_EQ_U64(ph_ring_pop_sc(&r, out, 16), 0); /* empty */
    CHECK_EQ_U64(ph_ring_push_sp(&r, evs, 5, 3), 5);
    CHECK_EQ_U64(ph_ring_depth(&r), 5);
    CHECK_EQ_U64(ph_ring_push_sp(&r, evs + 5, 7, 3), 3); /* only 3 fit: a prefix */
    CHECK_EQ_U64(ph_ring_depth(&r), 8);
    CHECK_EQ_U64(ph_ring_push_sp(&r, evs, 1, 3), 0); /* full */
    CHECK_EQ_U64(atomic_load(&r.published), 8);
    CHECK_EQ_U64(atomic_load(&r.dropped), 5);

    CHECK_EQ_U64(ph_ring_pop_sc(&r, out, 16), 8);
    for (uint32_t i = 0; i < 8; i++) {
        CHECK(out[i].num[0] == (double)i);
        CHECK(out[i].source == 3);
    }
    CHECK_EQ_U64(ph_ring_pop_sc(&r, out, 16), 0);
    CHECK_EQ_U64(ph_ring_depth(&r), 0);
    ph_ring_destroy(&r);

    CHECK(ph_ring_init(&r, 6) == -1 && errno == EINVAL);
    CHECK(ph_ring_init(&r, 1) == -1 && errno == EINVAL);
}

/* The published/dropped counters are 64-bit atomics that hardware threads update: they
 * must not take a lock. Inline on x86-64, AArch64 and ARMv7; on ARMv6 (32-bit Raspberry Pi
 * OS) they are libatomic calls, so this is asked at run time, of the libatomic linked. */
static void test_ring_counters_are_lock_free(void)
{
    struct ph_ring r;
    CHECK(ph_ring_init(&r, 2) == 0);
    CHECK(atomic_is_lock_free(&r.published));
    CHECK(atomic_is_lock_free(&r.dropped));
    CHECK(atomic_is_lock_free(&r.head));
    ph_ring_destroy(&r);
}

/* Random batch sizes through a tiny ring, both push flavours, against a counter model:
 * the counters wrap the ring tens of thousands of times and cross 2^32 (they start just below it). */
static void test_ring_wraps_many_times(void)
{
    for (int shared = 0; shared < 2; shared++) {
        struct ph_ring r;
        CHECK(ph_ring_init(&r, 8) == 0);
        ph_ring_reset_at(&r, UINT32_MAX - 100);
        unsigned long long rng = 0x9e3779b97f4a7c15ULL + (unsigned)shared;
        uint64_t next_in = 0, next_out = 0, dropped = 0;
        struct ph_event in[11], out[11];
        for (int step = 0; step < 200000; step++) {
            uint32_t n = (uint32_t)(test_rand(&rng) % 11);
            if (test_rand(&rng) & 1) {
                for (uint32_t j = 0; j < n; j++)
                    in[j] = make_event(0, next_in + j);
                uint32_t room = 8 - (uint32_t)(next_in - next_out);
                uint32_t want = n < room ? n : room;
                uint32_t k = shared ? ph_ring_push_mp(&r, in, n, 1) : ph_ring_push_sp(&r, in, n, 1);
                CHECK_EQ_U64(k, want);
                next_in += k;
                dropped += n - k;
            } else {
                uint32_t k = ph_ring_pop_sc(&r, out, n);
                uint64_t have = next_in - next_out;
                CHECK_EQ_U64(k, n < have ? n : have);
                for (uint32_t j = 0; j < k; j++)
                    CHECK(out[j].num[0] == (double)(next_out + j));
                next_out += k;
            }
            CHECK_EQ_U64(ph_ring_depth(&r), next_in - next_out);
        }
        CHECK(next_in > 200000); /* > 25000 laps of the ring */
        CHECK_EQ_U64(atomic_load(&r.published), next_in);
        CHECK_EQ_U64(atomic_load(&r.dropped), dropped);
        ph_ring_destroy(&r);
    }
}

static void test_bus_arguments(void)
{
    CHECK(ph_bus_new(0, 1) == NULL);
    CHECK(ph_bus_new(8, 0) == NULL);
    CHECK(ph_bus_new(8, 4097) == NULL);
    CHECK(ph_bus_new(PH_RING_MAX_CAPACITY + 1, 1) == NULL);
    struct ph_bus *bus = ph_bus_new(5, 2);
    CHECK(bus != NULL);
    CHECK_EQ_U64(ph_bus_producer_count(bus), 0);
    struct ph_producer_stats st;
    CHECK(ph_bus_producer_stats(bus, 0, &st) == -1);
    struct ph_event ev = make_event(0, 0), out[4];
    CHECK(ph_push_sp(bus, 0, &ev) == 0); /* no such producer yet */
    CHECK(ph_bus_add_producer(bus) == 0);
    CHECK(ph_bus_add_producer(bus) == 1);
    CHECK(ph_bus_add_producer(bus) == -1);
    CHECK(ph_bus_producer_stats(bus, 1, &st) == 0);
    CHECK_EQ_U64(st.capacity, 8); /* rounded up to a power of two */
    CHECK(ph_push_sp(bus, 7, &ev) == 0);
    CHECK(ph_push_mp(bus, 1, &ev) == 1);
    CHECK_EQ_U64(ph_pop_sc(bus, out, 0), 0);
    CHECK_EQ_U64(ph_pop_sc(bus, out, 4), 1);
    CHECK_EQ_U64(out[0].source, 1);
    ph_bus_free(bus);
    ph_bus_free(NULL);
    bus = ph_bus_new(1, 1);
    CHECK(bus != NULL && ph_bus_add_producer(bus) == 0);
    CHECK(ph_bus_producer_stats(bus, 0, &st) == 0 && st.capacity == 2);
    ph_bus_free(bus);
}

/* The documented pop order: equal shares first, leftovers second, rotating start. */
static void test_bus_fair_pop(void)
{
    struct ph_bus *bus = ph_bus_new(16, 3);
    for (int i = 0; i < 3; i++)
        CHECK(ph_bus_add_producer(bus) == i);
    struct ph_event evs[16], out[16];
    for (uint32_t p = 0; p < 3; p++) {
        uint32_t n = p == 2 ? 2 : 16;
        for (uint32_t j = 0; j < n; j++)
            evs[j] = make_event(p, j);
        CHECK_EQ_U64(ph_push_batch_sp(bus, p, evs, n), n);
    }
    /* max 9: share 3 -> p0 0..2, p1 0..2, p2 0..1; leftover 1 -> p0 3 */
    CHECK_EQ_U64(ph_pop_sc(bus, out, 9), 9);
    uint32_t want_p[9] = {0, 0, 0, 1, 1, 1, 2, 2, 0};
    uint32_t want_s[9] = {0, 1, 2, 0, 1, 2, 0, 1, 3};
    for (int i = 0; i < 9; i++) {
        CHECK_EQ_U64(out[i].source, want_p[i]);
        CHECK(out[i].num[0] == (double)want_s[i]);
    }
    /* next call starts at p1: share 2 -> p1 3..4, p2 none, p0 4..5; leftover -> p1 5..6 */
    CHECK_EQ_U64(ph_pop_sc(bus, out, 6), 6);
    uint32_t want_p2[6] = {1, 1, 0, 0, 1, 1};
    uint32_t want_s2[6] = {3, 4, 4, 5, 5, 6};
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_U64(out[i].source, want_p2[i]);
        CHECK(out[i].num[0] == (double)want_s2[i]);
    }
    ph_bus_free(bus);
}

/* ------------------------------------------------------------- concurrency */

enum { NTHREADS = 3 };

struct producer_arg {
    struct ph_bus *bus;
    uint32_t producer;
    uint32_t thread;
    uint64_t count;
    int shared;
    int retry;
    uint64_t accepted;
    _Atomic int *finished; /* incremented when the thread has pushed its last event */
};

static void *producer_main(void *p)
{
    struct producer_arg *a = p;
    unsigned long long rng = 0x1234567ULL * (a->thread + 1);
    struct ph_event evs[7];
    uint64_t seq = 0;
    while (seq < a->count) {
        uint32_t n = 1 + (uint32_t)(test_rand(&rng) % 7);
        if (n > a->count - seq)
            n = (uint32_t)(a->count - seq);
        for (uint32_t j = 0; j < n; j++)
            evs[j] = make_event(a->thread, seq + j);
        uint32_t k = a->shared ? ph_push_batch_mp(a->bus, a->producer, evs, n)
                               : ph_push_batch_sp(a->bus, a->producer, evs, n);
        a->accepted += k;
        if (a->retry) {
            seq += k;
            if (k < n)
                sched_yield();
        } else {
            seq += n;
        }
    }
    if (a->finished != NULL)
        atomic_fetch_add(a->finished, 1);
    return NULL;
}

/* NTHREADS producers (own _sp rings, or one shared _mp ring), a ring of 64 so every ring
 * wraps thousands of times; the consumer checks per-thread order and completeness. */
static void run_concurrent(int shared, int retry, uint64_t per_thread)
{
    struct ph_bus *bus = ph_bus_new(64, NTHREADS);
    int shared_id = shared ? ph_bus_add_producer(bus) : -1;
    struct producer_arg args[NTHREADS];
    pthread_t th[NTHREADS];
    _Atomic int finished = 0;
    for (uint32_t t = 0; t < NTHREADS; t++) {
        int id = shared ? shared_id : ph_bus_add_producer(bus);
        CHECK(id >= 0);
        args[t] = (struct producer_arg){bus, (uint32_t)id, t, per_thread, shared, retry, 0, &finished};
    }
    for (uint32_t t = 0; t < NTHREADS; t++)
        CHECK(pthread_create(&th[t], NULL, producer_main, &args[t]) == 0);

    uint64_t expected_next[NTHREADS] = {0}, popped[NTHREADS] = {0};
    uint64_t total = 0;
    struct ph_event out[128];
    for (;;) {
        /* read before the pop: if every producer had finished, an empty pop means drained */
        int all_finished = atomic_load(&finished) == NTHREADS;
        uint32_t k = ph_wait_pop_sc(bus, out, 128, 20 * 1000000LL);
        for (uint32_t j = 0; j < k; j++) {
            uint32_t t = out[j].key[0];
            CHECK(t < NTHREADS);
            CHECK(out[j].source == args[t].producer);
            uint64_t seq = (uint64_t)out[j].num[0];
            if (retry)
                CHECK_EQ_U64(seq, expected_next[t]); /* nothing lost, nothing repeated */
            else
                CHECK(seq >= expected_next[t]); /* gaps are drops, order still holds */
            expected_next[t] = seq + 1;
            popped[t]++;
        }
        total += k;
        if (k == 0 && all_finished)
            break;
    }
    for (uint32_t t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    uint64_t accepted = 0, published = 0, dropped = 0;
    for (uint32_t t = 0; t < NTHREADS; t++) {
        CHECK_EQ_U64(popped[t], args[t].accepted);
        accepted += args[t].accepted;
        if (retry)
            CHECK_EQ_U64(args[t].accepted, per_thread);
    }
    for (uint32_t p = 0; p < ph_bus_producer_count(bus); p++) {
        struct ph_producer_stats st;
        CHECK(ph_bus_producer_stats(bus, p, &st) == 0);
        CHECK_EQ_U64(st.depth, 0);
        published += st.published;
        dropped += st.dropped;
    }
    CHECK_EQ_U64(total, accepted);
    CHECK_EQ_U64(published, accepted);
    if (!retry)
        CHECK_EQ_U64(published + dropped, per_thread * NTHREADS); /* exact drop count */
    ph_bus_free(bus);
}

static void test_concurrent_sp_retry(void) { run_concurrent(0, 1, 300000); }
static void test_concurrent_mp_retry(void) { run_concurrent(1, 1, 300000); }
static void test_concurrent_sp_drops(void) { run_concurrent(0, 0, 300000); }
static void test_concurrent_mp_drops(void) { run_concurrent(1, 0, 300000); }

/* ------------------------------------------------------------ blocking wait */

struct waiter_arg {
    struct ph_bus *bus;
    int64_t timeout_ns;
    uint32_t got;
    struct ph_event out[4];
    _Atomic int done;
};

static void *waiter_main(void *p)
{
    struct waiter_arg *w = p;
    w->got = ph_wait_pop_sc(w->bus, w->out, 4, w->timeout_ns);
    atomic_store(&w->done, 1);
    return NULL;
}

static void test_wait_wakes_on_push(void)
{
    for (int shared = 0; shared < 2; shared++) {
        struct ph_bus *bus = ph_bus_new(8, 1);
        CHECK(ph_bus_add_producer(bus) == 0);
        struct waiter_arg w = {.bus = bus, .timeout_ns = -1};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, waiter_main, &w) == 0);
        sleep_ms(50); /* let it reach futex_wait (the test passes either way) */
        CHECK(atomic_load(&w.done) == 0);
        struct ph_event ev = make_event(0, 42);
        CHECK((shared ? ph_push_mp(bus, 0, &ev) : ph_push_sp(bus, 0, &ev)) == 1);
        pthread_join(th, NULL);
        CHECK_EQ_U64(w.got, 1);
        CHECK(w.out[0].num[0] == 42.0);
        ph_bus_free(bus);
    }
}

static void test_wait_wakes_on_bus_wake(void)
{
    struct ph_bus *bus = ph_bus_new(8, 1);
    CHECK(ph_bus_add_producer(bus) == 0);
    struct waiter_arg w = {.bus = bus, .timeout_ns = -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, waiter_main, &w) == 0);
    sleep_ms(50);
    CHECK(atomic_load(&w.done) == 0);
    ph_bus_wake(bus);
    pthread_join(th, NULL);
    CHECK_EQ_U64(w.got, 0);

    /* a wake with nobody waiting is kept for the next wait, and consumed by it */
    struct ph_event out[4];
    ph_bus_wake(bus);
    CHECK_EQ_U64(ph_wait_pop_sc(bus, out, 4, -1), 0);
    uint64_t t0 = ph_now_ns();
    CHECK_EQ_U64(ph_wait_pop_sc(bus, out, 4, 30 * 1000000LL), 0);
    CHECK(ph_now_ns() - t0 >= 30 * 1000000ULL); /* the wake was consumed: this one timed out */
    ph_bus_free(bus);
}

static void test_wait_times_out(void)
{
    struct ph_bus *bus = ph_bus_new(8, 2);
    struct ph_event out[4];
    uint64_t t0 = ph_now_ns();
    CHECK_EQ_U64(ph_wait_pop_sc(bus, out, 4, 20 * 1000000LL), 0); /* no producer at all */
    CHECK(ph_now_ns() - t0 >= 20 * 1000000ULL);
    CHECK(ph_bus_add_producer(bus) == 0);
    t0 = ph_now_ns();
    CHECK_EQ_U64(ph_wait_pop_sc(bus, out, 4, 25 * 1000000LL), 0);
    CHECK(ph_now_ns() - t0 >= 25 * 1000000ULL);
    CHECK_EQ_U64(ph_wait_pop_sc(bus, out, 4, 0), 0); /* 0: no wait */
    struct ph_event ev = make_event(0, 7);
    CHECK(ph_push_sp(bus, 0, &ev) == 1);
    CHECK_EQ_U64(ph_wait_pop_sc(bus, out, 4, 0), 1);
    ph_bus_free(bus);
}

/* A 32-bit time_t (armhf before Debian 13) holds at most 2^31 - 1 s: the futex timeout is
 * capped below that whatever the deadline, and exact up to the cap. */
static void test_wait_timeout_fits_32_bit_time_t(void)
{
    struct timespec ts = {-1, -1};
    CHECK(ph_wait_timeout(5, 5, &ts) == 0 && ts.tv_sec == -1 && ts.tv_nsec == -1); /* passed: untouched */
    CHECK(ph_wait_timeout(6, 5, &ts) == 0 && ts.tv_sec == -1);
    CHECK(ph_wait_timeout(5, 6, &ts) == 1 && ts.tv_sec == 0 && ts.tv_nsec == 1);
    CHECK(ph_wait_timeout(1000, 1000 + 2500000000ULL, &ts) == 1 && ts.tv_sec == 2 && ts.tv_nsec == 500000000);
    const uint64_t cap = PH_WAIT_MAX_SLEEP_S * 1000000000ULL;
    CHECK(ph_wait_timeout(7, 7 + cap - 1, &ts) == 1);
    CHECK(ts.tv_sec == PH_WAIT_MAX_SLEEP_S - 1 && ts.tv_nsec == 999999999);
    const uint64_t huge[] = {cap, cap + 1, (1ULL << 31) * 1000000000ULL, (1ULL << 32) * 1000000000ULL + 5,
                             (uint64_t)INT64_MAX, UINT64_MAX - 1};
    for (unsigned i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        ts.tv_sec = ts.tv_nsec = -1;
        CHECK(ph_wait_timeout(0, huge[i], &ts) == 1);
        CHECK(ts.tv_sec == PH_WAIT_MAX_SLEEP_S && ts.tv_nsec == 0);
        CHECK(ph_wait_timeout(123456789, huge[i], &ts) == 1);
        CHECK(ts.tv_sec == (huge[i] - 123456789 >= cap ? PH_WAIT_MAX_SLEEP_S : PH_WAIT_MAX_SLEEP_S - 1));
    }
}

/* CPU time the thread has used, in ns. */
static uint64_t thread_cpu_ns(pthread_t th)
{
    clockid_t clock;
    struct timespec ts;
    CHECK(pthread_getcpuclockid(th, &clock) == 0);
    CHECK(clock_gettime(clock, &ts) == 0);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Timeouts far beyond 2^31 s sleep (a futex that failed with EINVAL would spin: ~200 ms of
 * CPU in the 200 ms below) and still return the event pushed during the wait. */
static void test_wait_with_huge_timeouts_sleeps(void)
{
    const int64_t timeouts[] = {INT64_MAX, (int64_t)((1ULL << 31) + 1) * 1000000000LL};
    for (unsigned i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        struct ph_bus *bus = ph_bus_new(8, 1);
        CHECK(ph_bus_add_producer(bus) == 0);
        struct waiter_arg w = {.bus = bus, .timeout_ns = timeouts[i]};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, waiter_main, &w) == 0);
        sleep_ms(20); /* let it reach futex_wait */
        uint64_t cpu0 = thread_cpu_ns(th);
        sleep_ms(200);
        uint64_t used = thread_cpu_ns(th) - cpu0;
        CHECK(atomic_load(&w.done) == 0);
        CHECK(used < 50 * 1000000ULL);
        struct ph_event ev = make_event(0, 9);
        CHECK(ph_push_sp(bus, 0, &ev) == 1);
        pthread_join(th, NULL);
        CHECK_EQ_U64(w.got, 1);
        CHECK(w.out[0].num[0] == 9.0);
        ph_bus_free(bus);
    }
}

/* Many short sleeps against a producer that pushes in bursts: a lost wake-up would hang
 * the consumer in futex_wait with no timeout. */
static void *burst_main(void *p)
{
    struct producer_arg *a = p;
    for (uint64_t i = 0; i < a->count; i++) {
        struct ph_event ev = make_event(0, i);
        while (ph_push_sp(a->bus, a->producer, &ev) == 0)
            sched_yield();
        if (i % 64 == 0)
            sleep_ms(0 == i % 4096 ? 1 : 0);
        else if (i % 7 == 0)
            sched_yield();
    }
    return NULL;
}

static void test_wait_no_lost_wakeup(void)
{
    struct ph_bus *bus = ph_bus_new(4, 1);
    CHECK(ph_bus_add_producer(bus) == 0);
    struct producer_arg a = {bus, 0, 0, 200000, 0, 1, 0, NULL};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, burst_main, &a) == 0);
    uint64_t next = 0;
    struct ph_event out[3];
    while (next < a.count) {
        uint32_t k = ph_wait_pop_sc(bus, out, 1 + (uint32_t)(next % 3), -1);
        CHECK(k >= 1);
        for (uint32_t j = 0; j < k; j++)
            CHECK(out[j].num[0] == (double)next++);
    }
    pthread_join(th, NULL);
    ph_bus_free(bus);
}

/* ------------------------------------------------------------ load generator */

/* The load generator pushes through the entry points it is handed: here, this library's. */
static struct ph_loadgen_ring ring_of(struct ph_bus *bus)
{
    struct ph_loadgen_ring ring = {bus, ph_push_batch_sp, ph_push_batch_mp, ph_bus_producer_count, ph_now_ns};
    return ring;
}

static void test_loadgen(void)
{
    for (int shared = 0; shared < 2; shared++) {
        struct ph_bus *bus = ph_bus_new(128, 4);
        uint32_t ids[2];
        ids[0] = (uint32_t)ph_bus_add_producer(bus);
        ids[1] = shared ? ids[0] : (uint32_t)ph_bus_add_producer(bus);
        struct ph_event tmpl = make_event(9, 0);
        tmpl.type = 5;
        uint32_t flags = PH_LOADGEN_RETRY | (shared ? PH_LOADGEN_MP : 0);
        struct ph_loadgen_ring ring = ring_of(bus);
        struct ph_loadgen *lg = ph_loadgen_start(&ring, ids, 2, &tmpl, 100000, 32, flags);
        CHECK(lg != NULL);
        uint64_t total = 0, sum = 0;
        struct ph_event out[256];
        while (total < 200000) {
            uint32_t k = ph_wait_pop_sc(bus, out, 256, -1);
            for (uint32_t j = 0; j < k; j++) {
                CHECK(out[j].type == 5 && out[j].key[0] == 9);
                sum += (uint64_t)out[j].num[0];
            }
            total += k;
        }
        CHECK_EQ_U64(ph_loadgen_join(lg), 200000);
        CHECK_EQ_U64(ph_loadgen_join(lg), 200000); /* a second join only repeats the count */
        ph_loadgen_free(lg);
        CHECK_EQ_U64(sum, 2 * (100000ULL * 99999ULL / 2)); /* each thread's 0..99999 once */
        ph_bus_free(bus);
    }
}

static void test_loadgen_arguments_and_stop(void)
{
    struct ph_bus *bus = ph_bus_new(8, 2);
    uint32_t ids[2] = {0, 0};
    struct ph_event tmpl = make_event(0, 0);
    struct ph_loadgen_ring ring = ring_of(bus);
    CHECK(ph_loadgen_start(&ring, ids, 1, &tmpl, 10, 1, 0) == NULL && errno == EINVAL); /* no producer */
    CHECK(ph_bus_add_producer(bus) == 0);
    CHECK(ph_loadgen_start(&ring, ids, 2, &tmpl, 10, 1, 0) == NULL && errno == EINVAL); /* same _sp id */
    CHECK(ph_loadgen_start(&ring, ids, 1, &tmpl, 10, 0, 0) == NULL && errno == EINVAL);
    CHECK(ph_loadgen_start(&ring, ids, 1, &tmpl, 10, 4097, 0) == NULL && errno == EINVAL);
    CHECK(ph_loadgen_start(&ring, ids, 1, &tmpl, 10, 1, 4) == NULL && errno == EINVAL);
    CHECK(ph_loadgen_start(NULL, ids, 1, &tmpl, 10, 1, 0) == NULL && errno == EINVAL);
    struct ph_loadgen_ring broken = ring;
    broken.push_batch_mp = NULL;
    CHECK(ph_loadgen_start(&broken, ids, 1, &tmpl, 10, 1, 0) == NULL && errno == EINVAL);
    broken = ring;
    broken.bus = NULL;
    CHECK(ph_loadgen_start(&broken, ids, 1, &tmpl, 10, 1, 0) == NULL && errno == EINVAL);
    /* no consumer and RETRY: only stop() can end it */
    struct ph_loadgen *lg =
        ph_loadgen_start(&ring, ids, 2, &tmpl, 1000000000ULL, 4, PH_LOADGEN_RETRY | PH_LOADGEN_MP);
    CHECK(lg != NULL);
    sleep_ms(20);
    ph_loadgen_stop(lg);
    CHECK_EQ_U64(ph_loadgen_join(lg), 8); /* exactly what fits */
    ph_loadgen_free(lg);
    /* without RETRY the refusals are drops: 8 free slots, batches of 3 -> 3 + 3 + 2 accepted */
    struct ph_event out[8];
    CHECK_EQ_U64(ph_pop_sc(bus, out, 8), 8);
    struct ph_producer_stats before, after;
    CHECK(ph_bus_producer_stats(bus, 0, &before) == 0);
    lg = ph_loadgen_start(&ring, ids, 1, &tmpl, 1000, 3, 0);
    CHECK(lg != NULL);
    ph_loadgen_free(lg); /* joins first */
    lg = NULL;
    ph_loadgen_free(lg); /* NULL: nothing */
    CHECK(ph_bus_producer_stats(bus, 0, &after) == 0);
    CHECK_EQ_U64(after.published - before.published, 8);
    CHECK_EQ_U64(after.dropped - before.dropped, 1000 - 8);
    CHECK_EQ_U64(after.depth, 8);
    ph_bus_free(bus);
}

int main(void)
{
    fprintf(stderr, "test_ring\n");
    RUN(test_ring_full_empty_and_drops);
    RUN(test_ring_counters_are_lock_free);
    RUN(test_ring_wraps_many_times);
    RUN(test_bus_arguments);
    RUN(test_bus_fair_pop);
    RUN(test_concurrent_sp_retry);
    RUN(test_concurrent_mp_retry);
    RUN(test_concurrent_sp_drops);
    RUN(test_concurrent_mp_drops);
    RUN(test_wait_wakes_on_push);
    RUN(test_wait_wakes_on_bus_wake);
    RUN(test_wait_times_out);
    RUN(test_wait_timeout_fits_32_bit_time_t);
    RUN(test_wait_with_huge_timeouts_sleeps);
    RUN(test_wait_no_lost_wakeup);
    RUN(test_loadgen);
    RUN(test_loadgen_arguments_and_stop);
    fprintf(stderr, "test_ring: all passed\n");
    return 0;
}
