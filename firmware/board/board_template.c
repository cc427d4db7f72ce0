/* TEMPLATE: the hardware interface (include/xbar_hal.h) on a real crossbar board.
 *
 * Not compiled for a target here (`make ram` only checks that it compiles). Replace each
 * board_* primitive with your vendor HAL (STM32 HAL/LL, pico-sdk). The shape assumed is the
 * usual one-transistor-free passive crossbar front end:
 *
 *   - Row select: an analogue multiplexer per side (e.g. 2 x ADG1406 16:1 for 32 rows), its
 *     address on GPIO (STM32: PB0..PB4; RP2040: GPIO2..6), enable on one more GPIO. Columns
 *     likewise (STM32: PC0..PC4; RP2040: GPIO7..11). Unselected lines are grounded through
 *     the multiplexers' off state or a second set of switches.
 *   - Pulse: a DAC sets the amplitude (STM32: DAC1 channel 1, 12 bit; RP2040 has no DAC: an
 *     external SPI DAC such as the DAC8552 on SPI0), a bipolar amplifier (OPA547-class) drives
 *     the selected row; the pulse is gated by a timer in one-pulse mode (STM32: TIM1 OPM, 1
 *     tick = 1/168 MHz, so widths from ~6 ns; RP2040: a PIO state machine counting cycles
 *     at 125 MHz) so the width does not depend on the CPU. Compliance: a current limit on the
 *     amplifier set by a second DAC channel or a digital potentiometer.
 *   - Read: a small read voltage (e.g. 0.05 V, far below any SET threshold) on the row, a
 *     transimpedance amplifier on the column into the ADC (STM32: ADC1 with DMA, average of
 *     16 samples; RP2040: ADC0 on GPIO26), with range switching for 200 ohm .. 250 Mohm.
 *   - Serial: USB-CDC (STM32 USB FS device; RP2040 TinyUSB) or a UART at 921600 8N1. Call
 *     xbar_rx_bytes() from the receive callback's deferred handler (not the ISR itself), and
 *     xbar_rx_idle() from the main loop when the receive FIFO is empty; call xbar_host_gone()
 *     when the CDC line state drops DTR (the host closed the port or vanished).
 *   - Clock: SysTick at 1 kHz (STM32: HAL_GetTick; RP2040: to_ms_since_boot).
 *
 * Safety: hal_outputs_safe() must work from any state and must not fail; call it at reset
 * before anything else, and from a watchdog / brown-out handler. Check hardware limits in
 * hal_check_pulse() (what the amplifier and timer can do); the protocol core has already
 * checked the host's limits. */
#include <stddef.h>
#include <stdint.h>

#include "xbar_hal.h"

/* --- the vendor-specific primitives a port provides (declarations only in this template) */
void board_mux_select(unsigned side, unsigned line);   /* side 0 rows, 1 columns */
void board_mux_enable(int on);
void board_dac_set_volts(double volts);                 /* amplitude, sign = polarity */
void board_timer_one_pulse(uint32_t ticks);             /* blocks until the pulse ends */
uint32_t board_timer_ticks(double seconds);             /* width -> timer ticks (rounded) */
double board_adc_read_ohm(void);                        /* read path: TIA + ADC + range */
void board_all_lines_to_ground(void);                   /* drivers off, lines grounded */
uint32_t board_millis(void);
void board_uart_write(const uint8_t *data, size_t size);

/* Hardware limits of this front end (also reported as IDENTIFY's hardware limits). */
#define BOARD_V_MAX 1.5
#define BOARD_WIDTH_MIN 1e-8
#define BOARD_WIDTH_MAX 1e-3

int hal_select(uint32_t row, uint32_t col) {
    board_mux_enable(0);
    board_mux_select(0, row);
    board_mux_select(1, col);
    board_mux_enable(1);
    return 0;
}

int hal_check_pulse(double volts, double width_s, const char **why) {
    if (volts > BOARD_V_MAX || volts < -BOARD_V_MAX) {
        *why = "voltage beyond the amplifier's range";
        return 1;
    }
    if (width_s < BOARD_WIDTH_MIN || width_s > BOARD_WIDTH_MAX || board_timer_ticks(width_s) == 0) {
        *why = "width beyond the pulse timer's range";
        return 1;
    }
    return 0;
}

int hal_pulse(uint32_t count, double volts, double width_s) {
    uint32_t ticks = board_timer_ticks(width_s);
    board_dac_set_volts(volts);
    for (uint32_t i = 0; i < count; i++) board_timer_one_pulse(ticks);
    board_dac_set_volts(0.0);
    return 0;
}

int hal_read(double *ohm) {
    *ohm = board_adc_read_ohm();
    return *ohm > 0 ? 0 : 1;
}

void hal_outputs_safe(void) {
    board_dac_set_volts(0.0);
    board_mux_enable(0);
    board_all_lines_to_ground();
}

uint32_t hal_millis(void) { return board_millis(); }

void hal_serial_write(const uint8_t *data, size_t size) { board_uart_write(data, size); }

void hal_log(const char *text) { (void)text; /* e.g. SWO/ITM or a debug UART */ }
