"""The built-in demo data: sizes, splits without near-duplicates, field types, the
heated (detox) share per split, and a balanced toxicity probe set."""

import itertools
import json
import re

import pytest

from lifecycle.core.data import DEMO_DIR

SPLITS = ("train", "validation", "test")
PROFANITY = re.compile(r"\b(fuck\w*|shit\w*|bullshit|asshole|idiot|moron|bastard|crap|damn|stupid|useless|pathetic|jerk|shut up|piss off)\b", re.I)


@pytest.fixture(scope="module")
def rows():
    return {s: [json.loads(line) for line in (DEMO_DIR / "dialogues" / f"{s}.jsonl").read_text().splitlines()]
            for s in SPLITS}


@pytest.fixture(scope="module")
def probe():
    return [json.loads(line) for line in (DEMO_DIR / "toxicity_probe.jsonl").read_text().splitlines()]


def test_sizes_and_topics(rows):
    assert len(rows["train"]) >= 320 and len(rows["validation"]) >= 40 and len(rows["test"]) >= 40
    assert len({r["topic"] for split in rows.values() for r in split}) >= 40


def test_fields_and_format(rows):
    for r in itertools.chain(*rows.values()):
        assert set(r) == {"id", "topic", "heated", "dialogue", "summary"}
        assert isinstance(r["heated"], bool) and all(isinstance(r[k], str) for k in ("id", "topic", "dialogue", "summary"))
        turns = r["dialogue"].split("\n")
        assert 4 <= len(turns) <= 20 and all(re.match(r"#Person\d#: \S", t) for t in turns), r["id"]
        assert "#Person" in r["summary"] and 1 <= r["summary"].count(". ") + 1 <= 4, r["id"]
    ids = [r["id"] for r in itertools.chain(*rows.values())]
    assert len(ids) == len(set(ids))


def test_heated_share_per_split_and_neutral_references(rows):
    for split, items in rows.items():
        heated = [r for r in items if r["heated"]]
        assert len(heated) / len(items) >= 0.25, split
        assert all(PROFANITY.search(r["dialogue"]) for r in heated), "a heated dialogue holds profanity to copy"
    assert not [r["id"] for r in itertools.chain(*rows.values()) if PROFANITY.search(r["summary"])]


def test_no_near_duplicates_across_splits(rows):
    def shingles(text):
        words = re.findall(r"[a-z']+", text.lower())
        return {tuple(words[i:i + 5]) for i in range(len(words) - 4)}

    sets = {s: [shingles(r["dialogue"]) for r in items] for s, items in rows.items()}
    for a, b in itertools.combinations(SPLITS, 2):
        worst = max(len(x & y) / len(x | y) for x in sets[a] for y in sets[b])
        assert worst < 0.05, (a, b, worst)  # the datasheet's bound


def test_probe_set_is_balanced_with_hard_cases(probe):
    assert len(probe) >= 300
    toxic = sum(r["toxic"] for r in probe)
    assert abs(toxic - len(probe) / 2) <= 0.05 * len(probe)
    kinds = {(r["toxic"], r["kind"]) for r in probe}
    assert {(0, "hard_negative"), (1, "hard_positive"), (0, "plain"), (1, "plain")} == kinds
    assert len({r["text"].lower() for r in probe}) == len(probe)


def test_demo_loads_through_the_data_layer():
    from lifecycle.core.config import build
    from lifecycle.core.data import DataConfig, load

    splits = load(build(DataConfig, {}))
    assert [len(splits[s]) for s in SPLITS] == [336, 66, 78]
