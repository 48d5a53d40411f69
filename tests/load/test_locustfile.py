"""The locustfile's payload generation and its local verifier, against known payloads."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import pytest

from compute.numeric import analyze_numbers
from compute.text import analyze_text
from tests.conftest import ROOT, SEED_ANALYSIS, SEED_PAYLOAD

SEED_RESPONSE = {**SEED_ANALYSIS, "processing_time_ms": 0.4}


@pytest.fixture(scope="module")
def locustfile():
    # Importing locust monkey-patches the standard library with gevent unless told not to; these
    # tests need only the pure functions, and the rest of the test session must stay unpatched.
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    try:
        spec = importlib.util.spec_from_file_location("locustfile_under_test", ROOT / "locustfile.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
    yield module
    sys.modules.pop("locustfile_under_test", None)


def seed_expected(locustfile):
    return locustfile.expected_analysis(SEED_PAYLOAD["numbers"], SEED_PAYLOAD["text"], 1, 1)


def test_seed_example_verifies(locustfile):
    assert locustfile.shape_problems(SEED_RESPONSE) == []
    assert locustfile.analysis_problems(seed_expected(locustfile), SEED_RESPONSE) == []


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("numeric_analysis", "minimum", 1.0000000001),  # exact fields allow no error at all
        ("numeric_analysis", "count", 6),
        ("numeric_analysis", "mean", 3.00000001),  # 3e-9 relative
        ("numeric_analysis", "standard_deviation", 1.58),  # the seed README's rounded value
        ("text_analysis", "character_count", 25),  # the seed README's slip
        ("text_analysis", "sentence_count", 2),
    ],
)
def test_a_wrong_field_is_reported(locustfile, section, name, value):
    response = json.loads(json.dumps(SEED_RESPONSE))
    response[section][name] = value
    problems = locustfile.analysis_problems(seed_expected(locustfile), response)
    assert len(problems) == 1 and f"{section}.{name}" in problems[0]


def test_float_fields_allow_relative_error_below_1e_9(locustfile):
    response = json.loads(json.dumps(SEED_RESPONSE))
    response["numeric_analysis"]["mean"] = 3.0 * (1 + 1e-12)
    response["numeric_analysis"]["standard_deviation"] *= 1 + 5e-10
    assert locustfile.analysis_problems(seed_expected(locustfile), response) == []


def test_sentence_and_paragraph_counts_are_checked_only_when_known(locustfile):
    expected = locustfile.expected_analysis([1.0], "One. Two.")
    assert set(expected["text_analysis"]) == {"word_count", "character_count", "character_count_no_spaces"}
    assert expected["numeric_analysis"]["standard_deviation"] == 0.0  # a single number


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("processing_time_ms"),
        lambda r: r.update(extra=1),
        lambda r: r["numeric_analysis"].update(count=5.0),
        lambda r: r["numeric_analysis"].update(mean="3"),
        lambda r: r["text_analysis"].update(word_count=True),
        lambda r: r["text_analysis"].update(word_count=-1),
        lambda r: r["text_analysis"].pop("paragraph_count"),
        lambda r: r.update(processing_time_ms=-0.1),
        lambda r: r.update(numeric_analysis=[]),
    ],
)
def test_shape_problems_are_found(locustfile, mutate):
    response = json.loads(json.dumps(SEED_RESPONSE))
    mutate(response)
    assert locustfile.shape_problems(response)


def test_non_object_response_is_a_shape_problem(locustfile):
    assert locustfile.shape_problems([1, 2]) == ["response is list, not an object"]


def test_generated_payloads_agree_with_the_service_kernels(locustfile):
    """Bodies are what their expectations say, by the service's own analysis code."""
    sizes = locustfile.parse_sizes("tiny=1:5,small=10:160,medium=2000:3000")
    corpus = locustfile.build_payloads(sizes, variants=2, seed=7)
    for size in sizes:
        bodies = corpus[size.name]
        assert len(bodies) == 2 and bodies[0].body != bodies[1].body
        for payload in bodies:
            doc = json.loads(payload.body)
            assert len(doc["numbers"]) == size.numbers
            assert size.text_chars <= len(doc["text"]) < size.text_chars + 200
            service = {
                "numeric_analysis": {
                    name: getattr(analyze_numbers(doc["numbers"]), name) for name in locustfile.NUMERIC_FIELDS
                },
                "text_analysis": {name: getattr(analyze_text(doc["text"]), name) for name in locustfile.TEXT_FIELDS},
                "processing_time_ms": 1.0,
            }
            assert locustfile.shape_problems(service) == []
            assert locustfile.analysis_problems(payload.expected, service) == []
            assert set(payload.expected["text_analysis"]) == set(locustfile.TEXT_FIELDS)


