/*
 * ph_match.c - the native matcher: rule tables compiled per event type (see ph_match.h),
 * matched over a popped batch without allocating.
 *
 * Condition semantics (ph_api.h): a field whose opaque bit is set passes any condition
 * (the Python stage decides it; the opaque bit wins if both bits are set); a field with
 * neither bit set fails every condition, PRESENT and the "not equal" ops included;
 * numbers compare as C doubles, so a NaN field fails every op except NE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ph_api.h"
#include "ph_match.h"

static int ph_cond_valid(const struct ph_cond *c)
{
    switch (c->field) {
    case PH_F_KEY0:
    case PH_F_KEY1:
        return c->op == PH_OP_KEY_EQ || c->op == PH_OP_KEY_NE || c->op == PH_OP_PRESENT;
    case PH_F_CODE:
        return (c->op >= PH_OP_EQ && c->op <= PH_OP_BITS_ANY) || c->op == PH_OP_PRESENT;
    case PH_F_NUM0:
    case PH_F_NUM1:
    case PH_F_NUM2:
        return (c->op >= PH_OP_EQ && c->op <= PH_OP_RANGE) || c->op == PH_OP_PRESENT;
    default:
        return 0;
    }
}

static inline int ph_cond_holds(const struct ph_cond *c, const struct ph_event *ev, unsigned present)
{
    unsigned f = c->field;
    if (present & (1u << PH_OPAQUE(f)))
        return 1;
    if (!(present & (1u << f)))
        return 0;
    switch (c->op) {
    case PH_OP_PRESENT:
        return 1;
    case PH_OP_KEY_EQ:
        return ev->key[f] == c->key;
    case PH_OP_KEY_NE:
        return ev->key[f] != c->key;
    case PH_OP_BITS_ALL:
        return (ev->code & c->key) == c->key;
    case PH_OP_BITS_ANY:
        return (ev->code & c->key) != 0;
    default:
        break;
    }
    double x = f == PH_F_CODE ? (double)ev->code : ev->num[f - PH_F_NUM0];
    switch (c->op) {
    case PH_OP_EQ:
        return x == c->a;
    case PH_OP_NE:
        return x != c->a;
    case PH_OP_LT:
        return x < c->a;
    case PH_OP_LE:
        return x <= c->a;
    case PH_OP_GT:
        return x > c->a;
    case PH_OP_GE:
        return x >= c->a;
    case PH_OP_RANGE:
        return c->a <= x && x <= c->b;
    default:
        return 0;
    }
}

/* No early exit: rules have few conditions, and a data-dependent branch per condition
 * costs more in mispredictions than evaluating the rest. */
static inline int ph_rule_holds(const struct ph_mrule *r, const struct ph_event *ev, unsigned present)
{
    int ok = 1;
    for (uint32_t j = 0; j < r->ncond; j++)
        ok &= ph_cond_holds(&r->cond[j], ev, present);
    return ok;
}

