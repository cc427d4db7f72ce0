/* Compile-time bounds of a crossbar board: every buffer of the protocol core is sized here.
 *
 * A board sets these with -D (or edits the defaults). The bounds the device REPORTS at
 * IDENTIFY (max_message, max_cells) may be smaller than these at run time, never larger. */
#ifndef XBAR_CONFIG_H
#define XBAR_CONFIG_H

/* The largest crossbar the build supports (the power-law model keeps one double per cell). */
#ifndef XBAR_MAX_ROWS
#define XBAR_MAX_ROWS 32
#endif
#ifndef XBAR_MAX_COLS
#define XBAR_MAX_COLS 32
#endif
/* Largest message (request or reply, without the 14 bytes of framing). >= 256. */
#ifndef XBAR_MAX_MESSAGE
#define XBAR_MAX_MESSAGE 4096
#endif
/* Most cells one command may name. */
#ifndef XBAR_MAX_CELLS
#define XBAR_MAX_CELLS 1024
#endif
/* Sequenced commands remembered for retries (each keeps its reply: XBAR_MAX_MESSAGE bytes). */
#ifndef XBAR_WINDOW
#define XBAR_WINDOW 2
#endif
/* Error queue depth and the text kept per entry. */
#ifndef XBAR_ERROR_QUEUE
#define XBAR_ERROR_QUEUE 32
#endif
#ifndef XBAR_ERROR_TEXT
#define XBAR_ERROR_TEXT 64
#endif
/* Receive idle timeout (docs/protocol.md 3.1): a partial frame is dropped after this. */
#ifndef XBAR_FRAME_IDLE_MS
#define XBAR_FRAME_IDLE_MS 200
#endif

#define XBAR_FRAME_OVERHEAD 14u /* sync 2 + length 4 + header CRC 4 + CRC 4 */

#if XBAR_MAX_MESSAGE < 256
#error "XBAR_MAX_MESSAGE must be at least 256 (protocol MIN_MESSAGE)"
#endif
#if XBAR_MAX_CELLS < 1
#error "XBAR_MAX_CELLS must be at least 1"
#endif
#if XBAR_WINDOW < 1
#error "XBAR_WINDOW must be at least 1"
#endif

#endif
