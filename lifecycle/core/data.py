"""Dataset references and validation.

`data.path` is `demo` (the dialogue set shipped in the package), a builder name
(`json`, `csv`, `parquet`) with `data_files`, a local file or folder, or a hub
dataset id. All of them go through `datasets.load_dataset`, and every split the
run uses is checked before any model loads. Rows may be input/target columns, chat
conversations or instruction data (`data.format`, see `formats`): each is normalised
here into the input and target columns that every stage reads.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lifecycle.core import formats
from lifecycle.core.config import option, require
from lifecycle.core.errors import DataError

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_data"
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_announced: set = set()  # (path, format) detections already said in this process: every stage loads the data


@dataclass
class DataConfig:
    path: str = option("demo", help="`demo` (built-in dialogues), a builder (json, csv, parquet) with data_files, "
                       "a local file or folder, or a hub dataset id.")
    data_files: dict[str, str] | None = option(None, help="Split name -> file or glob, for a builder path, "
                                               "e.g. {train: data/train.jsonl, test: data/test.jsonl}.")
    name: str | None = option(None, help="Configuration name of a hub dataset, if it has several.")
    format: Literal["auto", "columns", "messages", "sharegpt", "alpaca", "prompt_completion"] = option(
        "auto", help="What a row looks like. columns: input_column -> target_column; messages: a `messages` list of "
        "{role: system/user/assistant, content}, the last assistant turn the target and the turns before it the "
        "prompt (SFT trains every assistant turn); sharegpt: the same as `conversations` of {from: system/human/gpt, "
        "value}; alpaca: `instruction` + optional `input` -> `output`; prompt_completion: TRL's `prompt` -> "
        "`completion` text. Every format but columns carries its own instruction, so the prompt templates do not "
        "apply. auto: the first of these whose columns the data has (said once when it runs).")
    input_column: str = option("dialogue", help="Column holding the model input (the dialogue); with another "
                               "data.format, the column the rows' prompt text is written to.")
    target_column: str = option("summary", help="Column holding the reference output (the summary); with another "
                                "data.format, the column the rows' target text is written to.")
    id_column: str | None = option("id", help="Column of unique example ids; null numbers the rows instead.")
    slice_column: str | None = option(None, help="Boolean column marking a slice that evaluate and rlhf also "
                                      "report on its own (the demo's `heated` dialogues); null for none.")
    train_split: str = option("train", help="Split used for few-shot examples and training.")
    validation_split: str = option("validation", help="Split used for model selection, prompt search and eval loss.")
    test_split: str = option("test", help="Held-out split used only by evaluate, rlhf's before/after and quantize.")
    holdout: float = option(0.0, help="For data with only a train split: carve this fraction of it (seeded) "
                            "into each missing validation/test split. 0 means every split must exist.")
    limit: dict[str, int] = option({}, help="Keep the first N rows of a split, e.g. {train: 64} for a quick run.")
    overlong: Literal["error", "truncate_left", "truncate_right"] = option(
        "error", help="Inputs that leave less than scope.max_new_tokens of a candidate's context: error (scope stops, "
        "naming them), or truncate_left / truncate_right: cut the input's tokens from that side until the prompt fits, "
        "in every stage that builds prompts (scope reports how many). Training examples follow "
        "finetune.training.max_length.")

    def __post_init__(self):
        require(self.path != "", "path", self.path, "`demo`, a builder name, a local path or a hub id")
        require(0.0 <= self.holdout < 0.5, "holdout", self.holdout, "a fraction in [0, 0.5)")
        for split, n in self.limit.items():
            require(n > 0, f"limit.{split}", n, "a positive number of rows")
        require(self.input_column != self.target_column, "target_column", self.target_column,
                "a column other than input_column")

    @property
    def splits(self) -> dict[str, str]:
        return {"train": self.train_split, "validation": self.validation_split, "test": self.test_split}


def load(cfg: DataConfig, seed: int = 0):
    """Load, complete (holdout) and validate the configured splits -> DatasetDict keyed train/validation/test."""
    from datasets import DatasetDict

    from lifecycle.core import prompts

    prompts.set_overlong(cfg.overlong)  # every stage's prompts follow the run's policy for inputs that cannot fit
    raw = _load_raw(cfg)
    raw = _carve_holdout(raw, cfg, seed)
    missing = [name for name in cfg.splits.values() if name not in raw]
    if missing:
        raise DataError(f"dataset `{cfg.path}` has no split {', '.join(repr(m) for m in missing)}; it has "
                        f"{sorted(raw)}. Set data.train_split / data.validation_split / data.test_split to "
                        "existing splits, or data.holdout=0.1 to carve the missing ones from train.")
    splits = DatasetDict({role: raw[name] for role, name in cfg.splits.items()})
    for role, name in cfg.splits.items():
        splits[role] = first(splits[role], cfg.limit.get(name))
    if cfg.id_column is None:
        for role in splits:
            splits[role] = splits[role].add_column("id", [f"{role}-{i}" for i in range(len(splits[role]))])
    splits = normalise(splits, cfg)
    validate(splits, cfg)
    return splits


def first(ds, n: int | None):
    """The first `n` rows of a split (every row when `n` is 0, None or more than it has)."""
    return ds.select(range(min(n, len(ds)))) if n else ds


def normalise(splits, cfg: DataConfig, run_data: bool = True):
    """The splits with each row's input and target text in data.input_column / data.target_column, whatever
    data.format the rows have (auto: detected from the first split, and said once). Chat rows' turns go to
    the prompts module, which renders them with the model's chat template: for the run's own data
    (`run_data`) they replace what an earlier load left there, for an extra evaluation set they are added."""
    from lifecycle.core import prompts

    fmt = cfg.format
    if fmt == "auto":
        # Nothing matching reads as columns, so `validate` names the missing input/target columns.
        columns = next(iter(splits.values())).column_names
        fmt = formats.detect(columns, cfg.input_column, cfg.target_column) or "columns"
        if (cfg.path, fmt) not in _announced:
            _announced.add((cfg.path, fmt))
            print(f"[lifecycle] data: detected format `{fmt}` in `{cfg.path}` "
                  f"({formats.describe(fmt, cfg.input_column, cfg.target_column)}); set data.format to choose another")
    conversations = {}
    for role in splits:
        where = f"split `{cfg.splits.get(role, role)}` of `{cfg.path}`"
        splits[role], found = formats.normalise(splits[role], fmt, cfg.input_column, cfg.target_column,
                                                cfg.id_column or "id", where)
        conversations.update(found)
    if run_data:
        prompts.set_data_format(formats.own_instruction(fmt), conversations)
    else:
        prompts.add_conversations(conversations)
    return splits


def validate(splits, cfg: DataConfig) -> None:
    """Clear errors for data that would break a stage later: columns, types, emptiness, ids."""
    id_column = cfg.id_column or "id"
    seen: Counter = Counter()
    for role, ds in splits.items():
        where = f"split `{cfg.splits[role]}` of `{cfg.path}`"
        if len(ds) == 0:
            raise DataError(f"{where} is empty. Point data.{role}_split to a split with examples, or fix the files.")
        for column in (cfg.input_column, cfg.target_column, id_column, *([cfg.slice_column] if cfg.slice_column else [])):
            if column not in ds.column_names:
                raise DataError(f"{where} has no column `{column}`; its columns are {ds.column_names}. Set "
                                "data.input_column / data.target_column / data.id_column to the right names, or "
                                "data.format if the rows are chat or instruction data.")
        for column in (cfg.input_column, cfg.target_column):
            bad = [i for i, v in enumerate(ds[column]) if not isinstance(v, str) or not v.strip()]
            if bad:
                raise DataError(f"{where}: column `{column}` must hold non-empty text, but {len(bad)} row(s) do not "
                                f"(first: row {bad[0]}, id {ds[bad[0]][id_column]!r}, value {ds[bad[0]][column]!r}). "
                                "Fix or drop those rows.")
        if cfg.slice_column and not all(isinstance(v, bool) for v in ds[cfg.slice_column]):
            raise DataError(f"{where}: slice column `{cfg.slice_column}` must hold true/false in every row. "
                            "Fix the data or set data.slice_column=null.")
        seen.update(str(v) for v in ds[id_column])
    dupes = [k for k, n in seen.items() if n > 1]
    if dupes:
        raise DataError(f"ids in column `{id_column}` must be unique across splits, but {len(dupes)} repeat "
                        f"(e.g. {dupes[:3]}). Deduplicate the data, or set data.id_column=null to number the rows.")


def _load_raw(cfg: DataConfig):
    from datasets import load_dataset

    path, data_files = cfg.path, cfg.data_files
    if path == "demo":
        path, data_files = "json", {s: str(DEMO_DIR / "dialogues" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    elif Path(path).expanduser().is_file():
        file = Path(path).expanduser()
        if file.suffix not in BUILDERS:
            raise DataError(f"data.path `{cfg.path}` is a {file.suffix or 'suffix-less'} file; supported local files "
                            f"are {sorted(BUILDERS)}.")
        path, data_files = BUILDERS[file.suffix], {"train": str(file)}
    elif path in set(BUILDERS.values()) and not data_files:
        raise DataError(f"data.path `{path}` needs data.data_files naming the file of each split, "
                        f"e.g. data.data_files={{train: data/train.{path}}}.")
    if data_files:
        for split, pattern in data_files.items():
            files = glob.glob(os.path.expanduser(pattern))
            if not files:
                raise DataError(f"data.data_files.{split} = `{pattern}` matches no file. Fix the path (relative "
                                f"paths start from the folder you run the command in: {Path.cwd()}).")
            for file in files:
                _check_not_empty(Path(file), "data.path" if cfg.data_files is None else f"data.data_files.{split}")
    try:
        return load_dataset(path, name=cfg.name, data_files=data_files)
    except Exception as err:  # datasets raises many types (hub, parsing, casting)
        raise DataError(f"could not load dataset `{cfg.path}`: {type(err).__name__}: {' '.join(str(err).split())[:300]}. Without network "
                        "access only `demo` and local files work; check the path, the file format and that every "
                        "row has the same fields.") from None


def _check_not_empty(file: Path, key: str) -> None:
    """An empty file is a clear error here; `datasets` would fail on it with a bare `StopIteration`."""
    if file.is_file() and not file.read_bytes()[:4096].strip():
        raise DataError(f"{key}: the file `{file}` is empty (no rows). Fill it with one example per row "
                        "(jsonl: one JSON object per line), or point the option to the right file.")


def _carve_holdout(raw, cfg: DataConfig, seed: int):
    if cfg.holdout == 0 or cfg.train_split not in raw:
        return raw
    rest = raw[cfg.train_split]
    for split in (cfg.validation_split, cfg.test_split):
        if split not in raw:
            try:
                parts = rest.train_test_split(test_size=cfg.holdout, seed=seed)
            except ValueError:  # datasets: "the resulting train set will be empty", and the like
                raise DataError(f"data.holdout={cfg.holdout} cannot carve split `{split}` out of the {len(rest)} "
                                f"row(s) left in split `{cfg.train_split}` of `{cfg.path}`: every carved split "
                                "needs at least one row and train must keep one (3 rows at the least). Add rows, "
                                "or give the missing splits as files with data.data_files.") from None
            rest, raw[split] = parts["train"], parts["test"]
    raw[cfg.train_split] = rest
    return raw
