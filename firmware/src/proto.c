/* The crossbar protocol core, version 2 (docs/protocol.md). Portable C11, no heap.
 *
 * Layout: little-endian helpers and CRC32; the error queue; replies; the sequence window and
 * the session claim; one function per command; the frame receiver (hunt, idle timeout). */
#include "xbar_proto.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "xbar_hal.h"

_Static_assert(sizeof(double) == 8, "the wire's f64 needs an IEEE 754 binary64 double");

enum { OP_IDENTIFY = 1, OP_RESET, OP_CONFIGURE, OP_APPLY, OP_READ, OP_READ_REGION,
       OP_READ_ALL, OP_ERROR, OP_SAFE, OP_CLAIM };
enum { ST_OK = 0, ST_FRAME, ST_MALFORMED, ST_UNKNOWN, ST_OUT_OF_RANGE, ST_SAFETY,
       ST_SEQUENCE, ST_DEVICE, ST_TOO_LARGE, ST_BUSY };

#define REQ_HEADER 9u   /* seq u32 | op u8 | session u32 */
#define REP_HEADER 10u  /* seq u32 | op u8 | status u8 | session u32 */
#define LIMITS_SIZE 44u
#define RX_CAP (XBAR_MAX_MESSAGE + XBAR_FRAME_OVERHEAD)

