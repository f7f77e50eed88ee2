/*
 * probe_atomic64.c - does this compiler, with these flags, inline 64-bit atomics?
 *
 * Not part of pihub: a link probe. It uses the 64-bit atomic operations of the rings'
 * published/dropped counters (ph_ring.h). Where the target has 64-bit exclusive loads and
 * stores (x86-64, AArch64, ARMv6K and later: LDREXD/STREXD), gcc inlines them and this
 * links on its own; for plain ARMv6 (the baseline of 32-bit Raspberry Pi OS) gcc emits
 * calls to __atomic_load_8 and friends, and it links only with -latomic.
 *
 * Both builds decide from it, never from the machine they run on (a Pi 4 running 32-bit
 * Pi OS on a 64-bit kernel reports uname "aarch64"):
 *   native/build_native.py  native_libraries(): with the compiler that builds pihub._native
 *   native/Makefile         $(call libatomic,...): with each test build's compiler and flags
 */
#include <stdatomic.h>
#include <stdint.h>

static _Atomic uint64_t counter;

int main(void)
{
    atomic_fetch_add_explicit(&counter, 3, memory_order_relaxed);
    atomic_store_explicit(&counter, atomic_load_explicit(&counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return (int)atomic_load_explicit(&counter, memory_order_relaxed) - 4;
}
