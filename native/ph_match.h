/*
 * ph_match.h - the compiled rule table behind ph_matcher_new / ph_match_batch
 * (internal: Python sees only the prototypes in ph_api.h).
 *
 * Rules are grouped by event type (an array indexed by type id). Within a type:
 *
 *   index   the field most of the type's rules test for equality (KEY_EQ on a key field,
 *           EQ with a non-NaN constant on code/num) is the type's index field. Every rule
 *           with such a condition sits in an open-addressing hash bucket keyed by the
 *           condition's constant (the key id, or the bits of the double with -0 folded
 *           into +0), each bucket's rules in ascending id.
 *   linear  the type's other rules, in ascending id.
 *   all     every rule of the type, in ascending id.
 *
 * One event: when its index field is native, probe the bucket of its value and merge that
 * list with the linear one (both ascending, ids unique within a type) evaluating every
 * condition of each candidate; when the index field is opaque, every indexed condition
 * passes, so scan `all`; when it is absent, every indexed rule fails, so scan `linear`.
 * A type with fewer than PH_MATCH_INDEX_MIN indexable rules gets no index.
 */
#ifndef PH_MATCH_H
#define PH_MATCH_H

#include <stdint.h>

#include "ph_api.h"

/* Largest event type id a rule may name (the per-type array is this big at most). */
#define PH_MATCH_MAX_TYPE 65535u
/* Fewest indexable rules for which a type gets a hash index: below it a scan is cheaper. */
#define PH_MATCH_INDEX_MIN 4u
#define PH_MATCH_NO_INDEX 0xFFu

struct ph_mrule {
    uint32_t id;
    uint32_t ncond;
    const struct ph_cond *cond; /* into ph_matcher.conds */
};

struct ph_mbucket {
    uint64_t key;
    uint32_t start; /* into ph_matcher.lists */
    uint32_t count; /* 0 = empty bucket */
};

/* The lists hold copies of the rule records, not indices: the merge reads ids and
 * conditions without a second indirection. */
struct ph_mtype {
    const struct ph_mrule *all; /* ascending id */
    const struct ph_mrule *lin;
    uint32_t nall;
    uint32_t nlin;
    struct ph_mbucket *buckets;
    uint32_t bucket_mask;
    uint8_t ifield; /* PH_F_* or PH_MATCH_NO_INDEX */
};

struct ph_matcher {
    uint32_t ntypes; /* types[0..ntypes), types[0] unused */
    struct ph_mtype *types;
    struct ph_mrule *rules; /* sorted by (type, id) */
    struct ph_cond *conds;
    struct ph_mrule *lists;
};

/* For tests: the index field of a type (PH_MATCH_NO_INDEX when none, or when the type has
 * no rules) and, through *indexed, how many of its rules sit in the hash. */
uint8_t ph_matcher_index_field(const struct ph_matcher *m, uint32_t type, uint32_t *indexed);

#endif
