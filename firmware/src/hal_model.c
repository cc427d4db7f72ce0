/* The hardware interface implemented by the power-law device model, for host builds.
 *
 * R(n) = r0 + r1 * n^a; k SET pulses at voltage V: n <- (max(n, n_min)^e + k)^(1/e) with
 * e = a / a(V), a(V) = a + a_slope * (|V| - v_ref) (e == 1: n <- n + k). The same formula, in
 * the same order of operations, as memristor_hil.powerlaw.PowerLaw and the emulator's compiled
 * kernel, nominal parameters (no device variability, no noise). Results are exact (bit for
 * bit) only against a host model that uses the same C library's pow(): see docs/protocol.md. */
#include <math.h>
#include <stddef.h>

#include "xbar_config.h"
#include "xbar_hal.h"

static const double R0 = 200.0, R1 = 2.3e8, A = -0.146, V_REF = 0.1, A_SLOPE = -0.53,
                    R_INIT = 1e8;

static double n_state[XBAR_MAX_ROWS * XBAR_MAX_COLS];
static double n_min;
static size_t selected;
static unsigned cols_in_use = XBAR_MAX_COLS;

void model_init(unsigned rows, unsigned cols) {
    cols_in_use = cols;
    double top = (R1 - R0) / R1, excess = (R_INIT - R0) / R1;
    if (excess > top) excess = top;
    double n0 = pow(excess, 1.0 / A);
    n_min = pow(top, 1.0 / A);
    for (size_t i = 0; i < (size_t)rows * cols; i++) n_state[i] = n0;
}

int hal_select(uint32_t row, uint32_t col) {
    selected = (size_t)row * cols_in_use + col;
    return 0;
}

int hal_check_pulse(double volts, double width_s, const char **why) {
    (void)width_s;
    if (volts < 0) {
        *why = "negative (RESET) voltages need a model with reset=True; this model has only the "
               "SET branch";
        return 1;
    }
    if (!(A + A_SLOPE * (volts - V_REF) < 0)) {
        *why = "the exponent a(V) is not negative at this voltage";
        return 1;
    }
    return 0;
}

int hal_pulse(uint32_t count, double volts, double width_s) {
    (void)width_s;
    double k = 1.0 * count, x = n_state[selected];
    double ratio = A / (A + A_SLOPE * (volts - V_REF));
    if (x < n_min) x = n_min;
    if (ratio == 1.0) {
        x = x + k;
    } else {
        x = pow(pow(x, ratio) + k, 1.0 / ratio);
    }
    n_state[selected] = x;
    return 0;
}

int hal_read(double *ohm) {
    *ohm = R0 + R1 * pow(n_state[selected], A);
    return 0;
}
