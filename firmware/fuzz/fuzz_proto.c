/* libFuzzer target for the frame receiver and the message parser (docs/firmware.md).
 *
 * Input: a byte stream fed to the core in pieces (as a UART would), with idle pauses; every
 * 7th input is also handed to xbar_handle() directly as one message. Sanitizers (ASan,
 * UBSan) turn any out-of-bounds access or undefined behaviour into a crash. The device is
 * claimed by session 0x01020304 so that APPLY and CONFIGURE bodies are reached. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "xbar_hal.h"
#include "xbar_proto.h"

void model_init(unsigned rows, unsigned cols);

static uint32_t fake_ms;
uint32_t hal_millis(void) { return fake_ms; }
void hal_log(const char *text) { (void)text; }
void hal_outputs_safe(void) {}
void hal_serial_write(const uint8_t *data, size_t size) {
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < size; i++) sink ^= data[i]; /* touch every byte sent */
    (void)sink;
}

static const uint8_t claim[] = {1, 0, 0, 0, 10, 4, 3, 2, 1, 0};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t reply[XBAR_MAX_MESSAGE];
    xbar_device dev = {8, 8, XBAR_MAX_MESSAGE, XBAR_MAX_CELLS,
                       {-1.5, 1.5, 1e-8, 1e-3, 65535, 1e-3}, "fuzz,xbar,0,2", 0};
    xbar_init(&dev);
    model_init(8, 8);
    xbar_handle(claim, sizeof claim, reply);
    if (size && data[0] % 7 == 0) {
        /* a message with the claimed session patched in, so sequenced bodies are parsed */
        static uint8_t message[XBAR_MAX_MESSAGE + 64];
        size_t n = size - 1 < sizeof message ? size - 1 : sizeof message;
        memcpy(message, data + 1, n);
        if (n >= 9) memcpy(message + 5, claim + 5, 4);
        xbar_handle(message, n, reply);
        return 0;
    }
    size_t i = 0;
    while (i < size) {
        size_t piece = 1 + data[i] % 61;
        if (piece > size - i) piece = size - i;
        xbar_rx_bytes(data + i, piece, fake_ms);
        i += piece;
        fake_ms += data[i - 1] % 3 == 0 ? 250 : 1; /* sometimes idle past the timeout */
        xbar_rx_idle(fake_ms);
    }
    return 0;
}
