/* The crossbar protocol core (docs/protocol.md, version 4): serial frames in, replies out.
 *
 * No heap: every buffer is static and sized from xbar_config.h. Not reentrant: one core per
 * device, driven from one loop (or one UART interrupt's deferred handler). */
#ifndef XBAR_PROTO_H
#define XBAR_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "xbar_config.h"

#define XBAR_PROTOCOL_VERSION 4u

typedef struct {
    double v_min, v_max, width_min, width_max;
    uint32_t max_pulses;
    double compliance;
} xbar_limits;

typedef struct {
    uint32_t rows, cols;       /* <= XBAR_MAX_ROWS, XBAR_MAX_COLS */
    uint32_t max_message;      /* reported; 256 <= max_message <= XBAR_MAX_MESSAGE */
    uint32_t max_cells;        /* reported; 1 <= max_cells <= XBAR_MAX_CELLS */
    xbar_limits hardware;      /* the board's own limits */
    const char *identity;      /* maker,model,serial,firmware */
    uint32_t lease_ms;         /* a claim ends after this long without a command from its
                                  holder (docs/protocol.md 5.1); 0: never */
} xbar_device;

/* Start (or restart) the core; returns 0, or -1 if the device exceeds the build's bounds. */
int xbar_init(const xbar_device *device);

/* Bytes received at `now_ms`: complete frames are answered through hal_serial_write. */
void xbar_rx_bytes(const uint8_t *data, size_t size, uint32_t now_ms);

/* Call when the input is idle (nothing more to read for now): sends the FRAME reply for any
 * discarded bytes, and drops a partial frame idle for XBAR_FRAME_IDLE_MS (then hunts on). */
void xbar_rx_idle(uint32_t now_ms);

/* Milliseconds until a held partial frame expires; -1 if none is held. */
int32_t xbar_rx_ms_to_expiry(uint32_t now_ms);

/* Answer one request message (no framing) into `reply` (capacity >= XBAR_MAX_MESSAGE);
 * returns the reply's length. Exposed for tests and fuzzing. */
size_t xbar_handle(const uint8_t *message, size_t size, uint8_t *reply);

/* The host vanished (serial hang-up, DTR low): outputs safe and its claim released
 * (docs/protocol.md 5.1; the host may come back, claim again and resend). */
void xbar_host_gone(void);

/* Static RAM the core and its buffers use, in bytes (for the porting notes). */
size_t xbar_core_ram(void);

#endif
