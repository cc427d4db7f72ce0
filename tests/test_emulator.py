"""EmulatedCrossbar, PulseBatch and open_crossbar: the device abstraction layer in process."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memristor_hil.emulator import EmulatedCrossbar

from memristor_hil import (
    AddressError,
    Crossbar,
    CrossbarClosedError,
    InvalidBatchError,
    PowerLaw,
    PulseBatch,
    SafetyLimitError,
    SafetyLimits,
    open_crossbar,
)


def reference_state(xbar: EmulatedCrossbar, batch: PulseBatch, n_before: np.ndarray) -> np.ndarray:
    """The expected state after ``batch``, from the numpy reference model, cell by cell."""
    n = n_before.reshape(-1).copy()
    flat = batch.rows.astype(np.int64) * xbar.shape[1] + batch.cols
    voltage = np.broadcast_to(batch.voltage, (len(batch),))
    for i, j in enumerate(flat):
        params = xbar.params
        if params.per_device:
            params = type(params)(params.r0[[j]], params.r1[[j]], params.a[[j]])
        n[j] = xbar.model.after_pulses(n[[j]], batch.pulses[i], voltage[i], params)[0]
    return n.reshape(xbar.shape)


def test_is_a_crossbar_with_identity_and_limits():
    with EmulatedCrossbar(3, 5, seed=0) as xbar:
        assert isinstance(xbar, Crossbar)
        assert xbar.shape == (3, 5) and xbar.size == 15
        assert "EmulatedCrossbar" in xbar.identity
        assert isinstance(xbar.limits, SafetyLimits)
    assert xbar.closed
    with pytest.raises(CrossbarClosedError):
        xbar.read_all()


def test_initial_resistance_is_r_init_without_variability():
    xbar = EmulatedCrossbar(4, 6, seed=0)
    np.testing.assert_allclose(xbar.read_all(), 1e8, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    cells=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), min_size=0, max_size=40),
    counts=st.data(),
    sigma=st.sampled_from([0.0, 0.15]),
    voltage=st.sampled_from([0.1, 0.3]),
    dtype=st.sampled_from(["float64", "float32"]),
)
def test_apply_matches_the_reference_model_cell_by_cell(cells, counts, sigma, voltage, dtype):
    xbar = EmulatedCrossbar(6, 7, PowerLaw(variability=sigma, dtype=dtype), seed=3)
    pulses = counts.draw(st.lists(st.integers(0, 50), min_size=len(cells), max_size=len(cells)))
    rows = np.array([c[0] for c in cells], dtype=np.int64)
    cols = np.array([c[1] for c in cells], dtype=np.int64)
    batch = PulseBatch(rows, cols, np.array(pulses, dtype=np.int64), voltage=voltage)
    expected = reference_state(xbar, batch, xbar.pulse_counts)
    r_back = xbar.apply(batch, read_back=True)
    rtol = 1e-9 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(xbar.pulse_counts, expected, rtol=rtol)
    # read-back is the resistance after the whole batch, for every entry (repeats included)
    np.testing.assert_allclose(r_back, xbar.read(rows, cols), rtol=rtol)


def test_duplicated_cell_accumulates():
    a = EmulatedCrossbar(4, 4, seed=1)
    b = EmulatedCrossbar(4, 4, seed=1)
    r_dup = a.apply(PulseBatch([2, 0, 2, 2], [3, 0, 3, 3], pulses=[4, 1, 5, 1]), read_back=True)
    r_sum = b.apply(PulseBatch([0, 2], [0, 3], pulses=[1, 10]), read_back=True)
    np.testing.assert_array_equal(a.read_all(), b.read_all())
    np.testing.assert_array_equal(r_dup, [r_sum[1], r_sum[0], r_sum[1], r_sum[1]])


def test_k_pulses_in_one_batch_equal_k_single_batches():
    a = EmulatedCrossbar(3, 3, seed=2)
    b = EmulatedCrossbar(3, 3, seed=2)
    a.apply(PulseBatch([1], [2], pulses=37))
    for _ in range(37):
        b.apply(PulseBatch([1], [2]))
    np.testing.assert_allclose(a.read_all(), b.read_all(), rtol=1e-12)


def test_large_and_small_batches_read_the_same_bits():
    # Shared float64 parameters take one compiled loop at every size (once numpy above 256
    # cells: a cell read alone and in a large batch differed in the last bit on AVX-512).
    big = EmulatedCrossbar(50, 50, seed=4)
    small = EmulatedCrossbar(50, 50, seed=4)
    cells = np.arange(2500)
    r_big = big.apply(PulseBatch.from_flat(cells, 50, pulses=3), read_back=True)
    r_small = np.concatenate(
        [
            small.apply(PulseBatch.from_flat(cells[i : i + 100], 50, pulses=3), read_back=True)
            for i in range(0, 2500, 100)
        ]
    )
    np.testing.assert_array_equal(r_big, r_small)
    np.testing.assert_array_equal(big.read_all().ravel(), r_big)
    # and random order (no fused read-back) gives the same
    perm = np.random.default_rng(0).permutation(2500)
    other = EmulatedCrossbar(50, 50, seed=4)
    r_perm = other.apply(PulseBatch.from_flat(perm, 50, pulses=3), read_back=True)
    np.testing.assert_allclose(r_perm, r_big[perm], rtol=1e-12)


INVALID_BATCHES = [
    (lambda: PulseBatch([0, 9], [0, 0]), InvalidBatchError, "outside the 4x4"),
    (lambda: PulseBatch([0], [-1]), InvalidBatchError, "outside"),
    (lambda: PulseBatch([0], [0], voltage=5.0), SafetyLimitError, "voltage"),
    (lambda: PulseBatch([0], [0], voltage=0.0), SafetyLimitError, "non-zero"),
    (lambda: PulseBatch([0, 1], [0, 1], voltage=[0.1, 2.0]), SafetyLimitError, "voltage"),
    (lambda: PulseBatch([0], [0], width=1.0), SafetyLimitError, "width"),
    (lambda: PulseBatch([0], [0], pulses=10**6), SafetyLimitError, "pulses"),
    (lambda: PulseBatch([0], [0], voltage=-0.5), InvalidBatchError, "RESET"),
]


@pytest.mark.parametrize("make, error, message", INVALID_BATCHES)
def test_invalid_batch_is_rejected_and_leaves_every_device_untouched(make, error, message):
    xbar = EmulatedCrossbar(4, 4, PowerLaw(variability=0.1), seed=5)
    xbar.apply(PulseBatch([1, 2], [1, 2], pulses=3))
    before = xbar.pulse_counts
    with pytest.raises(error, match=message):
        xbar.apply(make(), read_back=True)
    np.testing.assert_array_equal(xbar.pulse_counts, before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rows": [0, 1], "cols": [0]}, "differ in length"),
        ({"rows": [0], "cols": [0], "pulses": -1}, ">= 0"),
        ({"rows": [0, 1], "cols": [0, 1], "pulses": [1, -2]}, ">= 0"),
        ({"rows": [0], "cols": [0], "pulses": 1.5}, "whole numbers"),
        ({"rows": [0.5], "cols": [0]}, "integers"),
        ({"rows": [0], "cols": [0], "width": 0.0}, "positive"),
        ({"rows": [0], "cols": [0], "voltage": float("nan")}, "finite"),
        ({"rows": [0, 1], "cols": [0, 1], "pulses": [1, 2, 3]}, "one entry per cell"),
    ],
)
def test_malformed_batches_are_refused_at_construction(kwargs, message):
    with pytest.raises(InvalidBatchError, match=message):
        PulseBatch(**kwargs)


def test_same_seed_same_crossbar():
    model = PowerLaw(variability=0.15, noise=0.1)
    a, b = (EmulatedCrossbar(8, 8, model, seed=11) for _ in range(2))
    c = EmulatedCrossbar(8, 8, model, seed=12)
    batch = PulseBatch(np.arange(8), np.arange(8), pulses=20)
    for x in (a, b, c):
        x.apply(batch)
    np.testing.assert_array_equal(a.read_all(), b.read_all())
    assert not np.array_equal(a.read_all(), c.read_all())


def test_reads_of_cells_region_and_all_agree():
    xbar = EmulatedCrossbar(5, 6, PowerLaw(variability=0.1), seed=6)
    xbar.apply(PulseBatch.from_flat(np.arange(30), 6, pulses=np.arange(30)))
    full = xbar.read_all()
    np.testing.assert_array_equal(xbar.read_region(1, 2, 3, 4), full[1:4, 2:6])
    np.testing.assert_array_equal(xbar.read([4, 0], [5, 1]), [full[4, 5], full[0, 1]])
    with pytest.raises(InvalidBatchError, match="outside"):
        xbar.read_region(3, 3, 3, 3)
    with pytest.raises(InvalidBatchError, match="outside"):
        xbar.read([5], [0])


def test_voltage_changes_the_step_size():
    low = EmulatedCrossbar(1, 1, seed=0)
    high = EmulatedCrossbar(1, 1, seed=0)
    r_low = low.apply(PulseBatch([0], [0], 100, voltage=0.1), read_back=True)[0]
    r_high = high.apply(PulseBatch([0], [0], 100, voltage=0.5), read_back=True)[0]
    assert r_high < r_low < 1e8


def test_reset_pulses_through_the_emulator():
    xbar = EmulatedCrossbar(2, 2, PowerLaw(reset=True), seed=0)
    xbar.apply(PulseBatch([0, 1], [0, 1], pulses=500))
    r_before = xbar.read([0], [0])[0]
    r_after = xbar.apply(PulseBatch([0, 1], [0, 1], pulses=5, voltage=[-0.5, 0.1]), read_back=True)
    assert r_after[0] > r_before and r_after[1] < r_before


def test_state_file_round_trip(tmp_path):
    model = PowerLaw(variability=0.15, noise=0.05)
    xbar = EmulatedCrossbar(6, 6, model, seed=9)
    xbar.apply(PulseBatch.from_flat(np.arange(36), 6, pulses=7))
    path = tmp_path / "xbar.state"
    xbar.save_state(path)
    restored = EmulatedCrossbar.from_state(path)
    np.testing.assert_array_equal(restored.read_all(), xbar.read_all())
    # the noise stream carries on identically too
    batch = PulseBatch([1, 2], [3, 4], pulses=10)
    np.testing.assert_array_equal(
        restored.apply(batch, read_back=True), xbar.apply(batch, read_back=True)
    )


def test_cost_grows_with_the_batch_not_the_crossbar():
    # Indirect but deterministic: the emulator never materialises per-cell work for untouched
    # cells, so applying a 1-cell batch to a big crossbar leaves all other states bit-identical.
    xbar = EmulatedCrossbar(1000, 1000, seed=0)
    before = xbar.pulse_counts
    xbar.apply(PulseBatch([999], [999]))
    after = xbar.pulse_counts
    changed = np.flatnonzero(before != after)
    np.testing.assert_array_equal(changed, [999_999])


def test_open_crossbar_emulator_url():
    with open_crossbar("emulator://?rows=3&cols=4&seed=5&sigma=0.1&dtype=float32") as xbar:
        assert isinstance(xbar, EmulatedCrossbar)
        assert xbar.shape == (3, 4)
        assert xbar.model.variability.r0 == 0.1
        assert xbar.read_all().dtype == np.float32
    same = open_crossbar("emulator://?rows=3&cols=4&seed=5&sigma=0.1&dtype=float32")
    # float32 devices evaluate the power law in the compiled kernel (float64 inside): within
    # one float32 rounding of the numpy reference, which rounds x**a and r1 * x**a separately
    np.testing.assert_allclose(
        same.read_all(), xbar.model.resistance(xbar._n, xbar.params).reshape(3, 4), rtol=3e-7
    )


@pytest.mark.parametrize(
    "url, message",
    [
        ("nosuch://x", "known schemes: .*emulator"),
        ("emulator", "not a crossbar URL"),
        ("emulator://?rows=3&bogus=1", "unknown emulator:// options"),
        ("emulator://?rows=three", "integers"),
        ("emulator://?a=0.5", "negative"),
    ],
)
def test_open_crossbar_errors_are_clear(url, message):
    with pytest.raises(ValueError, match=message):
        open_crossbar(url)


def test_parameter_file_in_url(tmp_path):
    path = tmp_path / "fit.json"
    path.write_text('{"model": {"r0": 150.0, "r1": 2e8, "a": -0.12}}')
    xbar = open_crossbar(f"emulator://?rows=2&cols=2&params={path}&seed=0")
    assert (xbar.model.r0, xbar.model.r1, xbar.model.a) == (150.0, 2e8, -0.12)


def test_coalesced_sums_repeated_cells():
    batch = PulseBatch([3, 0, 3], [1, 2, 1], pulses=[2, 1, 5]).coalesced()
    np.testing.assert_array_equal(batch.rows, [0, 3])
    np.testing.assert_array_equal(batch.cols, [2, 1])
    np.testing.assert_array_equal(batch.pulses, [1, 7])


def test_empty_batches_are_valid_and_change_nothing():
    xbar = EmulatedCrossbar(3, 3, seed=0)
    before = xbar.pulse_counts
    empty = np.array([], dtype=np.int64)
    for batch in (
        PulseBatch(empty, empty),
        PulseBatch(empty, empty, pulses=empty, voltage=np.array([]), width=np.array([])),
    ):
        assert xbar.apply(batch, read_back=True).shape == (0,)
    np.testing.assert_array_equal(xbar.pulse_counts, before)


@pytest.mark.parametrize("exponent", [-0.146, -0.5, -2.0, 0.7])
def test_float32_power_law_kernel_is_accurate_over_the_whole_range(exponent):
    """The compiled float32 power law against float64 NumPy, from n = 1e-30 to 3e38."""
    from memristor_hil.emulator import kernels

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [10.0 ** rng.uniform(-30, 38, 5000), [1.0, 1.0000057, 2.0, 1.4142135, 0.70710677]]
    ).astype(np.float32)
    one = np.ones(1, np.float32)
    got = kernels.power_law_f32(x.copy(), one * 200, one * 2.3e8, one * exponent, np.empty(0, int))
    want = 200.0 + 2.3e8 * np.power(x.astype(np.float64), np.float32(exponent).astype(float))
    ok = np.isfinite(want) & (want < 3e38)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1.2e-7)  # one float32 rounding
    # per-device parameters, gathered by cell index, give the same values
    flat = np.arange(x.size)[::-1].copy()
    per = np.full(x.size, exponent, np.float32)
    r0, r1 = np.full(x.size, 200, np.float32), np.full(x.size, 2.3e8, np.float32)
    got_dev = kernels.power_law_f32(x[::-1].copy(), r0, r1, per, flat)
    np.testing.assert_array_equal(got_dev[::-1], got)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sigma", [0.0, 0.15])
@pytest.mark.parametrize("order", ["ascending", "shuffled", "repeats"])
@pytest.mark.parametrize("size", [1, 300, 2000])
def test_read_back_is_bit_for_bit_a_read_after_the_batch(dtype, sigma, order, size):
    """The read-back computed as the batch is applied (block by block for ascending cells, in
    a second pass otherwise) equals reading the same cells afterwards, to the bit."""
    xbar = EmulatedCrossbar(40, 60, PowerLaw(dtype=dtype, variability=sigma), seed=5)
    rng = np.random.default_rng(size)
    if order == "repeats":
        cells = rng.integers(0, xbar.size, size)
    else:
        cells = rng.choice(xbar.size, size, replace=False)
        cells = np.sort(cells) if order == "ascending" else cells
    rows, cols = np.divmod(cells, 60)
    for voltage in (0.1, 0.2):  # the reference voltage, and the general power update
        got = xbar.apply(PulseBatch(rows, cols, pulses=3, voltage=voltage), read_back=True)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, xbar.read(rows, cols))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_assigned_device_parameters_are_the_ones_pulses_and_read_backs_use(dtype):
    """``params`` is a public attribute: the compiled kernels keep a grouped copy of the device
    arrays, which must follow an assignment (it once kept the old law's, so a read-back
    disagreed with a read of the same cells)."""
    law = PowerLaw(dtype=dtype, variability=0.15)
    xbar, other = EmulatedCrossbar(4, 5, law, seed=1), EmulatedCrossbar(4, 5, law, seed=2)
    xbar.params = other.params
    twin = EmulatedCrossbar(4, 5, law, seed=1)  # the same states, under the other's law
    twin.params = other.params
    rows, cols = np.array([0, 1, 3]), np.array([4, 2, 0])
    for voltage in (0.1, 0.2, np.array([0.1, 0.15, 0.2])):
        got = xbar.apply(PulseBatch(rows, cols, pulses=2, voltage=voltage), read_back=True)
        if got is None:  # per-cell voltages: no compiled read-back path
            got = xbar.read(rows, cols)
        np.testing.assert_array_equal(got, xbar.read(rows, cols))
        twin.apply(PulseBatch(rows, cols, pulses=2, voltage=voltage))
    np.testing.assert_array_equal(xbar.read_all(), twin.read_all())
    n = xbar.snapshot()["n"]
    expected = law.resistance(np.asarray(n, dtype=float).reshape(-1), other.params)
    np.testing.assert_allclose(xbar.read_all().reshape(-1), expected, rtol=1e-6)


def test_read_back_goes_into_the_callers_buffer_and_a_returned_array_stays_the_callers():
    xbar = EmulatedCrossbar(30, 30, PowerLaw(dtype="float32"), seed=1)
    twin = EmulatedCrossbar(30, 30, PowerLaw(dtype="float32"), seed=1)
    batch = PulseBatch(np.arange(0, 30, 3), np.arange(10), pulses=4)
    buffer = np.full(len(batch), -1.0, np.float32)
    got = xbar.apply(batch, read_back=True, out=buffer)
    assert got is buffer
    np.testing.assert_array_equal(buffer, twin.apply(batch, read_back=True))
    # without out=, each call returns a new array: an earlier result never changes under it
    first = xbar.apply(batch, read_back=True)
    kept = first.copy()
    xbar.apply(batch, read_back=True)
    np.testing.assert_array_equal(first, kept)
    twin.apply(batch)
    twin.apply(batch)
    # a buffer of another float type, or not contiguous, is filled by a copy
    wide = np.empty(len(batch), np.float64)
    strided = np.empty(2 * len(batch), np.float32)[::2]
    for out in (wide, strided):
        assert xbar.apply(batch, read_back=True, out=out) is out
        twin.apply(batch)
        np.testing.assert_array_equal(out, twin.read(batch.rows, batch.cols).astype(out.dtype))
    # per-cell voltages take the general path; out= works there too
    mixed = PulseBatch([1, 2], [3, 4], voltage=[0.1, 0.2])
    out = np.empty(2, np.float32)
    assert xbar.apply(mixed, read_back=True, out=out) is out
    np.testing.assert_array_equal(out, xbar.read([1, 2], [3, 4]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"out": np.empty(3)}, "read_back=True"),
        ({"read_back": True, "out": np.empty(4)}, r"shape \(3,\)"),
        ({"read_back": True, "out": np.empty(3, np.int64)}, "float array"),
        ({"read_back": True, "out": [0.0, 0.0, 0.0]}, "float array"),
    ],
)
def test_a_bad_out_buffer_is_refused_before_anything_is_applied(kwargs, message):
    xbar = EmulatedCrossbar(4, 4, seed=0)
    before = xbar.pulse_counts
    readonly = np.empty(3)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=message):
        xbar.apply(PulseBatch([0, 1, 2], [0, 1, 2]), **kwargs)
    with pytest.raises(ValueError, match="writeable"):
        xbar.apply(PulseBatch([0, 1, 2], [0, 1, 2]), read_back=True, out=readonly)
    np.testing.assert_array_equal(xbar.pulse_counts, before)


class _Forwarding(Crossbar):
    """A minimal backend with only the required hooks: the base class's own apply path."""

    def __init__(self, inner: EmulatedCrossbar) -> None:
        super().__init__(inner.shape)
        self.inner = inner

    def _apply(self, batch, cells, read_back):
        return self.inner.apply(batch, read_back=read_back)

    def _read(self, flat):
        return self.inner._read(flat)


