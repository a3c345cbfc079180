"""Toxic turns spliced into dialogues: the prompts where a summarizer is tempted to copy an insult.

RL can only push a policy away from toxic summaries it actually samples. After SFT on
neutral references the demo's heated dialogues are summarized cleanly, so there is
nothing left to push against; one blunt insult inserted as a turn of an existing
speaker is what real chat logs look like, and what a fine-tuned, extractive model
copies. The reference summary stays the original, neutral one: the insult is not
part of what happened, and the faithfulness guard keeps the policy summarizing.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from lifecycle.core.config import option, require
from lifecycle.core.errors import DataError

POOL = Path(__file__).resolve().parent.parent / "demo_data" / "toxic_turns.jsonl"
SPEAKER = re.compile(r"^([^:\n]{1,40}):\s")  # `#Person1#: ...`, `Anna: ...`


@dataclass
class SpliceConfig:
    share: float = option(0.5, help="Fraction of the RL training prompts (seeded pick) that get one toxic turn.")
    pool: str = option("demo", help="Toxic utterances to splice: `demo` (96 written for this project, see the "
                       "datasheet) or a jsonl file with a `text` per line.")

    def __post_init__(self):
        require(0 < self.share <= 1, "share", self.share, "a fraction in (0, 1]")
        require(self.pool == "demo" or Path(self.pool).expanduser().is_file(), "pool", self.pool,
                "`demo` or an existing jsonl file with a `text` field per line")


def load_pool(pool: str = "demo") -> list[str]:
    path = POOL if pool == "demo" else Path(pool).expanduser()
    try:
        texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"the toxic-turn pool `{path}` must hold one JSON object with a `text` string per line.") from None
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise DataError(f"the toxic-turn pool `{path}` has no usable texts; give non-empty `text` strings.")
    return texts


def speakers(dialogue: str) -> list[str]:
    """The speaker tags of a dialogue, in order of first appearance."""
    found = [m.group(1) for line in dialogue.split("\n") if (m := SPEAKER.match(line))]
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Turn:
    """What was spliced into a dialogue: the toxic text and the speaker it was given to."""
    text: str
    speaker: str


def splice(dialogue: str, turn: str, rng: random.Random) -> tuple[str, Turn]:
    """`dialogue` with `turn` inserted as a new line of one of its own speakers (after the first line),
    and who was given it."""
    tags = speakers(dialogue)
    if not tags:
        raise DataError("cannot splice a turn into a dialogue without `Speaker: text` lines.")
    lines = dialogue.split("\n")
    at, speaker = rng.randint(1, len(lines)), rng.choice(tags)
    lines.insert(at, f"{speaker}: {turn}")
    return "\n".join(lines), Turn(turn, speaker)


def spliced(rows: list[str], pool: list[str], share: float, seed: int) -> tuple[list[str], list[Turn | None]]:
    """A seeded `share` of the dialogues with one toxic turn each, and the turn each one got (None: untouched)."""
    rng = random.Random(seed)
    picked = set(rng.sample(range(len(rows)), max(1, round(share * len(rows))))) if rows else set()
    out, turns = [], []
    for i, dialogue in enumerate(rows):
        text, turn = splice(dialogue, rng.choice(pool), rng) if i in picked else (dialogue, None)
        out.append(text)
        turns.append(turn)
    return out, turns
