"""Data references: demo, local json/jsonl/csv/parquet files, holdout carving, and a
clear error for each class of bad data, before any model loads."""

import json

import pytest

from lifecycle.core import data
from lifecycle.core.config import build
from lifecycle.core.errors import DataError

ROWS = [{"id": f"x{i}", "dialogue": f"#Person1#: hello number {i}\n#Person2#: hi", "summary": f"They greet {i}."}
        for i in range(20)]


def cfg(**kwargs):
    return build(data.DataConfig, kwargs)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_demo_resolves_through_the_json_builder():
    splits = data.load(cfg(path="demo"))
    assert set(splits) == {"train", "validation", "test"}
    assert all(len(ds) > 0 for ds in splits.values())
    assert splits["train"].info.builder_name == "json"


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_files_of_each_format(tmp_path, fmt):
    import pandas as pd

    files = {}
    for split, rows in (("train", ROWS[:10]), ("validation", ROWS[10:15]), ("test", ROWS[15:])):
        path = tmp_path / f"{split}.{fmt}"
        frame = pd.DataFrame(rows)
        {"jsonl": lambda: frame.to_json(path, orient="records", lines=True), "csv": lambda: frame.to_csv(path, index=False),
         "parquet": lambda: frame.to_parquet(path)}[fmt]()
        files[split] = str(path)
    splits = data.load(cfg(path="json" if fmt == "jsonl" else fmt, data_files=files))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [10, 5, 5]


def test_single_file_with_holdout_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", ROWS)
    splits = data.load(cfg(path=path, holdout=0.2, limit={"train": 5}), seed=1)
    assert len(splits["validation"]) == 4 and len(splits["test"]) == 4 and len(splits["train"]) == 5
    ids = [set(splits[s]["id"]) for s in splits]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_numbered_ids_when_there_is_no_id_column(tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", [{k: v for k, v in r.items() if k != "id"} for r in ROWS])
    splits = data.load(cfg(path=path, holdout=0.2, id_column=None))
    assert splits["test"]["id"][0] == "test-0"


@pytest.mark.parametrize("rows, overrides, fragments", [
    (ROWS, {"holdout": 0.0}, ("has no split 'validation', 'test'; it has ['train']", "or data.holdout=0.1")),
    (ROWS, {"holdout": 0.2, "input_column": "text"},
     ("has no column `text`; its columns are ['id', 'dialogue', 'summary']", "data.input_column")),
    ([{**r, "summary": None if i == 3 else r["summary"]} for i, r in enumerate(ROWS)], {"holdout": 0.2},
     ("column `summary` must hold non-empty text, but 1 row(s) do not", "id 'x3', value None")),
    # a mixed-type column is still valid JSON lines, and datasets loads it: the check names the row
    ([{**r, "dialogue": 7} if i == 0 else r for i, r in enumerate(ROWS)], {"holdout": 0.2},
     ("column `dialogue` must hold non-empty text, but 1 row(s) do not", "id 'x0', value 7")),
    ([{**r, "id": "same"} for r in ROWS], {"holdout": 0.2},
     ("ids in column `id` must be unique across splits, but 1 repeat (e.g. ['same'])", "data.id_column=null")),
])
def test_bad_data_is_a_clear_error(tmp_path, rows, overrides, fragments):
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    with pytest.raises(DataError) as err:
        data.load(cfg(path=path, **overrides))
    assert type(err.value) is DataError  # our check's message, not a library's error passed through
    assert all(f in str(err.value) for f in fragments), str(err.value)


def test_missing_files_and_unsupported_formats(tmp_path):
    files = {"train": write_jsonl(tmp_path / "t.jsonl", ROWS), "test": str(tmp_path / "missing.jsonl")}
    with pytest.raises(DataError, match="matches no file"):
        data.load(cfg(path="json", data_files=files))
    with pytest.raises(DataError, match="needs data.data_files"):
        data.load(cfg(path="csv"))
    with pytest.raises(DataError, match="supported local files"):
        data.load(cfg(path=write_jsonl(tmp_path / "x.txt", ROWS)))


def test_empty_split(tmp_path):
    config = cfg(path=write_jsonl(tmp_path / "all.jsonl", ROWS), holdout=0.2)
    splits = data.load(config)
    splits["validation"] = splits["validation"].select([])
    with pytest.raises(DataError, match="split `validation` of `.*all.jsonl` is empty"):
        data.validate(splits, config)