def test_generation_is_deterministic_per_seed(locustfile):
    sizes = locustfile.parse_sizes("small=10:160")
    first = locustfile.build_payloads(sizes, 1, seed=3)["small"][0].body
    assert first == locustfile.build_payloads(sizes, 1, seed=3)["small"][0].body
    assert first != locustfile.build_payloads(sizes, 1, seed=4)["small"][0].body


def test_generated_text_has_non_ascii_code_points(locustfile):
    payload = locustfile.build_payloads(locustfile.parse_sizes("t=1:20000"), 1, seed=1)["t"][0]
    text = json.loads(payload.body)["text"]
    assert len(text.encode()) > len(text)  # counts are code points, not bytes


@pytest.mark.parametrize(
    ("sizes", "weights", "error"),
    [
        ("small=10", "small=1", "name=numbers:chars"),
        ("small=0:10", "small=1", "positive"),
        ("", "", "no payload sizes"),
        ("small=1:1", "large=1", "unknown payload size"),
        ("small=1:1", "small=-1", "negative"),
        ("small=1:1", "small=0", "add up to zero"),
    ],
)
def test_bad_mix_settings_are_rejected(locustfile, sizes, weights, error):
    with pytest.raises(ValueError, match=error):
        locustfile.parse_weights(weights, locustfile.parse_sizes(sizes))


def test_weights_default_to_zero_for_unnamed_sizes(locustfile):
    sizes = locustfile.parse_sizes(locustfile.DEFAULT_SIZES)
    assert locustfile.parse_weights("small=3", sizes) == {"small": 3.0, "medium": 0.0, "large": 0.0}


def test_probe_paths_are_parsed_and_bad_ones_rejected(locustfile):
    assert locustfile.parse_probe_paths(locustfile.DEFAULT_PROBE_PATHS) == ["/ready", "/metrics"]
    assert locustfile.parse_probe_paths(" /ready ,") == ["/ready"]
    for spec in ("", "ready", "/ready,metrics"):
        with pytest.raises(ValueError, match="probe paths"):
            locustfile.parse_probe_paths(spec)


def documented_options() -> dict[str, str]:
    """docs/load-testing.md's option table: each option with its default as written there."""
    options = {}
    for line in (ROOT / "docs" / "load-testing.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`--"):
            continue
        names = [name.strip(" `") for name in cells[0].split(",")]
        defaults = [default.strip(" `") for default in cells[1].split(", ")]
        options.update(zip(names, defaults, strict=True))
    return options


def test_every_option_is_documented_with_its_default_and_environment_variable(locustfile, monkeypatch):
    for name in [name for name in os.environ if name.startswith("LOCUST_")]:
        monkeypatch.delenv(name)
    parser = argparse.ArgumentParser()
    locustfile.add_arguments(parser)
    defined = {action.option_strings[0]: action for action in parser._actions if action.dest != "help"}
    documented = documented_options()
    assert sorted(documented) == sorted(defined)
    for name, action in defined.items():
        written = documented[name]
        assert (type(action.default)(written) if written != "empty" else "") == action.default, name
        assert f"env LOCUST_{name[2:].upper().replace('-', '_')})" in action.help, name
