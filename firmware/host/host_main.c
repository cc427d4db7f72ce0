/* The host build: the protocol core and the power-law model behind a pseudo-terminal, like
 * `memristor-hil emulate --serial`. Prints the terminal's path as its first line on stdout;
 * event lines go to stderr. POSIX (Linux, macOS); this file is not part of a board build. */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "xbar_hal.h"
#include "xbar_proto.h"

void model_init(unsigned rows, unsigned cols);

static int master = -1;
static int quiet;
static volatile sig_atomic_t stopping;

/* Seeded faults, as `emulate --corrupt/--drop-byte/--drop-reply/--fault-seed`. */
static double p_corrupt, p_drop_byte, p_drop_reply;
static unsigned long faults_corrupted, faults_dropped_bytes, faults_dropped_replies;
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static double uniform(void) { /* xorshift64*: a fault stream, not for anything else */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Du) >> 11) / 9007199254740992.0;
}

static size_t damage(uint8_t *data, size_t size) {
    if (size && p_corrupt > 0 && uniform() < p_corrupt) {
        size_t i = (size_t)(uniform() * (double)size);
        data[i] ^= (uint8_t)(1 + (unsigned)(uniform() * 255.0));
        faults_corrupted++;
    }
    if (size && p_drop_byte > 0 && uniform() < p_drop_byte) {
        size_t i = (size_t)(uniform() * (double)size);
        memmove(data + i, data + i + 1, size - i - 1);
        size--;
        faults_dropped_bytes++;
    }
    return size;
}

uint32_t hal_millis(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

void hal_log(const char *text) {
    if (!quiet) fprintf(stderr, "xbar-host: %s\n", text);
}

void hal_outputs_safe(void) {} /* the model has no drivers to switch; the core logs it */

static uint8_t out[XBAR_MAX_MESSAGE + XBAR_FRAME_OVERHEAD];

void hal_serial_write(const uint8_t *data, size_t size) {
    if (p_drop_reply > 0 && uniform() < p_drop_reply) {
        faults_dropped_replies++;
        return;
    }
    memcpy(out, data, size);
    size = damage(out, size);
    uint32_t start = hal_millis();
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(master, out + done, size - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) return;
        if (hal_millis() - start > 5000) { /* nobody reads: the client has gone */
            tcflush(master, TCOFLUSH);
            return;
        }
        struct pollfd p = {master, POLLOUT, 0};
        poll(&p, 1, 100);
    }
}

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static int usage(const char *self) {
    fprintf(stderr,
            "usage: %s [--rows N] [--cols N] [--max-message BYTES] [--max-cells N] [--quiet]\n"
            "          [--lease SECONDS] [--corrupt P] [--drop-byte P] [--drop-reply P]\n"
            "          [--fault-seed N]\n"
            "Serves the crossbar protocol (docs/protocol.md) on a new pseudo-terminal; prints\n"
            "its path first. Build bounds: %ux%u cells, %u-byte messages, %u cells/command.\n",
            self, XBAR_MAX_ROWS, XBAR_MAX_COLS, XBAR_MAX_MESSAGE, XBAR_MAX_CELLS);
    return 2;
}

int main(int argc, char **argv) {
    xbar_device dev = {
        .rows = XBAR_MAX_ROWS < 12 ? XBAR_MAX_ROWS : 12,
        .cols = XBAR_MAX_COLS < 10 ? XBAR_MAX_COLS : 10,
        .max_message = XBAR_MAX_MESSAGE,
        .max_cells = XBAR_MAX_CELLS,
        .hardware = {-1.5, 1.5, 1e-8, 1e-3, 65535, 1e-3},
        .identity = "memristor-hil,xbar-firmware,host,2.0",
        .lease_ms = 30000,
    };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(arg, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (!value) return usage(argv[0]);
        char *end = NULL;
        double number = strtod(value, &end);
        if (!end || *end) return usage(argv[0]);
        if (!strcmp(arg, "--rows")) dev.rows = (uint32_t)number;
        else if (!strcmp(arg, "--cols")) dev.cols = (uint32_t)number;
        else if (!strcmp(arg, "--max-message")) dev.max_message = (uint32_t)number;
        else if (!strcmp(arg, "--max-cells")) dev.max_cells = (uint32_t)number;
        else if (!strcmp(arg, "--lease")) dev.lease_ms = (uint32_t)(number * 1000.0);
        else if (!strcmp(arg, "--corrupt")) p_corrupt = number;
        else if (!strcmp(arg, "--drop-byte")) p_drop_byte = number;
        else if (!strcmp(arg, "--drop-reply")) p_drop_reply = number;
        else if (!strcmp(arg, "--fault-seed")) rng_state ^= (uint64_t)number * 0x100000001B3u;
        else return usage(argv[0]);
        i++;
    }
    if (xbar_init(&dev) != 0) {
        fprintf(stderr, "xbar-host: the device exceeds this build's bounds\n");
        return usage(argv[0]);
    }
    model_init(dev.rows, dev.cols);
    master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) {
        perror("xbar-host: pseudo-terminal");
        return 1;
    }
    const char *path = ptsname(master);
    /* Held open while no client is connected (so that one may come at any time); let go once a
     * client talks, so that its close shows as a hang-up: xbar_host_gone() ends its claim. */
    int slave = open(path, O_RDWR | O_NOCTTY);
    struct termios tio;
    if (slave < 0 || tcgetattr(slave, &tio)) {
        perror("xbar-host: pseudo-terminal");
        return 1;
    }
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("%s\n", path);
    fflush(stdout);
    if (!quiet)
        fprintf(stderr, "xbar-host: serving %ux%u, max_message %u, max_cells %u, core RAM %zu "
                "bytes\n", (unsigned)dev.rows, (unsigned)dev.cols, (unsigned)dev.max_message,
                (unsigned)dev.max_cells, xbar_core_ram());
    static uint8_t chunk[1 << 16];
    while (!stopping) {
        int32_t expiry = xbar_rx_ms_to_expiry(hal_millis());
        struct pollfd p = {master, POLLIN, 0};
        int ready = poll(&p, 1, expiry < 0 ? 1000 : expiry + 1);
        if (ready > 0 && (p.revents & POLLIN)) {
            ssize_t n = read(master, chunk, sizeof chunk);
            if (n > 0) {
                if (slave >= 0) { /* a client talks: let go of the terminal */
                    close(slave);
                    slave = -1;
                }
                size_t size = damage(chunk, (size_t)n);
                xbar_rx_bytes(chunk, size, hal_millis());
                xbar_rx_idle(hal_millis()); /* one FRAME reply per damaged run */
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        } else if (ready == 0) {
            xbar_rx_idle(hal_millis());
            continue;
        } else if (ready < 0) {
            if (errno == EINTR) continue;
            break;
        }
        /* EIO or POLLHUP: no client holds the terminal any more */
        if (slave < 0) {
            xbar_host_gone();
            slave = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK);
        }
        struct timespec nap = {0, 10000000};
        nanosleep(&nap, NULL); /* until a client opens the terminal */
    }
    if (!quiet) {
        if (faults_corrupted || faults_dropped_bytes || faults_dropped_replies)
            fprintf(stderr, "xbar-host: faults injected: corrupted %lu, dropped bytes %lu, "
                    "dropped replies %lu\n", faults_corrupted, faults_dropped_bytes,
                    faults_dropped_replies);
        fprintf(stderr, "xbar-host: stopped\n");
    }
    if (slave >= 0) close(slave);
    close(master);
    return 0;
}
