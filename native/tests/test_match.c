/*
 * test_match.c - the matcher: every operator on native, opaque and absent fields, NaN,
 * table validation, the hash-index path against the linear path, hit order and the
 * max_hits cut, and a random differential test against a brute-force reference.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <string.h>

#include "../ph_api.h"
#include "../ph_match.h"
#include "check.h"

/* ------------------------------------------------------- brute-force reference */

static int ref_cond(const struct ph_cond *c, const struct ph_event *ev)
{
    int opaque = (ev->present >> (8 + c->field)) & 1;
    int native = (ev->present >> c->field) & 1;
    if (opaque)
        return 1;
    if (!native)
        return 0;
    if (c->op == PH_OP_PRESENT)
        return 1;
    if (c->field <= PH_F_KEY1)
        return c->op == PH_OP_KEY_EQ ? ev->key[c->field] == c->key : ev->key[c->field] != c->key;
    if (c->op == PH_OP_BITS_ALL)
        return (ev->code & c->key) == c->key;
    if (c->op == PH_OP_BITS_ANY)
        return (ev->code & c->key) != 0;
    double x = c->field == PH_F_CODE ? (double)ev->code : ev->num[c->field - PH_F_NUM0];
    switch (c->op) {
    case PH_OP_EQ: return x == c->a;
    case PH_OP_NE: return x != c->a;
    case PH_OP_LT: return x < c->a;
    case PH_OP_LE: return x <= c->a;
    case PH_OP_GT: return x > c->a;
    case PH_OP_GE: return x >= c->a;
    case PH_OP_RANGE: return x >= c->a && x <= c->b;
    }
    CHECK(0);
    return 0;
}

/* All hits of events[0..nev), events in order, rules by ascending id. */
static uint32_t ref_match(const struct ph_rule *rules, uint32_t nrules, const struct ph_cond *conds,
                          const struct ph_event *events, uint32_t nev, struct ph_hit *hits)
{
    uint32_t nh = 0;
    for (uint32_t i = 0; i < nev; i++) {
        uint32_t last = 0;
        int any = 0;
        for (;;) { /* selection by ascending id, no sort needed */
            int found = 0;
            uint32_t best = 0;
            for (uint32_t r = 0; r < nrules; r++) {
                if (rules[r].type != events[i].type || (any && rules[r].id <= last))
                    continue;
                if (!found || rules[r].id < rules[best].id) {
                    best = r;
                    found = 1;
                }
            }
            if (!found)
                break;
            any = 1;
            last = rules[best].id;
            int ok = 1;
            for (uint32_t c = 0; c < rules[best].ncond; c++)
                ok = ok && ref_cond(&conds[rules[best].first_cond + c], &events[i]);
            if (ok) {
                hits[nh].event = i;
                hits[nh].rule = rules[best].id;
                nh++;
            }
        }
    }
    return nh;
}

static struct ph_event ev_of(uint32_t type, uint16_t present)
{
    struct ph_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.present = present;
    return ev;
}

#define BIT(f) (1u << (f))
#define OPQ(f) (1u << PH_OPAQUE(f))

static struct ph_cond cond(uint8_t field, uint8_t op, uint32_t key, double a, double b)
{
    struct ph_cond c = {field, op, 0, key, a, b};
    return c;
}

/* One rule, one condition, one event: does it hit? */
static int hits_one(struct ph_cond c, struct ph_event ev)
{
    struct ph_rule r = {7, ev.type, 0, 1};
    struct ph_matcher *m = ph_matcher_new(&r, 1, &c, 1);
    CHECK(m != NULL);
    struct ph_hit hits[2];
    uint32_t consumed = 99;
    uint32_t n = ph_match_batch(m, &ev, 1, hits, 2, &consumed);
    CHECK_EQ_U64(consumed, 1);
    CHECK(n <= 1);
    CHECK(n == 0 || (hits[0].event == 0 && hits[0].rule == 7));
    CHECK_EQ_U64(n, (uint32_t)ref_cond(&c, &ev));
    ph_matcher_free(m);
    return (int)n;
}

