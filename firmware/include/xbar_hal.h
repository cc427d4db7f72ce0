/* The hardware interface: everything the protocol core needs from a board.
 *
 * Two implementations: src/hal_model.c (the power-law device model, for host builds and
 * tests) and board/board_template.c (a documented template for an STM32- or RP2040-class
 * board). The core calls these only after it has checked the whole command: a failing call
 * is a DEVICE error, reported with the text the HAL gives. */
#ifndef XBAR_HAL_H
#define XBAR_HAL_H

#include <stddef.h>
#include <stdint.h>

/* Route the row and column drivers to one cell (row < rows, col < cols: checked). */
int hal_select(uint32_t row, uint32_t col);

/* Can this board pulse at `volts` for `width_s` seconds? 0 if so; else sets *why (static
 * text) and returns non-zero. Called for every distinct pulse of a batch BEFORE any pulse. */
int hal_check_pulse(double volts, double width_s, const char **why);

/* Apply `count` pulses (count may be 0) of `volts` (sign = polarity) and `width_s` seconds to
 * the selected cell, enabling the outputs if they are safe. 0 on success. */
int hal_pulse(uint32_t count, double volts, double width_s);

/* Measure the selected cell's resistance in ohm. 0 on success. */
int hal_read(double *ohm);

/* Every row and column driver to 0 V / high impedance. Must not fail. */
void hal_outputs_safe(void);

/* A millisecond clock (wraps; only differences are used). */
uint32_t hal_millis(void);

/* Send bytes to the host (blocking; a board drops them if the host is gone). */
void hal_serial_write(const uint8_t *data, size_t size);

/* An event line for a console or log (may do nothing). */
void hal_log(const char *text);

#endif