def test_a_backend_without_its_own_out_path_copies_into_the_buffer():
    forwarding = _Forwarding(EmulatedCrossbar(5, 5, seed=2))
    twin = EmulatedCrossbar(5, 5, seed=2)
    batch = PulseBatch([0, 4], [1, 3], pulses=[2, 5])
    out = np.empty(2)
    assert forwarding.apply(batch, read_back=True, out=out) is out
    np.testing.assert_array_equal(out, twin.apply(batch, read_back=True))
    with pytest.raises(AddressError):
        forwarding.apply(PulseBatch([0, 5], [0, 0]), read_back=True, out=out)


# float32 bits of r0 + r1 * x**a (r0 = 200, r1 = 2.3e8) from the power law as it stood before
# the kernel was rewritten as one vectorised pass: the rewrite must keep every bit.
_POWER_LAW_X = [1.0, 1.0000057, 1.4142135, 1.4142137, 2.0, 7.5, 300.3, 301.3, 1234.5, 65535.0]
_POWER_LAW_X += [1e6, 3.3e7, 1e-3, 0.70710677]
_POWER_LAW_BITS = {
    -0.146: [1297832036, 1297832024, 1297122761, 1297122761, 1296448482, 1294168502, 1287568578]
    + [1287562512, 1285237486, 1278068259, 1273591526, 1267474516, 1310086775, 1298578125],
    -0.5: [1297832036, 1297831995, 1295544923, 1295544922, 1293621696, 1285566457, 1263175214]
    + [1263153170, 1254606574, 1230726470, 1214303744, 1193094620, 1339605608, 1300393064],
}


