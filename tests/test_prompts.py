"""Calibration prompts: the shipped set, the file formats, the held-out split."""
from __future__ import annotations

import csv
import json
import re

import pytest

from conftest import REFERENCE, requires_reference
from optimizer.prompts import DEFAULT_PROMPTS, load_prompts, split_prompts


def test_the_shipped_set_has_100_distinct_prompts():
    prompts = load_prompts()
    assert len(prompts) == 100
    assert len(set(p.lower() for p in prompts)) == 100
    assert all(len(p.split()) >= 4 for p in prompts)
    assert load_prompts(DEFAULT_PROMPTS) == prompts


def test_the_shipped_set_covers_its_categories():
    text = DEFAULT_PROMPTS.read_text()
    sections = [line[2:].strip() for line in text.splitlines() if line.startswith("# ") and len(line.split()) <= 4]
    assert sections == ["people", "animals", "scenes", "text rendering", "counting", "abstract and concepts", "styles"]
    prompts = load_prompts()
    assert sum('"' in p for p in prompts) >= 10  # text rendering asks for quoted words
    numbers = r"\b(two|three|four|five|six|seven|eight|nine|ten|single|pair)\b"
    assert sum(bool(re.search(numbers, p)) for p in prompts) >= 10


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _reference_prompts() -> list[str]:
    folder = REFERENCE / "prompts"
    prompts = load_prompts(folder / "ImageRewardPrompts.txt") + load_prompts(folder / "DrawBench200.txt")
    return prompts + load_prompts(folder / "PartiPrompts.tsv")


@requires_reference
def test_no_prompt_is_taken_from_the_papers_prompt_sets():
    reference = _reference_prompts()
    assert len(reference) > 1800
    def grams(text, n=6):
        w = _words(text)
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}
    reference_words = [set(_words(r)) for r in reference]
    reference_grams = set().union(*(grams(r) for r in reference))
    for prompt in load_prompts():
        assert not grams(prompt) & reference_grams, prompt  # no shared run of six words
        words = set(_words(prompt))
        closest = max(len(words & r) / len(words | r) for r in reference_words)
        assert closest < 0.5, prompt


def test_plain_text_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my prompts\n\n  a cat on a sofa  \n#a comment\na dog\n\n", encoding="utf-8")
    assert load_prompts(path) == ["a cat on a sofa", "a dog"]


def test_partiprompts_style_tsv_uses_the_prompt_column(tmp_path):
    path = tmp_path / "parti.tsv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["Prompt", "Category", "Challenge"])
        writer.writerow(["a tiny robot, watering a plant", "Robots", "Basic"])
        writer.writerow(["", "Empty", "Basic"])
        writer.writerow(['a sign that says "hello"', "Text", "Writing"])
    assert load_prompts(path) == ["a tiny robot, watering a plant", 'a sign that says "hello"']


def test_json_list_of_strings_or_objects(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"id": "1", "prompt": "a red bicycle"}, "a blue kite", {"prompt": "  "}]))
    assert load_prompts(path) == ["a red bicycle", "a blue kite"]
    path.write_text(json.dumps([{"id": "1"}]))
    with pytest.raises(ValueError, match=r"prompts.json: item 0"):
        load_prompts(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"prompts.json: not valid JSON"):
        load_prompts(path)


def test_bad_files_are_named(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match=r"empty.txt holds no prompts"):
        load_prompts(empty)
    no_column = tmp_path / "table.tsv"
    no_column.write_text("Text\tCategory\na cat\tAnimals\n")
    with pytest.raises(ValueError, match=r"table.tsv: .*'Prompt' column \(found columns: Text, Category\)"):
        load_prompts(no_column)
    with pytest.raises(ValueError, match=r"missing.txt does not exist"):
        load_prompts(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    with pytest.raises(ValueError, match=r"binary.txt cannot be read"):
        load_prompts(binary)
    with pytest.raises(ValueError, match=r"cannot be read"):
        load_prompts(tmp_path)  # a folder


def test_split_is_deterministic_disjoint_and_keeps_order():
    prompts = load_prompts()
    calibration, held_out = split_prompts(prompts, 20, seed=3)
    assert len(held_out) == 20 and len(calibration) == 80
    assert set(calibration).isdisjoint(held_out) and set(calibration) | set(held_out) == set(prompts)
    assert calibration == [p for p in prompts if p in set(calibration)]
    assert split_prompts(prompts, 20, seed=3) == (calibration, held_out)
    assert split_prompts(prompts, 20, seed=4)[1] != held_out
    assert split_prompts(prompts, 0.25, seed=3)[1].__len__() == 25
    assert split_prompts(prompts, 0) == (prompts, [])
    with pytest.raises(ValueError, match="at least one must remain"):
        split_prompts(prompts[:3], 3)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_prompts(prompts, 1.5)