/* ------------------------------------------------------------------ the tests */

static void test_ops_native(void)
{
    struct ph_event ev = ev_of(1, BIT(PH_F_KEY0) | BIT(PH_F_KEY1) | BIT(PH_F_CODE) | BIT(PH_F_NUM0) |
                                      BIT(PH_F_NUM1) | BIT(PH_F_NUM2));
    ev.key[0] = 17;
    ev.key[1] = 4;
    ev.code = 0x0b; /* 1011 */
    ev.num[0] = 2.5;
    ev.num[1] = -1.0;
    ev.num[2] = 0.0;

    CHECK(hits_one(cond(PH_F_KEY0, PH_OP_KEY_EQ, 17, 0, 0), ev));
    CHECK(!hits_one(cond(PH_F_KEY0, PH_OP_KEY_EQ, 18, 0, 0), ev));
    CHECK(hits_one(cond(PH_F_KEY1, PH_OP_KEY_NE, 17, 0, 0), ev));
    CHECK(!hits_one(cond(PH_F_KEY1, PH_OP_KEY_NE, 4, 0, 0), ev));
    CHECK(hits_one(cond(PH_F_KEY1, PH_OP_PRESENT, 0, 0, 0), ev));

    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_EQ, 0, 2.5, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_EQ, 0, 2.4, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_NE, 0, 2.4, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_NE, 0, 2.5, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM1, PH_OP_LT, 0, 0, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM1, PH_OP_LT, 0, -1, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM1, PH_OP_LE, 0, -1, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM1, PH_OP_LE, 0, -1.5, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_GT, 0, 2, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_GT, 0, 2.5, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_GE, 0, 2.5, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_GE, 0, 2.6, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_RANGE, 0, 2.5, 2.5), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_RANGE, 0, 1, 3), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_RANGE, 0, 2.6, 3), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_RANGE, 0, 3, 1), ev)); /* empty range */
    CHECK(hits_one(cond(PH_F_NUM2, PH_OP_EQ, 0, -0.0, 0), ev));  /* -0 == +0 */

    CHECK(hits_one(cond(PH_F_CODE, PH_OP_EQ, 0, 11, 0), ev)); /* code widened to double */
    CHECK(hits_one(cond(PH_F_CODE, PH_OP_GT, 0, 10.5, 0), ev));
    CHECK(hits_one(cond(PH_F_CODE, PH_OP_BITS_ALL, 0x09, 0, 0), ev));
    CHECK(!hits_one(cond(PH_F_CODE, PH_OP_BITS_ALL, 0x0c, 0, 0), ev));
    CHECK(hits_one(cond(PH_F_CODE, PH_OP_BITS_ANY, 0x0c, 0, 0), ev));
    CHECK(!hits_one(cond(PH_F_CODE, PH_OP_BITS_ANY, 0x04, 0, 0), ev));
    CHECK(hits_one(cond(PH_F_CODE, PH_OP_BITS_ALL, 0, 0, 0), ev)); /* empty mask: all of none */
}

static void test_opaque_and_absent(void)
{
    struct ph_cond all[] = {
        cond(PH_F_KEY0, PH_OP_KEY_EQ, 1, 0, 0),   cond(PH_F_KEY0, PH_OP_KEY_NE, 1, 0, 0),
        cond(PH_F_KEY1, PH_OP_PRESENT, 0, 0, 0),  cond(PH_F_CODE, PH_OP_BITS_ANY, 1, 0, 0),
        cond(PH_F_CODE, PH_OP_NE, 0, 5, 0),       cond(PH_F_NUM0, PH_OP_RANGE, 0, 1, 2),
        cond(PH_F_NUM1, PH_OP_NE, 0, 5, 0),       cond(PH_F_NUM2, PH_OP_PRESENT, 0, 0, 0),
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        unsigned f = all[i].field;
        CHECK(hits_one(all[i], ev_of(2, (uint16_t)OPQ(f))));          /* opaque: undecided, passes */
        CHECK(hits_one(all[i], ev_of(2, (uint16_t)(OPQ(f) | BIT(f))))); /* opaque wins */
        CHECK(!hits_one(all[i], ev_of(2, 0)));                          /* absent: fails, NE too */
        CHECK(!hits_one(all[i], ev_of(2, (uint16_t)(BIT((f + 1) % 6) | OPQ((f + 2) % 6)))));
    }
}