/* ------------------------------------------------------------------ little-endian, CRC32 */
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static double rdf64(const uint8_t *p) {
    uint64_t bits = (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}
static void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wrf64(uint8_t *p, double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    wr32(p, (uint32_t)bits);
    wr32(p + 4, (uint32_t)(bits >> 32));
}

static uint32_t crc32(const uint8_t *data, size_t size) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ------------------------------------------------------------------ state */
typedef struct {
    bool used;
    uint32_t seq, digest, length; /* digest: CRC32 of the request message, and its length */
    uint32_t reply_length;
    uint8_t reply[XBAR_MAX_MESSAGE];
} window_slot;

typedef struct {
    int16_t code;
    char text[XBAR_ERROR_TEXT];
} error_entry;

static struct {
    xbar_device dev;
    xbar_limits limits; /* in force */
    uint32_t last_seq;
    uint32_t owner, owner_since, owner_seen;
    /* the split batch in progress (last executed part with flag 0x40, entries so far), and the
     * one whose claim ended before its last part (reported until an APPLY/CONFIGURE executes) */
    uint32_t batch_session, batch_seq, batch_entries;
    uint32_t lost_session, lost_seq, lost_entries;
    bool outputs_safe;
    window_slot window[XBAR_WINDOW];
    unsigned window_next;
    error_entry errors[XBAR_ERROR_QUEUE];
    unsigned error_head, error_count;
} S;

static uint8_t rx[RX_CAP];
static size_t rx_head, rx_len;
static uint32_t rx_last_ms, rx_dropped;
static uint8_t tx[XBAR_MAX_MESSAGE + XBAR_FRAME_OVERHEAD];

/* ------------------------------------------------------------------ errors and replies */
static const int16_t scpi_code[] = {0, -310, -104, -113, -222, -221, -200, -200, -223, -240};

static void queue_error(int16_t code, const char *text) {
    if (S.error_count >= XBAR_ERROR_QUEUE) { /* the last entry becomes the overflow marker */
        error_entry *last = &S.errors[(S.error_head + S.error_count - 1) % XBAR_ERROR_QUEUE];
        last->code = -350;
        snprintf(last->text, sizeof last->text, "Queue overflow");
        return;
    }
    error_entry *e = &S.errors[(S.error_head + S.error_count) % XBAR_ERROR_QUEUE];
    e->code = code;
    snprintf(e->text, sizeof e->text, "%s", text);
    S.error_count++;
}

static size_t put_text(uint8_t *out, size_t room, const char *text) {
    size_t n = strlen(text);
    if (n > 1024) n = 1024;
    if (n + 2 > room) n = room >= 2 ? room - 2 : 0;
    while (n > 0 && ((uint8_t)text[n] & 0xC0) == 0x80) n--; /* cut on a UTF-8 boundary */
    wr16(out, (uint16_t)n);
    memcpy(out + 2, text, n);
    return n + 2;
}

static size_t header(uint8_t *reply, uint32_t seq, uint8_t op, uint8_t status, uint32_t session) {
    wr32(reply, seq);
    reply[4] = op;
    reply[5] = status;
    wr32(reply + 6, session);
    return REP_HEADER;
}

static size_t fail(uint8_t *reply, uint32_t seq, uint8_t op, uint32_t session, uint8_t status,
                   const char *text) {
    queue_error(scpi_code[status], text);
    size_t n = header(reply, seq, op, status, session);
    return n + put_text(reply + n, S.dev.max_message - n, text);
}

/* ------------------------------------------------------------------ info */
static size_t put_limits(uint8_t *p, const xbar_limits *l) {
    wrf64(p, l->v_min); wrf64(p + 8, l->v_max); wrf64(p + 16, l->width_min);
    wrf64(p + 24, l->width_max); wr32(p + 32, l->max_pulses); wrf64(p + 36, l->compliance);
    return LIMITS_SIZE;
}

static size_t put_info(uint8_t *body, size_t room) {
    size_t n = 0;
    wr16(body, XBAR_PROTOCOL_VERSION); n += 2;
    wr32(body + n, S.dev.rows); n += 4;
    wr32(body + n, S.dev.cols); n += 4;
    wr32(body + n, S.last_seq); n += 4;
    n += put_limits(body + n, &S.limits);
    n += put_limits(body + n, &S.dev.hardware);
    wr32(body + n, S.dev.max_message); n += 4;
    wr32(body + n, S.dev.max_cells); n += 4;
    wr16(body + n, XBAR_WINDOW); n += 2;
    wr32(body + n, S.owner); n += 4;
    wr32(body + n, S.lost_session); n += 4;
    wr32(body + n, S.lost_seq); n += 4;
    wr32(body + n, S.lost_entries); n += 4;
    return n + put_text(body + n, room - n, S.dev.identity);
}

static bool limits_valid(const xbar_limits *l) {
    return isfinite(l->v_min) && isfinite(l->v_max) && l->v_min < l->v_max &&
           l->width_min > 0 && l->width_min <= l->width_max && isfinite(l->width_max) &&
           l->max_pulses >= 1 && l->max_pulses <= 0x7FFFFFFFu && l->compliance > 0 &&
           isfinite(l->compliance);
}

/* ------------------------------------------------------------------ commands */
typedef struct {
    uint32_t seq, session;
    uint8_t op;
    const uint8_t *body;
    size_t size;
    uint8_t *reply;
} request;

#define FAIL(status, ...)                                                          \
    do {                                                                           \
        char text_[256];                                                           \
        snprintf(text_, sizeof text_, __VA_ARGS__);                                \
        return fail(r->reply, r->seq, r->op, r->session, (status), text_);         \
    } while (0)

static size_t ok(const request *r, size_t body_size) {
    return header(r->reply, r->seq, r->op, ST_OK, r->session) + body_size;
}

static size_t check_reply_size(const request *r, uint64_t cells) {
    if (REP_HEADER + 8u * cells > S.dev.max_message)
        FAIL(ST_TOO_LARGE, "a reply of %lu resistances exceeds this device's message bound of %lu "
             "bytes", (unsigned long)cells, (unsigned long)S.dev.max_message);
    return 0;
}

static void say_safe(void) {
    hal_outputs_safe();
    S.outputs_safe = true;
    hal_log("outputs safe");
}

/* The claim ends (expired, link closed, released, taken over): a split batch its host did not
 * finish becomes the interrupted one (docs/protocol.md 5.2). */
static void end_claim(void) {
    if (S.batch_session) {
        hal_log("split batch interrupted: its host's claim ended before its last part");
        S.lost_session = S.batch_session;
        S.lost_seq = S.batch_seq;
        S.lost_entries = S.batch_entries;
        S.batch_session = 0;
    }
    S.owner = 0;
}

/* An executed APPLY: follow the split batch in progress (flag 0x40 on all parts but the last).
 * A part continues the recorded batch (in progress, or interrupted and now resumed by its own
 * host) when it has the same session and the next sequence number. */
static void follow_batch(const request *r) {
    uint32_t session = S.batch_session, seq = S.batch_seq, entries = S.batch_entries;
    if (!session) {
        session = S.lost_session;
        seq = S.lost_seq;
        entries = S.lost_entries;
    }
    S.batch_session = 0;
    if (!(r->body[0] & 0x40)) return;
    if (!(session == r->session && r->seq - seq == 1u)) entries = 0;
    entries += rd32(r->body + 2);
    S.batch_session = r->session;
    S.batch_seq = r->seq;
    S.batch_entries = entries;
}

static size_t read_cell(const request *r, uint32_t cell, uint8_t *out) {
    double ohm = 0;
    if (hal_select(cell / S.dev.cols, cell % S.dev.cols) != 0 || hal_read(&ohm) != 0)
        FAIL(ST_DEVICE, "reading cell %lu failed", (unsigned long)cell);
    wrf64(out, ohm);
    return 0;
}

/* An APPLY body, checked (layout, then addresses, then limits) before any pulse. */
typedef struct {
    uint8_t flags, psize;
    uint32_t count, first, span;
    uint64_t nbytes;
    const uint8_t *cells, *pulses, *volts, *widths;
} batch;

static uint32_t pulses_at(const batch *b, uint32_t i) {
    const uint8_t *p = b->pulses + (b->flags & 0x04 ? (size_t)i * b->psize : 0);
    return b->psize == 1 ? p[0] : b->psize == 2 ? rd16(p) : rd32(p);
}
static double volts_at(const batch *b, uint32_t i) {
    return rdf64(b->volts + (b->flags & 0x08 ? (size_t)i * 8 : 0));
}
static double width_at(const batch *b, uint32_t i) {
    return rdf64(b->widths + (b->flags & 0x10 ? (size_t)i * 8 : 0));
}

/* Entry i's cell: for a bitmap, `*bit` walks the set bits (entries are visited in order). */
static uint32_t cell_at(const batch *b, uint32_t i, uint32_t *bit) {
    if (!(b->flags & 0x02)) return rd32(b->cells + (size_t)i * 4);
    while (!(b->cells[*bit / 8] >> (*bit % 8) & 1u)) ++*bit;
    return b->first + (*bit)++;
}

static size_t cmd_apply(const request *r) {
    const uint8_t *p = r->body;
    size_t size = r->size, off = 6;
    batch b = {0};
    if (size < 6) FAIL(ST_MALFORMED, "message truncated in its batch header");
    b.flags = p[0];
    b.psize = p[1];
    b.count = rd32(p + 2);
    if (b.flags & ~0x7Fu) FAIL(ST_MALFORMED, "unknown batch flags 0x%02x", b.flags);
    /* 0x20 (native read-back): this device's readings are binary64, so it changes nothing */
    if ((b.flags & 0x20) && !(b.flags & 0x01))
        FAIL(ST_MALFORMED, "batch flag 0x20 (native read-back) needs flag 0x01 (read back)");
    if ((b.flags & 0x40) && (b.flags & 0x01))
        FAIL(ST_MALFORMED, "batch flag 0x40 (more parts follow) excludes flag 0x01 (read back)");
    if (b.psize != 1 && b.psize != 2 && b.psize != 4)
        FAIL(ST_MALFORMED, "pulse count size must be 1, 2 or 4 bytes, got %u", b.psize);
    if (b.count > S.dev.max_cells)
        FAIL(ST_TOO_LARGE, "count %lu exceeds the bound of %lu cells per command",
             (unsigned long)b.count, (unsigned long)S.dev.max_cells);
    uint64_t n = b.count;
    if (b.flags & 0x02) {
        if (size < off + 8) FAIL(ST_MALFORMED, "message truncated in its bitmap window");
        b.first = rd32(p + off);
        b.span = rd32(p + off + 4);
        off += 8;
        if (b.span == 0) FAIL(ST_MALFORMED, "bitmap span must be at least 1");
        b.nbytes = ((uint64_t)b.span + 7) / 8;
        if (b.nbytes > size - off) FAIL(ST_MALFORMED, "message truncated in its bitmap");
        b.cells = p + off;
        off += (size_t)b.nbytes;
    } else {
        if (4 * n > size - off) FAIL(ST_MALFORMED, "message truncated in its cell list");
        b.cells = p + off;
        off += (size_t)(4 * n);
    }
    uint64_t np = b.flags & 0x04 ? n : 1, nv = b.flags & 0x08 ? n : 1, nw = b.flags & 0x10 ? n : 1;
    if (np * b.psize > size - off) FAIL(ST_MALFORMED, "message truncated in its pulse counts");
    b.pulses = p + off;
    off += (size_t)(np * b.psize);
    if (8 * nv > size - off) FAIL(ST_MALFORMED, "message truncated in its voltages");
    b.volts = p + off;
    off += (size_t)(8 * nv);
    if (8 * nw > size - off) FAIL(ST_MALFORMED, "message truncated in its widths");
    b.widths = p + off;
    off += (size_t)(8 * nw);
    if (off != size) FAIL(ST_MALFORMED, "APPLY body has %lu bytes after its last field",
                          (unsigned long)(size - off));
    uint64_t total = (uint64_t)S.dev.rows * S.dev.cols;
    if (b.flags & 0x02) {
        uint32_t tail = b.span % 8;
        if (tail && b.cells[b.span / 8] >> tail) FAIL(ST_MALFORMED, "bitmap padding bits (beyond "
                                                      "the span) must be 0");
        uint64_t set = 0;
        for (uint64_t i = 0; i < b.nbytes; i++)
            for (uint8_t v = b.cells[i]; v; v &= (uint8_t)(v - 1)) set++;
        if (set != n) FAIL(ST_MALFORMED, "bitmap has %lu cells set but the header says %lu",
                           (unsigned long)set, (unsigned long)n);
        if ((uint64_t)b.first + b.span > total)
            FAIL(ST_OUT_OF_RANGE, "bitmap window %lu+%lu is outside the %lux%lu crossbar",
                 (unsigned long)b.first, (unsigned long)b.span, (unsigned long)S.dev.rows,
                 (unsigned long)S.dev.cols);
    } else {
        for (uint32_t i = 0; i < b.count; i++) {
            uint32_t cell = rd32(b.cells + (size_t)i * 4);
            if (cell >= total) FAIL(ST_OUT_OF_RANGE, "cell index %lu is outside the %lux%lu "
                                    "crossbar", (unsigned long)cell, (unsigned long)S.dev.rows,
                                    (unsigned long)S.dev.cols);
        }
    }
    if (b.flags & 0x01) {
        size_t failed = check_reply_size(r, n);
        if (failed) return failed;
    }
    const xbar_limits *l = &S.limits;
    for (uint32_t i = 0; i < b.count; i++) {
        double v = volts_at(&b, i), w = width_at(&b, i);
        uint32_t k = pulses_at(&b, i);
        if (!(v >= l->v_min && v <= l->v_max) || v == 0)
            FAIL(ST_SAFETY, "voltage of entry %lu is 0 or outside [v_min, v_max]", (unsigned long)i);
        if (!(w >= l->width_min && w <= l->width_max))
            FAIL(ST_SAFETY, "width of entry %lu is outside [width_min, width_max]", (unsigned long)i);
        if (k > l->max_pulses)
            FAIL(ST_SAFETY, "%lu pulses on one cell exceed the limit of %lu per entry",
                 (unsigned long)k, (unsigned long)l->max_pulses);
        const char *why = "refused";
        if (hal_check_pulse(v, w, &why) != 0) FAIL(ST_DEVICE, "%s", why);
    }
    S.outputs_safe = false;
    uint32_t bit = 0;
    for (uint32_t i = 0; i < b.count; i++) {
        uint32_t cell = cell_at(&b, i, &bit);
        if (hal_select(cell / S.dev.cols, cell % S.dev.cols) != 0 ||
            hal_pulse(pulses_at(&b, i), volts_at(&b, i), width_at(&b, i)) != 0) {
            say_safe();
            FAIL(ST_DEVICE, "pulsing cell %lu failed after %lu entries", (unsigned long)cell,
                 (unsigned long)i);
        }
    }
    if (!(b.flags & 0x01)) return ok(r, 0);
    bit = 0;
    for (uint32_t i = 0; i < b.count; i++) {
        size_t failed = read_cell(r, cell_at(&b, i, &bit), r->reply + REP_HEADER + (size_t)i * 8);
        if (failed) return failed;
    }
    return ok(r, (size_t)n * 8);
}

static size_t cmd_read(const request *r) {
    if (r->size < 4) FAIL(ST_MALFORMED, "message truncated in its cell count");
    uint32_t count = rd32(r->body);
    if (count > S.dev.max_cells) FAIL(ST_TOO_LARGE, "count %lu exceeds the bound of %lu cells per "
                                      "command", (unsigned long)count,
                                      (unsigned long)S.dev.max_cells);
    if (r->size != 4 + (size_t)count * 4)
        FAIL(ST_MALFORMED, "READ names %lu cells but carries %lu bytes", (unsigned long)count,
             (unsigned long)(r->size - 4));
    size_t failed = check_reply_size(r, count);
    if (failed) return failed;
    uint64_t total = (uint64_t)S.dev.rows * S.dev.cols;
    for (uint32_t i = 0; i < count; i++)
        if (rd32(r->body + 4 + (size_t)i * 4) >= total)
            FAIL(ST_OUT_OF_RANGE, "cell index %lu is outside the %lux%lu crossbar",
                 (unsigned long)rd32(r->body + 4 + (size_t)i * 4), (unsigned long)S.dev.rows,
                 (unsigned long)S.dev.cols);
    for (uint32_t i = 0; i < count; i++) {
        failed = read_cell(r, rd32(r->body + 4 + (size_t)i * 4), r->reply + REP_HEADER + i * 8);
        if (failed) return failed;
    }
    return ok(r, (size_t)count * 8);
}

static size_t read_region(const request *r, uint32_t row, uint32_t col, uint32_t nrows,
                          uint32_t ncols) {
    uint64_t cells = (uint64_t)nrows * ncols;
    if (cells > S.dev.max_cells) FAIL(ST_TOO_LARGE, "region larger than the per-command bound");
    size_t failed = check_reply_size(r, cells);
    if (failed) return failed;
    if (cells == 0) {
        if (row > S.dev.rows || col > S.dev.cols)
            FAIL(ST_OUT_OF_RANGE, "empty region outside the crossbar");
        return ok(r, 0);
    }
    if ((uint64_t)row + nrows > S.dev.rows || (uint64_t)col + ncols > S.dev.cols)
        FAIL(ST_OUT_OF_RANGE, "region %lux%lu at (%lu, %lu) is outside the %lux%lu crossbar",
             (unsigned long)nrows, (unsigned long)ncols, (unsigned long)row, (unsigned long)col,
             (unsigned long)S.dev.rows, (unsigned long)S.dev.cols);
    size_t i = 0;
    for (uint32_t a = row; a < row + nrows; a++)
        for (uint32_t c = col; c < col + ncols; c++, i++) {
            failed = read_cell(r, a * S.dev.cols + c, r->reply + REP_HEADER + i * 8);
            if (failed) return failed;
        }
    return ok(r, i * 8);
}

static size_t cmd_configure(const request *r) {
    if (r->size != 8 + LIMITS_SIZE)
        FAIL(ST_MALFORMED, "CONFIGURE body must be %u bytes, got %lu", 8 + LIMITS_SIZE,
             (unsigned long)r->size);
    const uint8_t *p = r->body;
    xbar_limits l = {rdf64(p + 8), rdf64(p + 16), rdf64(p + 24), rdf64(p + 32), rd32(p + 40),
                     rdf64(p + 44)};
    if (!limits_valid(&l)) FAIL(ST_SAFETY, "invalid safety limits");
    if (rd32(p) != S.dev.rows || rd32(p + 4) != S.dev.cols)
        FAIL(ST_OUT_OF_RANGE, "this device is %lux%lu; it cannot be configured as %lux%lu",
             (unsigned long)S.dev.rows, (unsigned long)S.dev.cols, (unsigned long)rd32(p),
             (unsigned long)rd32(p + 4));
    const xbar_limits *hw = &S.dev.hardware;
    if (!(hw->v_min <= l.v_min && l.v_max <= hw->v_max && hw->width_min <= l.width_min &&
          l.width_max <= hw->width_max && l.max_pulses <= hw->max_pulses &&
          l.compliance <= hw->compliance))
        FAIL(ST_SAFETY, "requested limits are wider than the device's hardware limits");
    S.limits = l;
    hal_log("configured new limits");
    return ok(r, put_info(r->reply + REP_HEADER, S.dev.max_message - REP_HEADER));
}

static size_t busy(const request *r) {
    if (S.owner == 0) FAIL(ST_BUSY, "crossbar is not claimed by any host: send CLAIM first");
    uint32_t now = hal_millis(), since = now - S.owner_since, seen = now - S.owner_seen;
    FAIL(ST_BUSY, "crossbar is controlled by another host (session %08lx) since %lu.%lu s ago, "
         "last command %lu.%lu s ago; if that host has died, take over (takeover=True)",
         (unsigned long)S.owner, (unsigned long)(since / 1000), (unsigned long)(since % 1000 / 100),
         (unsigned long)(seen / 1000), (unsigned long)(seen % 1000 / 100));
}

static size_t cmd_claim(const request *r) {
    if (r->size != 1 || r->body[0] > 2)
        FAIL(ST_MALFORMED, "CLAIM takes one mode byte: 0 claim, 1 take over, 2 release");
    if (r->session == 0) FAIL(ST_MALFORMED, "CLAIM needs a non-zero session in the header");
    uint32_t now = hal_millis();
    if (r->body[0] == 2) {
        if (S.owner != r->session) return busy(r);
        end_claim();
        hal_log("released");
        return ok(r, put_info(r->reply + REP_HEADER, S.dev.max_message - REP_HEADER));
    }
    if (S.owner != 0 && S.owner != r->session && r->body[0] != 1) return busy(r);
    if (S.owner != r->session) {
        hal_log(S.owner ? "claimed (taken over)" : "claimed");
        end_claim();
        S.owner = r->session;
        S.owner_since = now;
    }
    S.owner_seen = now;
    return ok(r, put_info(r->reply + REP_HEADER, S.dev.max_message - REP_HEADER));
}

static size_t expect_empty(const request *r, const char *name) {
    if (r->size) FAIL(ST_MALFORMED, "%s takes no body, got %lu bytes", name, (unsigned long)r->size);
    return 0;
}

static size_t execute(const request *r) {
    size_t failed;
    switch (r->op) {
    case OP_APPLY: return cmd_apply(r);
    case OP_CONFIGURE: return cmd_configure(r);
    case OP_READ: return cmd_read(r);
    case OP_READ_REGION:
        if (r->size != 16) FAIL(ST_MALFORMED, "READ_REGION body must be 16 bytes, got %lu",
                                (unsigned long)r->size);
        return read_region(r, rd32(r->body), rd32(r->body + 4), rd32(r->body + 8),
                           rd32(r->body + 12));
    case OP_READ_ALL:
        if ((failed = expect_empty(r, "READ_ALL"))) return failed;
        if ((uint64_t)S.dev.rows * S.dev.cols > S.dev.max_cells)
            FAIL(ST_TOO_LARGE, "the array is larger than the per-command bound");
        return read_region(r, 0, 0, S.dev.rows, S.dev.cols);
    case OP_IDENTIFY:
        if ((failed = expect_empty(r, "IDENTIFY"))) return failed;
        return ok(r, put_info(r->reply + REP_HEADER, S.dev.max_message - REP_HEADER));
    case OP_ERROR: {
        if ((failed = expect_empty(r, "ERROR"))) return failed;
        int16_t code = 0;
        const char *text = "No error";
        if (S.error_count) {
            error_entry *e = &S.errors[S.error_head];
            S.error_head = (S.error_head + 1) % XBAR_ERROR_QUEUE;
            S.error_count--;
            code = e->code;
            text = e->text; /* still intact: nothing is queued before it is copied */
        }
        uint8_t *body = r->reply + REP_HEADER;
        wr16(body, (uint16_t)code);
        return ok(r, 2 + put_text(body + 2, S.dev.max_message - REP_HEADER - 2, text));
    }
    case OP_SAFE:
        if ((failed = expect_empty(r, "SAFE"))) return failed;
        say_safe();
        return ok(r, 0);
    case OP_RESET:
        if ((failed = expect_empty(r, "RESET"))) return failed;
        say_safe();
        S.error_head = S.error_count = 0;
        return ok(r, 0);
    case OP_CLAIM: return cmd_claim(r);
    default: FAIL(ST_UNKNOWN, "unknown opcode 0x%02x", r->op);
    }
}

/* ------------------------------------------------------------------ the sequence window */
static window_slot *window_find(uint32_t seq) {
    for (unsigned i = 0; i < XBAR_WINDOW; i++)
        if (S.window[i].used && S.window[i].seq == seq) return &S.window[i];
    return NULL;
}

size_t xbar_handle(const uint8_t *message, size_t size, uint8_t *reply) {
    request req = {0};
    request *r = &req;
    r->reply = reply;
    if (size > S.dev.max_message)
        FAIL(ST_TOO_LARGE, "message of %lu bytes exceeds this device's bound of %lu",
             (unsigned long)size, (unsigned long)S.dev.max_message);
    if (size < REQ_HEADER)
        FAIL(ST_MALFORMED, "request of %lu bytes is shorter than its %u-byte header",
             (unsigned long)size, REQ_HEADER);
    r->seq = rd32(message);
    r->op = message[4];
    r->session = rd32(message + 5);
    r->body = message + REQ_HEADER;
    r->size = size - REQ_HEADER;
    uint32_t now = hal_millis();
    if (S.owner && S.dev.lease_ms && now - S.owner_seen > S.dev.lease_ms) {
        hal_log("claim expired: no command from its host for the lease time");
        end_claim();
        say_safe();
    }
    if (r->session && r->session == S.owner) S.owner_seen = now; /* any command renews */
    if (r->op < OP_IDENTIFY || r->op > OP_CLAIM) FAIL(ST_UNKNOWN, "unknown opcode 0x%02x", r->op);
    bool sequenced = r->op == OP_CONFIGURE || r->op == OP_APPLY;
    uint32_t digest = 0;
    if (sequenced) {
        if (r->seq == 0) FAIL(ST_MALFORMED, "sequence 0 is not allowed on a sequenced command");
        digest = crc32(message, size);
        window_slot *done = window_find(r->seq);
        if (done && done->digest == digest && done->length == size) { /* a retry */
            memcpy(reply, done->reply, done->reply_length);
            return done->reply_length;
        }
        if (r->session == 0 || r->session != S.owner) return busy(r);
        if (done) FAIL(ST_SEQUENCE, "sequence number %lu was already used for a different command",
                       (unsigned long)r->seq);
        uint32_t ahead = r->seq - S.last_seq;
        if (S.last_seq && !(ahead > 0 && ahead < 0x80000000u))
            FAIL(ST_SEQUENCE, "sequence number %lu is older than the last executed (%lu)",
                 (unsigned long)r->seq, (unsigned long)S.last_seq);
    }
    size_t n = execute(r);
    if (sequenced && reply[5] == ST_OK) {
        window_slot *slot = &S.window[S.window_next];
        S.window_next = (S.window_next + 1) % XBAR_WINDOW;
        slot->used = true;
        slot->seq = r->seq;
        slot->digest = digest;
        slot->length = (uint32_t)size;
        slot->reply_length = (uint32_t)n;
        memcpy(slot->reply, reply, n);
        S.last_seq = r->seq;
        if (r->op == OP_APPLY) follow_batch(r);
        S.lost_session = S.lost_seq = S.lost_entries = 0; /* the next host has moved on */
    }
    return n;
}

/* ------------------------------------------------------------------ frames */
static void send_message(size_t length) {
    /* the reply is already at tx + 10; frame it in place */
    tx[0] = 0xA5;
    tx[1] = 0x5A;
    wr32(tx + 2, (uint32_t)length);
    wr32(tx + 6, crc32(tx, 6));
    wr32(tx + 10 + length, crc32(tx + 10, length));
    hal_serial_write(tx, length + XBAR_FRAME_OVERHEAD);
}

static void flush_faults(void) {
    if (!rx_dropped) return;
    char text[64];
    snprintf(text, sizeof text, "frame faults (%lu bytes dropped)", (unsigned long)rx_dropped);
    rx_dropped = 0;
    send_message(fail(tx + 10, 0, 0, 0, ST_FRAME, text));
}

static void drop(size_t count) {
    rx_head += count;
    rx_len -= count;
    rx_dropped += (uint32_t)count;
    if (!rx_len) rx_head = 0;
}

/* Deliver every complete frame in the buffer; stop at a partial one (hunt as specified). */
static void process(void) {
    while (rx_len) {
        const uint8_t *p = rx + rx_head;
        if (p[0] != 0xA5 || (rx_len >= 2 && p[1] != 0x5A)) {
            drop(1);
            continue;
        }
        if (rx_len < 10) return;
        uint32_t length = rd32(p + 2);
        if (rd32(p + 6) != crc32(p, 6) || length > S.dev.max_message) {
            drop(1);
            continue;
        }
        if (rx_len < XBAR_FRAME_OVERHEAD + (size_t)length) return;
        if (rd32(p + 10 + length) != crc32(p + 10, length)) {
            drop(1);
            continue;
        }
        flush_faults();
        send_message(xbar_handle(p + 10, length, tx + 10));
        rx_head += XBAR_FRAME_OVERHEAD + length;
        rx_len -= XBAR_FRAME_OVERHEAD + length;
        if (!rx_len) rx_head = 0;
    }
}

void xbar_rx_bytes(const uint8_t *data, size_t size, uint32_t now_ms) {
    if (size) rx_last_ms = now_ms;
    while (size) {
        if (rx_head + rx_len == RX_CAP) { /* compact: the held frame moves to the start */
            memmove(rx, rx + rx_head, rx_len);
            rx_head = 0;
        }
        size_t room = RX_CAP - rx_head - rx_len, take = size < room ? size : room;
        memcpy(rx + rx_head + rx_len, data, take);
        rx_len += take;
        data += take;
        size -= take;
        process(); /* a held frame never exceeds RX_CAP, so this always makes room */
    }
}

int32_t xbar_rx_ms_to_expiry(uint32_t now_ms) {
    if (!rx_len) return -1;
    uint32_t idle = now_ms - rx_last_ms;
    return idle >= XBAR_FRAME_IDLE_MS ? 0 : (int32_t)(XBAR_FRAME_IDLE_MS - idle);
}

void xbar_rx_idle(uint32_t now_ms) {
    if (rx_len && now_ms - rx_last_ms >= XBAR_FRAME_IDLE_MS) {
        while (rx_len) { /* nothing new arrived: every partial frame here is dead */
            drop(1);
            process();
        }
    }
    flush_faults();
}

/* ------------------------------------------------------------------ life cycle */
void xbar_host_gone(void) {
    if (S.owner) hal_log("released: the host's link closed");
    end_claim();
    say_safe();
}

int xbar_init(const xbar_device *device) {
    if (device->rows == 0 || device->cols == 0 || device->rows > XBAR_MAX_ROWS ||
        device->cols > XBAR_MAX_COLS || device->max_message < 256 ||
        device->max_message > XBAR_MAX_MESSAGE || device->max_cells < 1 ||
        device->max_cells > XBAR_MAX_CELLS || !limits_valid(&device->hardware))
        return -1;
    memset(&S, 0, sizeof S);
    S.dev = *device;
    S.limits = device->hardware;
    S.outputs_safe = true;
    rx_head = rx_len = 0;
    rx_dropped = 0;
    hal_outputs_safe();
    return 0;
}

size_t xbar_core_ram(void) { return sizeof S + sizeof rx + sizeof tx; }