@pytest.mark.parametrize("exponent", sorted(_POWER_LAW_BITS))
def test_float32_power_law_keeps_the_bits_it_had(exponent):
    from memristor_hil.emulator import kernels

    x = np.array(_POWER_LAW_X, np.float32)
    one = np.ones(1, np.float32)
    got = kernels.power_law_f32(x, one * 200, one * 2.3e8, one * exponent, np.empty(0, np.int64))
    assert got.view(np.int32).tolist() == _POWER_LAW_BITS[exponent]


def test_submit_on_an_in_process_crossbar_applies_before_returning():
    """Crossbar.submit's default: checked like apply, applied at once, the same read-back."""
    a, b = EmulatedCrossbar(3, 4, seed=2), EmulatedCrossbar(3, 4, seed=2)
    batch = PulseBatch([0, 2, 1], [3, 1, 1], pulses=[2, 1, 4])
    pending = a.submit(batch, read_back=True)
    assert pending.done
    assert pending.result().tobytes() == b.apply(batch, read_back=True).tobytes()
    assert a.read_all().tobytes() == b.read_all().tobytes()
    with pytest.raises(AddressError, match="outside"):
        a.submit(PulseBatch([3], [0]))
    assert a.read_all().tobytes() == b.read_all().tobytes()


def test_a_failed_submit_is_raised_once_to_whoever_collects_it_first():
    """Crossbar.submit's contract: a failure is raised by ``result()`` and, if nobody collected
    it first, by the crossbar's next call; a failure the handle already raised is not raised
    again by an unrelated later call."""
    from memristor_hil.crossbar import PendingApply
    from memristor_hil.errors import CrossbarTimeoutError

    class Unanswered(Crossbar):
        def _submit(self, batch, cells, read_back):
            def finish():
                raise CrossbarTimeoutError("no reply within 1 s")

            return PendingApply(finish)

        def _apply(self, batch, cells, read_back):
            return None

        def _read(self, flat):
            return np.ones(len(flat))

    xbar = Unanswered((2, 2))
    pending = xbar.submit(PulseBatch([0], [0]))
    with pytest.raises(CrossbarTimeoutError):
        pending.result()
    assert xbar.read([1], [1]).tolist() == [1.0]  # collected by its handle: not raised again
    uncollected = xbar.submit(PulseBatch([0], [0]))
    with pytest.raises(CrossbarTimeoutError):
        xbar.read([1], [1])  # raised by the next call ...
    with pytest.raises(CrossbarTimeoutError):
        uncollected.result()  # ... and by its handle