static void test_nan(void)
{
    struct ph_event ev = ev_of(1, BIT(PH_F_NUM0));
    ev.num[0] = NAN;
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_EQ, 0, NAN, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_NE, 0, NAN, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_NE, 0, 1, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_LT, 0, INFINITY, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_GE, 0, -INFINITY, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_RANGE, 0, -INFINITY, INFINITY), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_PRESENT, 0, 0, 0), ev));
    ev.num[0] = 1.0;
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_EQ, 0, NAN, 0), ev));
    CHECK(hits_one(cond(PH_F_NUM0, PH_OP_NE, 0, NAN, 0), ev));
    CHECK(!hits_one(cond(PH_F_NUM0, PH_OP_RANGE, 0, NAN, 2), ev));
}

static void test_validation(void)
{
    struct ph_cond ok = cond(PH_F_NUM0, PH_OP_GT, 0, 1, 0);
    struct ph_rule r = {1, 1, 0, 1};
    struct ph_matcher *m = ph_matcher_new(&r, 1, &ok, 1);
    CHECK(m != NULL);
    ph_matcher_free(m);
    ph_matcher_free(NULL);
    m = ph_matcher_new(NULL, 0, NULL, 0); /* an empty table is fine and matches nothing */
    CHECK(m != NULL);
    struct ph_event ev = ev_of(1, 0);
    uint32_t consumed = 0;
    CHECK_EQ_U64(ph_match_batch(m, &ev, 1, NULL, 0, &consumed), 0);
    CHECK_EQ_U64(consumed, 1);
    ph_matcher_free(m);

    struct ph_cond bad[] = {
        cond(6, PH_OP_EQ, 0, 0, 0),                  /* no such field */
        cond(PH_F_NUM0, 0, 0, 0, 0),                 /* no such op */
        cond(PH_F_NUM0, 13, 0, 0, 0),
        cond(PH_F_KEY0, PH_OP_EQ, 0, 0, 0),          /* numeric op on a key field */
        cond(PH_F_KEY1, PH_OP_LT, 0, 0, 0),
        cond(PH_F_KEY0, PH_OP_BITS_ANY, 1, 0, 0),
        cond(PH_F_NUM1, PH_OP_KEY_EQ, 1, 0, 0),      /* key op on a number */
        cond(PH_F_CODE, PH_OP_KEY_NE, 1, 0, 0),
        cond(PH_F_NUM2, PH_OP_BITS_ALL, 1, 0, 0),    /* bit ops are for code */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK(ph_matcher_new(&r, 1, &bad[i], 1) == NULL);
        CHECK(errno == EINVAL);
    }
    struct ph_cond two[2] = {ok, ok};
    struct ph_rule badrules[][2] = {
        {{1, 0, 0, 1}, {2, 1, 0, 1}},          /* type 0 */
        {{1, 65536, 0, 1}, {2, 1, 0, 1}},      /* type too large */
        {{1, 1, 1, 2}, {2, 1, 0, 1}},          /* conds [1, 3) out of 2 */
        {{1, 1, 3, 0}, {2, 1, 0, 1}},          /* first_cond beyond the end */
        {{1, 1, 0xFFFFFFFFu, 2}, {2, 1, 0, 1}}, /* would wrap in 32 bits */
        {{5, 1, 0, 1}, {5, 1, 1, 1}},          /* same id, same type */
    };
    for (size_t i = 0; i < sizeof badrules / sizeof badrules[0]; i++) {
        errno = 0;
        CHECK(ph_matcher_new(badrules[i], 2, two, 2) == NULL);
        CHECK(errno == EINVAL);
    }
    struct ph_rule same_id_other_type[2] = {{5, 1, 0, 1}, {5, 2, 1, 1}};
    m = ph_matcher_new(same_id_other_type, 2, two, 2);
    CHECK(m != NULL);
    ph_matcher_free(m);
    errno = 0;
    CHECK(ph_matcher_new(NULL, 1, two, 2) == NULL && errno == EINVAL);
    CHECK(ph_matcher_new(&r, 1, NULL, 1) == NULL && errno == EINVAL);
}