/* The hash key of a double: its bits, with -0.0 folded into +0.0 (they compare equal). */
static inline uint64_t ph_double_key(double x)
{
    uint64_t u;
    if (x == 0)
        x = 0.0;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Fibonacci hashing: one multiply spreads both small sequential key ids and double bits
 * (whose entropy sits in the high bits, folded down first). */
static inline uint32_t ph_hash64(uint64_t x)
{
    x ^= x >> 32;
    return (uint32_t)((x * 0x9E3779B97F4A7C15ULL) >> 32);
}

/* Whether c is an equality a hash bucket can stand for, and its key. */
static int ph_cond_indexable(const struct ph_cond *c, unsigned field, uint64_t *key)
{
    if (c->field != field)
        return 0;
    if (field <= PH_F_KEY1) {
        if (c->op != PH_OP_KEY_EQ)
            return 0;
        *key = c->key;
        return 1;
    }
    if (c->op != PH_OP_EQ || c->a != c->a)
        return 0;
    *key = ph_double_key(c->a);
    return 1;
}

static int ph_rule_index_key(const struct ph_mrule *r, unsigned field, uint64_t *key)
{
    for (uint32_t j = 0; j < r->ncond; j++)
        if (ph_cond_indexable(&r->cond[j], field, key))
            return 1;
    return 0;
}

static const struct ph_mbucket *ph_probe(const struct ph_mtype *t, uint64_t key)
{
    uint32_t i = ph_hash64(key) & t->bucket_mask;
    for (;;) {
        const struct ph_mbucket *b = &t->buckets[i];
        if (b->count == 0)
            return NULL;
        if (b->key == key)
            return b;
        i = (i + 1) & t->bucket_mask;
    }
}

struct ph_sortrule {
    uint32_t type;
    uint32_t id;
    uint32_t index; /* position in the caller's array */
};

static int ph_sortrule_cmp(const void *pa, const void *pb)
{
    const struct ph_sortrule *a = pa, *b = pb;
    if (a->type != b->type)
        return a->type < b->type ? -1 : 1;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return 0;
}

struct ph_keyrule {
    uint64_t key;
    uint32_t rule; /* index into ph_matcher.rules: ascending id within a type */
};

static int ph_keyrule_cmp(const void *pa, const void *pb)
{
    const struct ph_keyrule *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    if (a->rule != b->rule)
        return a->rule < b->rule ? -1 : 1;
    return 0;
}

/* Build the index (or the plain list) of one type whose rules are m->rules[first, first + n).
 * `lists` has room for 2 * n records; `scratch` for n key/rule pairs. Returns 0 or -1 (ENOMEM). */
static int ph_build_type(struct ph_matcher *m, struct ph_mtype *t, uint32_t first, uint32_t n,
                         struct ph_mrule *lists, struct ph_keyrule *scratch)
{
    struct ph_mrule *all = lists, *rest = lists + n;
    for (uint32_t k = 0; k < n; k++)
        all[k] = m->rules[first + k];
    t->all = all;
    t->nall = n;
    t->lin = all;
    t->nlin = n;
    t->ifield = PH_MATCH_NO_INDEX;

    uint32_t count[PH_NFIELDS] = {0};
    for (uint32_t k = 0; k < n; k++) {
        uint64_t key;
        for (unsigned f = 0; f < PH_NFIELDS; f++)
            if (ph_rule_index_key(&m->rules[first + k], f, &key))
                count[f]++;
    }
    unsigned best = 0;
    for (unsigned f = 1; f < PH_NFIELDS; f++)
        if (count[f] > count[best])
            best = f;
    if (count[best] < PH_MATCH_INDEX_MIN)
        return 0;

    uint32_t nkeyed = 0, nlin = 0;
    struct ph_mrule *lin = rest; /* the linear rules first, then (below) the bucket lists */
    for (uint32_t k = 0; k < n; k++) {
        uint64_t key;
        if (ph_rule_index_key(&m->rules[first + k], best, &key)) {
            scratch[nkeyed].key = key;
            scratch[nkeyed].rule = first + k;
            nkeyed++;
        } else {
            lin[nlin++] = m->rules[first + k];
        }
    }
    qsort(scratch, nkeyed, sizeof *scratch, ph_keyrule_cmp);
    uint32_t distinct = 0;
    for (uint32_t k = 0; k < nkeyed; k++)
        if (k == 0 || scratch[k].key != scratch[k - 1].key)
            distinct++;
    uint32_t size = 8;
    while (size < 2 * distinct)
        size <<= 1;
    struct ph_mbucket *buckets = calloc(size, sizeof *buckets);
    if (buckets == NULL)
        return -1;
    struct ph_mrule *blist = lin + nlin;
    for (uint32_t k = 0; k < nkeyed;) {
        uint32_t end = k;
        while (end < nkeyed && scratch[end].key == scratch[k].key)
            end++;
        uint32_t i = ph_hash64(scratch[k].key) & (size - 1);
        while (buckets[i].count != 0)
            i = (i + 1) & (size - 1);
        buckets[i].key = scratch[k].key;
        buckets[i].start = (uint32_t)(blist - m->lists);
        buckets[i].count = end - k;
        for (; k < end; k++)
            *blist++ = m->rules[scratch[k].rule];
    }
    t->lin = lin;
    t->nlin = nlin;
    t->buckets = buckets;
    t->bucket_mask = size - 1;
    t->ifield = (uint8_t)best;
    return 0;
}

void ph_matcher_free(struct ph_matcher *m)
{
    if (m == NULL)
        return;
    if (m->types != NULL)
        for (uint32_t t = 0; t < m->ntypes; t++)
            free(m->types[t].buckets);
    free(m->types);
    free(m->rules);
    free(m->conds);
    free(m->lists);
    free(m);
}

struct ph_matcher *ph_matcher_new(const struct ph_rule *rules, uint32_t nrules, const struct ph_cond *conds,
                                  uint32_t nconds)
{
    struct ph_matcher *m = NULL;
    struct ph_sortrule *order = NULL;
    struct ph_keyrule *scratch = NULL;
    if ((nrules && rules == NULL) || (nconds && conds == NULL))
        goto invalid;
    for (uint32_t c = 0; c < nconds; c++)
        if (!ph_cond_valid(&conds[c]))
            goto invalid;
    uint32_t maxtype = 0;
    for (uint32_t r = 0; r < nrules; r++) {
        if (rules[r].type == 0 || rules[r].type > PH_MATCH_MAX_TYPE)
            goto invalid;
        if ((uint64_t)rules[r].first_cond + rules[r].ncond > nconds)
            goto invalid;
        if (rules[r].type > maxtype)
            maxtype = rules[r].type;
    }

    m = calloc(1, sizeof *m);
    order = calloc(nrules ? nrules : 1, sizeof *order);
    scratch = calloc(nrules ? nrules : 1, sizeof *scratch);
    if (m == NULL || order == NULL || scratch == NULL)
        goto nomem;
    m->ntypes = maxtype + 1;
    m->types = calloc(m->ntypes, sizeof *m->types);
    m->rules = calloc(nrules ? nrules : 1, sizeof *m->rules);
    m->conds = calloc(nconds ? nconds : 1, sizeof *m->conds);
    m->lists = calloc(2 * (size_t)nrules + 1, sizeof *m->lists);
    if (m->types == NULL || m->rules == NULL || m->conds == NULL || m->lists == NULL)
        goto nomem;
    for (uint32_t t = 0; t < m->ntypes; t++)
        m->types[t].ifield = PH_MATCH_NO_INDEX; /* types no rule names: nothing to probe */
    if (nconds)
        memcpy(m->conds, conds, (size_t)nconds * sizeof *conds);

    for (uint32_t r = 0; r < nrules; r++) {
        order[r].type = rules[r].type;
        order[r].id = rules[r].id;
        order[r].index = r;
    }
    qsort(order, nrules, sizeof *order, ph_sortrule_cmp);
    for (uint32_t r = 0; r < nrules; r++) {
        if (r > 0 && order[r].type == order[r - 1].type && order[r].id == order[r - 1].id)
            goto invalid; /* ids must be unique within a type: hits would be ambiguous */
        const struct ph_rule *src = &rules[order[r].index];
        m->rules[r].id = src->id;
        m->rules[r].ncond = src->ncond;
        m->rules[r].cond = m->conds + src->first_cond;
    }
    for (uint32_t r = 0; r < nrules;) {
        uint32_t end = r;
        while (end < nrules && order[end].type == order[r].type)
            end++;
        if (ph_build_type(m, &m->types[order[r].type], r, end - r, m->lists + 2 * (size_t)r, scratch) != 0)
            goto nomem;
        r = end;
    }
    free(order);
    free(scratch);
    return m;

nomem:
    ph_matcher_free(m);
    free(order);
    free(scratch);
    errno = ENOMEM;
    return NULL;
invalid:
    ph_matcher_free(m);
    free(order);
    free(scratch);
    errno = EINVAL;
    return NULL;
}

/* Evaluate one candidate and keep its hit. The hit is written whether or not the rule
 * holds and kept by advancing nh by 0 or 1: no branch on the outcome while there is room;
 * when hits is full and the rule holds, the event does not fit and is rolled back. */
#define PH_TRY(cand)                                        \
    do {                                                    \
        const struct ph_mrule *r_ = (cand);                 \
        int ok_ = ph_rule_holds(r_, ev, present);           \
        if (nh < max_hits) {                                \
            hits[nh].event = i;                             \
            hits[nh].rule = r_->id;                         \
            nh += (uint32_t)ok_;                            \
        } else if (ok_) {                                   \
            nh = mark;                                      \
            goto out;                                       \
        }                                                   \
    } while (0)

uint32_t ph_match_batch(const struct ph_matcher *m, const struct ph_event *events, uint32_t nev,
                        struct ph_hit *hits, uint32_t max_hits, uint32_t *consumed)
{
    uint32_t nh = 0, i;
    for (i = 0; i < nev; i++) {
        const struct ph_event *ev = &events[i];
        if (ev->type == 0 || ev->type >= m->ntypes)
            continue;
        const struct ph_mtype *t = &m->types[ev->type];
        unsigned present = ev->present;
        const struct ph_mrule *a = t->lin, *b = NULL;
        uint32_t na = t->nlin, nb = 0;
        if (t->ifield != PH_MATCH_NO_INDEX) {
            unsigned f = t->ifield;
            if (present & (1u << PH_OPAQUE(f))) {
                a = t->all;
                na = t->nall;
            } else if (present & (1u << f)) {
                uint64_t key = 0;
                int probe = 1;
                if (f <= PH_F_KEY1) {
                    key = ev->key[f];
                } else {
                    double x = f == PH_F_CODE ? (double)ev->code : ev->num[f - PH_F_NUM0];
                    if (x != x)
                        probe = 0;
                    else
                        key = ph_double_key(x);
                }
                const struct ph_mbucket *bk = probe ? ph_probe(t, key) : NULL;
                if (bk != NULL) {
                    b = m->lists + bk->start;
                    nb = bk->count;
                }
            }
        }
        uint32_t mark = nh, ia = 0, ib = 0;
        if (nb == 0) {
            for (; ia < na; ia++)
                PH_TRY(&a[ia]);
        } else if (na == 0) {
            for (; ib < nb; ib++)
                PH_TRY(&b[ib]);
        } else {
            while (ia < na || ib < nb) {
                if (ib == nb || (ia < na && a[ia].id < b[ib].id))
                    PH_TRY(&a[ia++]);
                else
                    PH_TRY(&b[ib++]);
            }
        }
    }
out:
    if (consumed != NULL)
        *consumed = i;
    return nh;
}

uint8_t ph_matcher_index_field(const struct ph_matcher *m, uint32_t type, uint32_t *indexed)
{
    if (type == 0 || type >= m->ntypes || m->types[type].nall == 0) {
        if (indexed != NULL)
            *indexed = 0;
        return PH_MATCH_NO_INDEX;
    }
    const struct ph_mtype *t = &m->types[type];
    if (indexed != NULL)
        *indexed = t->nall - t->nlin;
    return t->ifield;
}
