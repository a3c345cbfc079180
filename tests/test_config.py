"""Config: every shipped YAML parses; each class of bad input is rejected with a
message that names the key, the value and what is allowed."""

from pathlib import Path

import pytest

from lifecycle.cli import main as cli_main
from lifecycle.config import Config, load
from lifecycle.core import library_options
from lifecycle.core.config import describe
from lifecycle.core.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
OFFLINE = str(CONFIGS[0].parent / "offline.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    cfg = load(str(path))
    assert isinstance(cfg, Config)
    library_options.check(cfg)  # and PEFT, TRL, bitsandbytes and GenerationConfig accept what it passes them


def test_overrides_win_and_are_typed():
    cfg = load(OFFLINE, ["scope.criteria.min_rougeL=0.3", "data.limit.train=8", "models.candidates=[a/b, c/d]",
                         "scope.criteria.max_quality_drop=1e-3"])
    assert cfg.scope.criteria.min_rougeL == 0.3
    assert cfg.data.limit == {"train": 8}
    assert cfg.models.candidates == ["a/b", "c/d"]
    assert cfg.scope.criteria.max_quality_drop == pytest.approx(0.001)  # YAML 1.1 would read 1e-3 as a string
    strategy = load(OFFLINE, ["finetune.training.eval_strategy=no", "finetune.training.bf16=false"]).finetune.training
    assert strategy["eval_strategy"] == "no" and strategy["bf16"] is False  # `no` is not a boolean


@pytest.mark.parametrize("override, key, fragment", [
    ("scope.criteria.min_rouge=0.3", "scope.criteria.min_rouge", "did you mean `scope.criteria.min_rougeL`"),
    ("modles.device=cpu", "modles", "a known key"),
    ("scope.max_new_tokens=many", "scope.max_new_tokens", "a whole number"),
    ("scope.criteria.min_rougeL=high", "scope.criteria.min_rougeL", "a number"),
    ("models.candidates=SmolLM2-135M-Instruct", "models.candidates", "a list of str"),
    ("models.dtype=float8", "models.dtype", "one of 'auto', 'float32'"),
    ("scope.criteria.min_rougeL=1.5", "scope.criteria.min_rougeL", "between 0 and 1"),
    ("scope.criteria.max_memory_mb=-5", "scope.criteria.max_memory_mb", "positive"),
    ("scope.max_new_tokens=0", "scope.max_new_tokens", "positive"),
    ("data.holdout=0.7", "data.holdout", "[0, 0.5)"),
    ("data.limit.train=0", "data.limit.train", "positive"),
    ("models.device=gpu", "models.device", "cuda:N"),
    ("models.candidates=[]", "models.candidates", "at least one"),
    ("run.name=a/b", "run.name", "plain folder name"),
])
def test_bad_values_name_key_value_and_allowed(override, key, fragment):
    with pytest.raises(ConfigError) as err:
        load(OFFLINE, [override])
    message = str(err.value)
    assert f"`{key}`" in message
    assert fragment in message
    if err.value.key == key.split(".")[0] or not err.value.unknown:
        shown = override.split("=", 1)[1]
        assert shown.strip("[]") in message  # the offending value is quoted back


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load(OFFLINE, ["scope.criteria.min_rougeL"])
    with pytest.raises(ConfigError, match="an existing YAML file"):
        load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load(str(bad))


def test_cli_prints_one_paragraph_and_exits_2(capsys):
    code = cli_main(["scope", "--config", OFFLINE, "scope.criteria.min_rougeL=-1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: config error: `scope.criteria.min_rougeL` = -1")
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("override, key, fragment", [
    ("finetune.training.learning_rate=abc", "finetune.training.learning_rate", "a number"),
    ("finetune.lora.rank=8", "finetune.lora.rank", "a peft.LoraConfig option"),
    ("select.generation.temprature=0.7", "select.generation.temprature", "a GenerationConfig option"),
    ("quantize.bitsandbytes.threshold=6", "quantize.bitsandbytes.threshold", "a BitsAndBytesConfig option"),
])
def test_library_options_are_refused_before_the_stage_runs(tmp_path, capsys, override, key, fragment):
    """Options the libraries check are not checked at load (status stays cheap), but the command that
    would use them refuses them in preflight, before the stage starts (which would first say that its
    upstream stages are missing) and before any model loads."""
    load(OFFLINE, [override])  # loads: PEFT/TRL/bitsandbytes are not imported for this
    stage = key.split(".")[0]
    code = cli_main([stage, "--config", OFFLINE, f"run.root={tmp_path}", override])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: config error: `{key}`") and fragment in err, err
    assert not any(tmp_path.rglob(f"{stage}*"))  # no stage folder, not even a partial one


def test_every_option_has_help():
    rows = describe(Config)
    assert len(rows) > 15
    assert all(help_text for _, _, help_text in rows), [key for key, _, h in rows if not h]


@pytest.mark.parametrize("path", sorted((CONFIGS[0].parent / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.mixed_precision == "bf16" and not config.use_cpu