/* The index and the linear list give the same hits, merged in id order. */
static void test_index_path(void)
{
    enum { N = 40 };
    struct ph_rule rules[N + 4];
    struct ph_cond conds[2 * N + 4];
    uint32_t nr = 0, nc = 0;
    /* type 3: N rules with key0 == i % 10 (some with a second condition), ids descending */
    for (uint32_t i = 0; i < N; i++) {
        rules[nr++] = (struct ph_rule){1000 - 10 * i, 3, nc, i % 3 == 0 ? 2 : 1};
        conds[nc++] = cond(PH_F_KEY0, PH_OP_KEY_EQ, i % 10, 0, 0);
        if (i % 3 == 0)
            conds[nc++] = cond(PH_F_NUM0, PH_OP_GT, 0, (double)i, 0);
    }
    /* type 3 linear rules interleaving with the ids above */
    rules[nr++] = (struct ph_rule){995, 3, nc, 1};
    conds[nc++] = cond(PH_F_KEY1, PH_OP_PRESENT, 0, 0, 0);
    rules[nr++] = (struct ph_rule){1, 3, nc, 0}; /* no condition: every type-3 event */
    /* type 4: numeric index on num1 */
    for (uint32_t i = 0; i < 2; i++)
        rules[nr++] = (struct ph_rule){i, 4, nc, 0};
    CHECK(nr <= N + 4);
    struct ph_cond numconds[6];
    struct ph_rule numrules[6];
    for (uint32_t i = 0; i < 6; i++) {
        numconds[i] = cond(PH_F_NUM1, PH_OP_EQ, 0, i == 5 ? -0.0 : (double)(i % 3), 0);
        numrules[i] = (struct ph_rule){i, 4, i, 1};
    }

    struct ph_matcher *m = ph_matcher_new(rules, nr, conds, nc);
    CHECK(m != NULL);
    uint32_t indexed = 0;
    CHECK(ph_matcher_index_field(m, 3, &indexed) == PH_F_KEY0);
    CHECK_EQ_U64(indexed, N);
    CHECK(ph_matcher_index_field(m, 4, &indexed) == PH_MATCH_NO_INDEX);
    CHECK(ph_matcher_index_field(m, 2, &indexed) == PH_MATCH_NO_INDEX);

    struct ph_event evs[6];
    evs[0] = ev_of(3, BIT(PH_F_KEY0) | BIT(PH_F_NUM0));
    evs[0].key[0] = 7;
    evs[0].num[0] = 20;
    evs[1] = ev_of(3, OPQ(PH_F_KEY0) | BIT(PH_F_KEY1)); /* opaque index field: all rules */
    evs[2] = ev_of(3, BIT(PH_F_NUM0));                   /* index field absent */
    evs[3] = ev_of(3, BIT(PH_F_KEY0) | BIT(PH_F_KEY1));
    evs[3].key[0] = 12345; /* no bucket */
    evs[4] = ev_of(3, BIT(PH_F_KEY0) | OPQ(PH_F_NUM0));
    evs[4].key[0] = 0;
    evs[5] = ev_of(9, BIT(PH_F_KEY0)); /* a type with no rules */
    struct ph_hit hits[256], want[256];
    uint32_t consumed;
    uint32_t n = ph_match_batch(m, evs, 6, hits, 256, &consumed);
    uint32_t nw = ref_match(rules, nr, conds, evs, 6, want);
    CHECK_EQ_U64(consumed, 6);
    CHECK_EQ_U64(n, nw);
    CHECK(memcmp(hits, want, n * sizeof hits[0]) == 0);
    uint32_t ev1 = 0;
    for (uint32_t i = 0; i < n; i++)
        ev1 += hits[i].event == 1;
    CHECK_EQ_U64(ev1, 26 + 2); /* every indexed rule without a num0 test, 995 and 1 */
    for (uint32_t i = 1; i < n; i++)
        CHECK(hits[i].event > hits[i - 1].event ||
              (hits[i].event == hits[i - 1].event && hits[i].rule > hits[i - 1].rule));
    ph_matcher_free(m);

    m = ph_matcher_new(numrules, 6, numconds, 6);
    CHECK(m != NULL);
    CHECK(ph_matcher_index_field(m, 4, &indexed) == PH_F_NUM1);
    CHECK_EQ_U64(indexed, 6);
    double xs[] = {0.0, -0.0, 1.0, 2.0, 3.0, NAN};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        struct ph_event ev = ev_of(4, BIT(PH_F_NUM1));
        ev.num[1] = xs[i];
        n = ph_match_batch(m, &ev, 1, hits, 16, NULL);
        nw = ref_match(numrules, 6, numconds, &ev, 1, want);
        CHECK_EQ_U64(n, nw);
        CHECK(memcmp(hits, want, n * sizeof hits[0]) == 0);
    }
    struct ph_event zero = ev_of(4, BIT(PH_F_NUM1));
    zero.num[1] = -0.0;
    CHECK_EQ_U64(ph_match_batch(m, &zero, 1, hits, 16, NULL), 3); /* ids 0, 3 and the -0 rule 5 */
    ph_matcher_free(m);
}

