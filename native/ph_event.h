/*
 * ph_event.h - the fixed-size event slot carried by the ring and read by the matcher.
 *
 * One slot is 64 bytes (one cache line on x86-64 and on the Cortex-A53/A72/A76 of the
 * Raspberry Pi family), plain old data, no pointers: a slot can be copied with memcpy,
 * written by C producer threads and read by Python through a memoryview.
 *
 *   offset  size  field
 *        0     8  ts_ns     CLOCK_MONOTONIC nanoseconds when the edge happened
 *        8     4  type      event type id (pihub.events catalogue order, 1-based; 0 = invalid)
 *       12     2  source    producer id, stamped by the bus on push (callers leave it 0)
 *       14     2  present   field presence bits, see PH_F_* / PH_OPAQUE()
 *       16     8  key[2]    interned value ids (strings, ints, ... equal in Python == equal id)
 *       24     4  ref       handle of the Python-side payload (0 = none: decode from the slot)
 *       28     4  code      a small unsigned integer field (status byte, bit set, ...)
 *       32    24  num[3]    numeric fields (IEEE double)
 *       56     8  payload   small inline payload (e.g. the 3 bytes of a MIDI message)
 *
 * Which named event attribute lives in which field is decided per event type by the
 * catalogue (pihub/events.py), never here.
 *
 * Presence: bit PH_F_x set = field x carries the attribute's value natively.
 * Bit PH_OPAQUE(PH_F_x) set = the attribute exists but its value cannot be represented
 * in the field (a string where a number is expected, a huge int, ...): the matcher
 * treats any condition on such a field as "undecided here" and lets the rule through
 * for the Python stage to decide. Neither bit set = the attribute is absent, and any
 * condition on it fails (Platypush: every condition key must be present).
 */
#ifndef PH_EVENT_H
#define PH_EVENT_H

#include <stdint.h>

/* Bumped whenever a struct layout or a function signature in native/ changes.
 * pihub/bus.py refuses to import an extension built with another value. */
#define PH_ABI_VERSION 1

/* Field indices, used by presence bits and by matcher conditions. */
#define PH_F_KEY0 0
#define PH_F_KEY1 1
#define PH_F_CODE 2
#define PH_F_NUM0 3
#define PH_F_NUM1 4
#define PH_F_NUM2 5
#define PH_NFIELDS 6
#define PH_OPAQUE(f) (8 + (f))

struct ph_event {
    uint64_t ts_ns;
    uint32_t type;
    uint16_t source;
    uint16_t present;
    uint32_t key[2];
    uint32_t ref;
    uint32_t code;
    double num[3];
    uint8_t payload[8];
};

#endif
