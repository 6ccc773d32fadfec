"""``python -m benchmarks quality-merge``: a study run in pieces gives the table of the whole study."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmarks.quality_merge import main, merge
from benchmarks.quality_report import markdown, summary

STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "quality-cpu-backbone-x2.json"


def _split_by_seed(results: dict) -> list[dict]:
    """The study as if each seed had been its own invocation."""
    parts = []
    for seed in results["settings"]["seeds"]:
        part = copy.deepcopy(results)
        part["runs"] = [r for r in results["runs"] if r["seed"] == seed]
        part["settings"]["seeds"] = [seed]
        part["tag"] = f"seed{seed}"
        part["wall_s"] = results["wall_s"] / 2
        parts.append(part)
    return parts


@pytest.fixture
def study() -> dict:
    return json.loads(STUDY.read_text())


def test_merging_the_seeds_of_a_study_gives_its_table(study) -> None:
    merged = merge(_split_by_seed(study))
    assert summary(merged) == summary(study)
    assert merged["settings"]["seeds"] == study["settings"]["seeds"]
    assert merged["wall_s"] == pytest.approx(study["wall_s"])
    table = [line for line in markdown(merged).splitlines() if line.startswith("| fno (")]
    assert table == [line for line in markdown(study).splitlines() if line.startswith("| fno (")]


def test_a_recipe_from_another_part_joins_the_table(study) -> None:
    wfno, fno = copy.deepcopy(study), copy.deepcopy(study)
    wfno["runs"] = [r for r in study["runs"] if r["recipe"] == "w-fnolike"]
    wfno["settings"]["recipes"], wfno["recipes"] = ["w-fnolike"], {"w-fnolike": study["recipes"]["w-fnolike"]}
    fno["runs"] = [r for r in study["runs"] if r["recipe"] == "fno"]
    fno["settings"]["recipes"], fno["recipes"] = ["fno"], {"fno": study["recipes"]["fno"]}
    merged = merge([fno, wfno])
    assert merged["settings"]["recipes"] == ["fno", "w-fnolike"]
    assert {r["recipe"]: r for r in summary(merged)} == {r["recipe"]: r for r in summary(study)}


@pytest.mark.parametrize("key, value", [("images", 64000), ("n_fid", 500), ("compute_of", "unet"),
                                        ("overrides", ["optim.lr=1e-3"])])
def test_parts_of_different_protocols_do_not_join(study, key, value) -> None:
    a, b = _split_by_seed(study)
    b["settings"][key] = value
    with pytest.raises(ValueError, match=f"has {key}=.*only runs of one protocol"):
        merge([a, b], names=["a.json", "b.json"])


@pytest.mark.parametrize("position", [0, 1])
def test_a_json_of_another_benchmark_is_refused_in_any_position(study, position) -> None:
    parts = _split_by_seed(study)
    parts[position] = {"kind": "speed", "results": []}
    with pytest.raises(ValueError, match=f"{['a.json', 'b.json'][position]} is not a `python -m benchmarks quality`"):
        merge(parts, names=["a.json", "b.json"])


def test_a_run_in_two_parts_is_refused(study) -> None:
    with pytest.raises(ValueError, match="w-fnolike seed 0 is in both a.json and b.json"):
        merge([study, _split_by_seed(study)[0]], names=["a.json", "b.json"])


def test_command_writes_the_report_once_and_never_overwrites(study, tmp_path, capsys) -> None:
    paths = []
    for part in _split_by_seed(study):
        paths.append(tmp_path / f"{part['tag']}.json")
        paths[-1].write_text(json.dumps(part))
    argv = [*map(str, paths), "--out", str(tmp_path / "all"), "--tag", "both", "--no-plot"]
    main(argv)
    written = json.loads((tmp_path / "all" / "quality-cpu-both.json").read_text())
    assert summary(written) == summary(study) and [m["tag"] for m in written["merged_from"]] == ["seed0", "seed1"]
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(argv)
    assert "exists: choose another --tag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(paths[0]), str(tmp_path / "missing.json"), "--out", str(tmp_path), "--tag", "x"])
    assert "cannot read" in capsys.readouterr().err
