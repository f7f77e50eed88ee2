/*
 * check.h - the assertion and thread helpers shared by the native tests.
 *
 * CHECK stops the test binary with the failing expression and its location; sanitizer
 * builds (make check-asan / check-tsan) add their own reports on top.
 */
#ifndef PH_TEST_CHECK_H
#define PH_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(expr)                                                                       \
    do {                                                                                  \
        if (!(expr)) {                                                                    \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, __func__, \
                    #expr);                                                               \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                         \
    do {                                                                                           \
        unsigned long long check_a_ = (unsigned long long)(a), check_b_ = (unsigned long long)(b); \
        if (check_a_ != check_b_) {                                                                \
            fprintf(stderr, "%s:%d: %s: %s == %s failed: %llu != %llu\n", __FILE__, __LINE__,     \
                    __func__, #a, #b, check_a_, check_b_);                                         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define RUN(test)                              \
    do {                                       \
        fprintf(stderr, "  %s ... ", #test);   \
        test();                                \
        fprintf(stderr, "ok\n");               \
    } while (0)

/* xorshift64*: deterministic pseudo-random numbers for the tests. */
static inline unsigned long long test_rand(unsigned long long *state)
{
    unsigned long long x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
