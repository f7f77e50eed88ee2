/*
 * ph_api.h - everything Python sees of the native core.
 *
 * This file is also the cffi cdef (native/build_native.py reads it, minus the
 * preprocessor lines cffi cannot parse), so it holds only plain prototypes, POD
 * structs and integer #defines. Internals (_Atomic indices, cache-line padding) live in
 * ph_ring.h / ph_match.h, which Python never sees.
 *
 * Concurrency contract is in the names:
 *   _sp  at most one thread at a time pushes through a given producer id
 *   _mp  any number of threads may push through the same producer id concurrently
 *   _sc  at most one thread at a time pops (the dispatcher)
 * Every function here is safe to call without the GIL; none blocks a producer.
 */
#ifndef PH_API_H
#define PH_API_H

#include "ph_event.h"

/* Returns PH_ABI_VERSION as compiled into the library. */
int ph_abi_version(void);

/* CLOCK_MONOTONIC in nanoseconds: the clock of ts_ns, shared with C producers. */
uint64_t ph_now_ns(void);

/* ------------------------------------------------------------------ bus (ring) */

/* The bus: one bounded ring per producer, one consumer draining them all. */
struct ph_bus;

struct ph_producer_stats {
    uint64_t published;   /* events accepted since the producer was added */
    uint64_t dropped;     /* events refused because its ring was full */
    uint32_t depth;       /* events waiting now (a snapshot) */
    uint32_t capacity;    /* events the ring can hold */
};

/* capacity: events per producer ring, rounded up to a power of two (>= 2, <= 2^24).
 * max_producers: 1..4096. Returns NULL on bad arguments or when out of memory. */
struct ph_bus *ph_bus_new(uint32_t capacity, uint32_t max_producers);
void ph_bus_free(struct ph_bus *bus);

/* Adds a producer; returns its id (0-based) or -1 when max_producers are in use.
 * Must not race with itself; may run while other producers push and the consumer pops. */
int ph_bus_add_producer(struct ph_bus *bus);
uint32_t ph_bus_producer_count(const struct ph_bus *bus);

/* Push one event / a batch. Never blocks: what does not fit is dropped and counted.
 * The copies in the ring get source = the producer id (the caller's array is not written).
 * The accepted events are always a prefix evs[0..k) of the batch; evs[k..n) were dropped.
 * A producer id is used with _sp pushes only or with _mp pushes only, for its whole life.
 * An unknown producer id accepts nothing and counts nothing.
 * Return: events accepted (0/1, or 0..n). */
int ph_push_sp(struct ph_bus *bus, uint32_t producer, const struct ph_event *ev);
uint32_t ph_push_batch_sp(struct ph_bus *bus, uint32_t producer, const struct ph_event *evs, uint32_t n);
int ph_push_mp(struct ph_bus *bus, uint32_t producer, const struct ph_event *ev);
uint32_t ph_push_batch_mp(struct ph_bus *bus, uint32_t producer, const struct ph_event *evs, uint32_t n);

/* Pop up to max events into out, fair across producers, each producer's events in
 * push order. ph_pop_sc never waits; ph_wait_pop_sc sleeps (no spinning) until an event
 * arrives, ph_bus_wake is called, or timeout_ns passes (< 0: no timeout; 0: no wait).
 *
 * The order is exactly this (pihub's reference model in tests/native/model.py follows it):
 * with n producers, share = max / n (at least 1) and s = the start ring, a first pass
 * takes up to `share` events from each ring s, s+1, ..., n-1, 0, ..., s-1, a second pass
 * takes whatever still fits in the same ring order; the events are written in the order
 * taken. A call that returns events makes the next call start at ring s + 1 (mod n).
 *
 * ph_bus_wake makes a sleeping ph_wait_pop_sc return (0 events unless some arrived);
 * a wake that finds no consumer sleeping is kept and ends the next wait at once. */
uint32_t ph_pop_sc(struct ph_bus *bus, struct ph_event *out, uint32_t max);
uint32_t ph_wait_pop_sc(struct ph_bus *bus, struct ph_event *out, uint32_t max, int64_t timeout_ns);
void ph_bus_wake(struct ph_bus *bus);

/* 0 on success, -1 for an unknown producer id. */
int ph_bus_producer_stats(const struct ph_bus *bus, uint32_t producer, struct ph_producer_stats *out);

/* ---------------------------------------------------------------- matcher */

/* Condition operators. Numeric ops compare the field as a double (code is widened). */
#define PH_OP_EQ 1         /* x == a */
#define PH_OP_NE 2         /* x != a */
#define PH_OP_LT 3         /* x <  a */
#define PH_OP_LE 4         /* x <= a */
#define PH_OP_GT 5         /* x >  a */
#define PH_OP_GE 6         /* x >= a */
#define PH_OP_RANGE 7      /* a <= x <= b */
#define PH_OP_BITS_ALL 8   /* code field only: (code & key) == key */
#define PH_OP_BITS_ANY 9   /* code field only: (code & key) != 0 */
#define PH_OP_KEY_EQ 10    /* key fields only: key[field] == key */
#define PH_OP_KEY_NE 11    /* key fields only: key[field] != key */
#define PH_OP_PRESENT 12   /* the attribute exists (natively or opaque) */

struct ph_cond {
    uint8_t field;    /* PH_F_* */
    uint8_t op;       /* PH_OP_* */
    uint16_t _pad;
    uint32_t key;     /* interned id or bit mask */
    double a;
    double b;
};

struct ph_rule {
    uint32_t id;          /* caller's rule id; hits are reported with it */
    uint32_t type;        /* event type id this rule applies to (subtypes expanded by the caller) */
    uint32_t first_cond;  /* index of its first condition in the conds array */
    uint32_t ncond;       /* number of conditions, all must hold (AND) */
};

struct ph_hit {
    uint32_t event;   /* index of the event in the batch */
    uint32_t rule;    /* ph_rule.id */
};

struct ph_matcher;

/* Builds a matcher from a rule table; the arrays are copied. Returns NULL (errno EINVAL)
 * for an unknown field/op or an op the field cannot take (key fields: KEY_EQ, KEY_NE,
 * PRESENT; code: EQ..RANGE, BITS_ALL, BITS_ANY, PRESENT; num: EQ..RANGE, PRESENT), a
 * condition index out of range, a type id of 0 or above 65535, or two rules with the same
 * id and type; NULL (errno ENOMEM) when out of memory. */
struct ph_matcher *ph_matcher_new(const struct ph_rule *rules, uint32_t nrules,
                                  const struct ph_cond *conds, uint32_t nconds);
void ph_matcher_free(struct ph_matcher *m);

/* Matches events[0..nev) and writes (event, rule) pairs, events in order and, for one
 * event, rules in ascending id. Stops early at an event boundary when the next event's
 * hits would not fit in max_hits; *consumed (may be NULL) tells how many events were fully
 * matched, so max_hits must be at least the rule count of the largest type for progress.
 * Returns the number of hits written; entries of hits past that count (below max_hits) may
 * have been overwritten as scratch. Allocates nothing. A condition on a field that is
 * present but opaque (PH_OPAQUE bit) is taken as true: the caller decides those; the
 * opaque bit wins when both bits are set. Events of a type no rule names match nothing. */
uint32_t ph_match_batch(const struct ph_matcher *m, const struct ph_event *events, uint32_t nev,
                        struct ph_hit *hits, uint32_t max_hits, uint32_t *consumed);

#endif
