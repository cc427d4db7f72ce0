"""The one URL option parser: typed fields, one boolean vocabulary, clear refusals.

Every scheme reads its query through :func:`memristor_hil.url_options.read_options`, so a word
means the same in ``serial://``, ``visa://``, ``emulator://`` and ``record=`` (issue 25: before,
``monitor=on`` meant False in serial and visa and True in the emulator's and record options).
"""

from __future__ import annotations

from unittest import mock

import pytest

from memristor_hil.url_options import (
    REQUIRED,
    Option,
    boolean,
    keyword_only,
    query_options,
    read_options,
)

FIELDS = {
    "timeout": Option(float, 1.0),
    "retries": Option(int, 3),
    "monitor": Option(boolean, False),
    "limits": Option(keyword_only, None),
}


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", "On", " on "])
def test_true_words(word):
    assert boolean(word) is True


@pytest.mark.parametrize("word", ["0", "false", "No", "OFF"])
def test_false_words(word):
    assert boolean(word) is False


@pytest.mark.parametrize("word", ["", "enabled", "2", "nope", "y"])
def test_any_other_word_is_refused_not_read_as_false(word):
    with pytest.raises(ValueError, match="not a boolean"):
        boolean(word)


def test_fields_are_read_as_their_types_and_defaults_fill_the_rest():
    _, query = query_options("x://host?timeout=2.5&monitor=on")
    assert read_options("x", query, FIELDS) == {
        "timeout": 2.5,
        "retries": 3,
        "monitor": True,
        "limits": None,
    }
    assert query == {}  # taken out


def test_python_objects_from_keywords_pass_through():
    limits = object()
    values = read_options("x", {"limits": limits, "monitor": True, "timeout": 3}, FIELDS)
    assert values["limits"] is limits and values["monitor"] is True and values["timeout"] == 3


def test_an_unknown_option_is_refused_naming_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown x:// options \['speed'\].*known: limits"):
        read_options("x", {"speed": "9"}, FIELDS)


def test_strict_false_leaves_the_rest_for_someone_else():
    rest = {"speed": "9", "retries": "5"}
    assert read_options("x", rest, FIELDS, strict=False)["retries"] == 5
    assert rest == {"speed": "9"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("timeout=soon", "bad option timeout='soon'"),
        ("retries=2.5", "bad option retries='2.5'"),
        ("monitor=maybe", "bad option monitor='maybe'.*not a boolean"),
        ("limits=narrow", "bad option limits='narrow'.*keyword argument"),
    ],
)
def test_bad_text_is_refused_naming_the_option(query, message):
    _, options = query_options("x://?" + query)
    with pytest.raises(ValueError, match=message):
        read_options("x", options, FIELDS)


def test_a_required_option_must_be_given():
    with pytest.raises(ValueError, match="x:// needs the option 'port'"):
        read_options("x", {}, {"port": Option(str, REQUIRED)})


def test_an_option_given_twice_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        query_options("x://?timeout=1&timeout=2")


# ---------------------------------------------------------------- the schemes that use it
@pytest.mark.parametrize(
    ("module", "opener", "cls", "url"),
    [
        ("memristor_hil.drivers.serial", "open_serial", "SerialCrossbar", "serial:///dev/null"),
        ("memristor_hil.drivers.visa", "open_visa", "VisaCrossbar", "visa://TCPIP::h::1::SOCKET"),
    ],
)
@pytest.mark.parametrize(("word", "expected"), [("on", True), ("off", False), ("yes", True)])
def test_monitor_and_takeover_words_mean_the_same_in_serial_and_visa(
    module, opener, cls, url, word, expected
):
    import importlib

    mod = importlib.import_module(module)
    with mock.patch.object(mod, cls) as crossbar:
        getattr(mod, opener)(f"{url}?monitor={word}&takeover={word}")
    kwargs = crossbar.call_args.kwargs
    assert kwargs["monitor"] is expected and kwargs["takeover"] is expected


@pytest.mark.parametrize(
    ("module", "opener", "url"),
    [
        ("memristor_hil.drivers.serial", "open_serial", "serial:///dev/null?monitor=enabled"),
        ("memristor_hil.drivers.visa", "open_visa", "visa://TCPIP::h::1::SOCKET?monitor=enabled"),
    ],
)
def test_a_word_outside_the_vocabulary_is_refused_before_anything_opens(module, opener, url):
    import importlib

    mod = importlib.import_module(module)
    with pytest.raises(ValueError, match="monitor='enabled'"):
        getattr(mod, opener)(url)


def test_the_emulator_and_record_options_share_the_vocabulary():
    from memristor_hil.emulator.url import model_from_options

    from memristor_hil.lab.record_policy import take_record_option

    assert model_from_options({"reset": "off"}).reset is False
    assert model_from_options({"reset": "ON"}).reset is True
    with pytest.raises(ValueError, match="option reset='maybe'.*not a boolean"):
        model_from_options({"reset": "maybe"})
    assert take_record_option("x://?record=off", None) == ("x://", False)
    assert take_record_option("x://?record=", None) == ("x://", True)
    assert take_record_option("x://?record=runs/a.sqlite", None) == ("x://", "runs/a.sqlite")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("matrix=M&rows=2&cols=2&timeout=soon", "bad option timeout='soon' for smu://"),
        ("matrix=M&rows=2&cols=2&speed=9", r"unknown smu:// options \['speed'\]"),
        ("rows=2&cols=2", "names no matrix"),
    ],
)
def test_smu_reads_its_options_through_the_same_parser(query, message):
    from memristor_hil.drivers import smu

    with mock.patch.object(smu, "SmuMatrixCrossbar") as crossbar:
        with pytest.raises(ValueError, match=message):
            smu.open_smu(f"smu://TCPIP::h::1::SOCKET?{query}")
    crossbar.assert_not_called()


def test_smu_passes_only_the_options_given_so_the_drivers_defaults_hold():
    from memristor_hil.drivers import smu

    with mock.patch.object(smu, "SmuMatrixCrossbar") as crossbar:
        smu.open_smu("smu://TCPIP::h::1::SOCKET?matrix=M&rows=2&cols=3&nplc=2")
    args, kwargs = crossbar.call_args
    assert args[:2] == ("TCPIP::h::1::SOCKET", "M")
    assert kwargs == {"backend": "@py", "limits": None, "nplc": 2.0}


def test_limit_options_narrow_the_default_and_refuse_bad_text_or_bad_limits():
    from memristor_hil.pulses import SafetyLimits
    from memristor_hil.url_options import read_options_and_limits

    default = SafetyLimits(v_min=-1.5, v_max=1.5, width_min=1e-7, width_max=1e-3)
    fields = {"rows": Option(int)}
    got = read_options_and_limits("arc9", {"v_max": "1.2", "max_pulses": "7"}, fields, default)
    assert got == {"limits": SafetyLimits(-1.5, 1.2, 1e-7, 1e-3, max_pulses=7)}
    assert read_options_and_limits("arc9", {"rows": "4"}, fields, default)["limits"] is default
    mine = SafetyLimits(v_min=-1.0, v_max=1.0, width_min=1e-6, width_max=1e-4)
    assert (
        read_options_and_limits("arc9", {"limits": mine}, {"limits": Option(object)}, default)[
            "limits"
        ]
        is mine
    )
    with pytest.raises(ValueError, match=r"v_max='abc' for arc9://"):
        read_options_and_limits("arc9", {"v_max": "abc"}, fields, default)
    with pytest.raises(ValueError, match=r"arc9:// safety-limit options .*v_min"):
        read_options_and_limits("arc9", {"v_min": "2"}, fields, default)