/* max_hits cuts at an event boundary and reports consumed events. */
static void test_max_hits(void)
{
    struct ph_cond c = cond(PH_F_NUM0, PH_OP_PRESENT, 0, 0, 0);
    struct ph_rule rules[3] = {{1, 1, 0, 1}, {2, 1, 0, 1}, {3, 1, 0, 1}};
    struct ph_matcher *m = ph_matcher_new(rules, 3, &c, 1);
    struct ph_event evs[4];
    for (int i = 0; i < 4; i++)
        evs[i] = ev_of(1, i == 1 ? 0 : BIT(PH_F_NUM0)); /* event 1 hits nothing */
    struct ph_hit hits[12];
    uint32_t consumed;
    CHECK_EQ_U64(ph_match_batch(m, evs, 4, hits, 5, &consumed), 3);
    CHECK_EQ_U64(consumed, 2); /* event 2's three hits do not fit after event 0's three */
    CHECK_EQ_U64(ph_match_batch(m, evs, 4, hits, 6, &consumed), 6);
    CHECK_EQ_U64(consumed, 3);
    CHECK_EQ_U64(ph_match_batch(m, evs, 4, hits, 2, &consumed), 0);
    CHECK_EQ_U64(consumed, 0);
    CHECK_EQ_U64(ph_match_batch(m, evs + 1, 1, hits, 0, &consumed), 0);
    CHECK_EQ_U64(consumed, 1); /* no hits needed no room */
    CHECK_EQ_U64(ph_match_batch(m, evs, 4, hits, 12, &consumed), 9);
    CHECK_EQ_U64(consumed, 4);
    CHECK(hits[3].event == 2 && hits[3].rule == 1);
    ph_matcher_free(m);
}

/* Random tables x random events against the reference; small value pools so equalities
 * hit, enough rules per type that the index kicks in. */
