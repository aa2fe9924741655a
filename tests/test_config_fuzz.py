"""Fuzzing the config: any key and value either resolves or is refused in one line, never a
traceback, and ``--dry-run`` writes nothing."""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from dataclasses import fields
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unblur.cli import main
from unblur.config import RULES, SECTIONS, Config, apply_overrides
from unblur.processes.cold import COLD_PROCESSES

KEYS = sorted(f"{sec}.{f.name}" for sec in SECTIONS for f in fields(getattr(Config(), sec)))
NAMES = sorted({str(c) for rule in RULES.values() for c in rule.choices})
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

junk = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any Unicode but lone surrogates
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2, 0.5, 1.0, 1e-300, 1e300, -0.0, 2**63, 2**64]),
)
words = st.sampled_from(["nan", "inf", "-inf", "1e400", "none", "null", "", "true", "false", "1,2", "1,2,3",
                         "(1, 2)", "[1,2]", ",", "0x10", "1_000", "  7 ", "cuda:0", *NAMES])
scalars = st.one_of(numbers, st.booleans(), words, junk)
keys = st.one_of(
    st.sampled_from(KEYS),
    st.builds(lambda sec, key: f"{sec}.{key}", st.sampled_from([*SECTIONS, "trian", "x"]), junk),
    junk,
)


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


set_items = st.lists(
    st.one_of(
        st.builds(lambda k, v: f"{k}={_text(v)}", keys, st.one_of(scalars, st.lists(scalars, max_size=4))),
        st.builds(lambda kind: f"process.kind={kind}", st.sampled_from(COLD_PROCESSES)),  # reach cold options
        junk,  # maybe without "="
    ),
    min_size=1, max_size=4,
)


def _files(root: Path) -> list[tuple[str, float, int]]:
    return sorted((str(p), p.stat().st_mtime, p.stat().st_size) for p in root.rglob("*"))


@FUZZ
@given(items=set_items)
def test_any_set_item_resolves_or_is_refused_in_one_line(items):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        argv = ["train", "--dry-run", "--out", str(root / "run")]
        for item in items:
            argv += ["--set", item]
        out, err = io.StringIO(), io.StringIO()
        here = os.getcwd()
        os.chdir(root)  # a relative path written by mistake would land here
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as e:  # argparse: an item it reads as an option
                    rc = e.code
                    assert rc == 2
        finally:
            os.chdir(here)
        assert rc in (0, 2), err.getvalue()
        if rc == 2 and err.getvalue().startswith("unblur train: error:"):
            assert "\n" not in err.getvalue().strip(), err.getvalue()
        assert _files(root) == []


toml_values = st.recursive(
    st.one_of(numbers, st.booleans(), words, junk, st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(junk, inner, max_size=2)),
    max_leaves=6,
)


@FUZZ
@given(over=st.dictionaries(keys, toml_values, min_size=1, max_size=3))
def test_any_loaded_dict_resolves_or_raises_value_error(over):
    """What ``load_toml`` or a saved config.json can hand ``apply_overrides``: typed values,
    lists, tables."""
    try:
        cfg = apply_overrides(Config(), over)
    except ValueError as e:
        assert "\n" not in str(e)
        return
    assert Config.from_dict(cfg.to_dict()) == cfg  # what resolves is saved and loads again
    for sec in SECTIONS:
        for value in vars(getattr(cfg, sec)).values():
            assert not (isinstance(value, float) and not math.isfinite(value))