static void test_random_differential(void)
{
    enum { MAXR = 300, MAXC = 900, NEV = 200 };
    static struct ph_rule rules[MAXR];
    static struct ph_cond conds[MAXC];
    static struct ph_event evs[NEV];
    static struct ph_hit hits[NEV * MAXR], want[NEV * MAXR];
    static const double pool[] = {0.0, -0.0, 1.0, 2.0, 2.5, -3.0, NAN, INFINITY};
    unsigned long long rng = 42;
    uint32_t indexed_types = 0;
    for (int round = 0; round < 300; round++) {
        uint32_t nr = 1 + (uint32_t)(test_rand(&rng) % MAXR), nc = 0;
        for (uint32_t r = 0; r < nr; r++) {
            uint32_t k = (uint32_t)(test_rand(&rng) % 4);
            if (nc + k > MAXC)
                k = 0;
            rules[r] = (struct ph_rule){0, 1 + (uint32_t)(test_rand(&rng) % 3), nc, k};
            for (uint32_t j = 0; j < k; j++) {
                uint8_t f = (uint8_t)(test_rand(&rng) % 6);
                uint8_t op;
                uint32_t pick = (uint32_t)test_rand(&rng);
                if (f <= PH_F_KEY1) {
                    static const uint8_t ops[] = {PH_OP_KEY_EQ, PH_OP_KEY_EQ, PH_OP_KEY_NE, PH_OP_PRESENT};
                    op = ops[pick % 4];
                } else if (f == PH_F_CODE) {
                    op = (uint8_t)(1 + pick % 9);
                    if (pick % 10 == 9)
                        op = PH_OP_PRESENT;
                } else {
                    op = (uint8_t)(1 + pick % 7);
                    if (pick % 5 == 0)
                        op = PH_OP_EQ;
                }
                conds[nc++] = cond(f, op, (uint32_t)(test_rand(&rng) % 6),
                                   pool[test_rand(&rng) % 8], pool[test_rand(&rng) % 8]);
            }
        }
        /* unique ids in scrambled order (7919 is a unit modulo the prime 1000003) */
        for (uint32_t r = 0; r < nr; r++)
            rules[r].id = (r * 7919u) % 1000003u;
        struct ph_matcher *m = ph_matcher_new(rules, nr, conds, nc);
        CHECK(m != NULL);
        for (uint32_t t = 1; t <= 3; t++)
            indexed_types += ph_matcher_index_field(m, t, NULL) != PH_MATCH_NO_INDEX;
        for (uint32_t i = 0; i < NEV; i++) {
            uint16_t present = 0;
            for (unsigned f = 0; f < 6; f++) {
                uint32_t s = (uint32_t)(test_rand(&rng) % 8);
                present |= (uint16_t)(s < 5 ? BIT(f) : s == 5 ? OPQ(f) : s == 6 ? BIT(f) | OPQ(f) : 0);
            }
            evs[i] = ev_of(1 + (uint32_t)(test_rand(&rng) % 4), present);
            evs[i].key[0] = (uint32_t)(test_rand(&rng) % 6);
            evs[i].key[1] = (uint32_t)(test_rand(&rng) % 6);
            evs[i].code = (uint32_t)(test_rand(&rng) % 6);
            for (int j = 0; j < 3; j++)
                evs[i].num[j] = pool[test_rand(&rng) % 8];
        }
        uint32_t consumed;
        uint32_t n = ph_match_batch(m, evs, NEV, hits, NEV * MAXR, &consumed);
        uint32_t nw = ref_match(rules, nr, conds, evs, NEV, want);
        CHECK_EQ_U64(consumed, NEV);
        CHECK_EQ_U64(n, nw);
        CHECK(memcmp(hits, want, n * sizeof hits[0]) == 0);
        /* and a cut somewhere: the written hits are the reference's prefix for whole events */
        uint32_t cut = n ? (uint32_t)(test_rand(&rng) % n) : 0;
        n = ph_match_batch(m, evs, NEV, hits, cut, &consumed);
        CHECK(n <= cut);
        CHECK(memcmp(hits, want, n * sizeof hits[0]) == 0);
        uint32_t through = 0;
        while (through < nw && want[through].event < consumed)
            through++;
        CHECK_EQ_U64(n, through);
        if (consumed < NEV) {
            uint32_t next = through;
            while (next < nw && want[next].event == consumed)
                next++;
            CHECK(next > cut); /* the next event's hits really did not fit */
            CHECK(want[through].event == consumed);
        }
        ph_matcher_free(m);
    }
    CHECK(indexed_types > 100); /* the index path was exercised */
}

int main(void)
{
    fprintf(stderr, "test_match\n");
    RUN(test_ops_native);
    RUN(test_opaque_and_absent);
    RUN(test_nan);
    RUN(test_validation);
    RUN(test_index_path);
    RUN(test_max_hits);
    RUN(test_random_differential);
    fprintf(stderr, "test_match: all passed\n");
    return 0;
}
