"""The LLM judge against a real local endpoint (a stub server in its own process, spoken to over
HTTP): pairwise verdicts, the position swap that removes order bias, and a clear error when the
endpoint is down."""

from __future__ import annotations

import pytest

from lifecycle.core import judge
from lifecycle.core.config import build
from tests.judge_stub import serve

DIALOGUES = ["#Person1#: Hi.\n#Person2#: Hello.", "#Person1#: Late again?\n#Person2#: Sorry.", "#Person1#: Tea?\n#Person2#: Yes."]
SHORT = ["Greeting.", "Late.", "Tea."]
LONG = ["#Person1# and #Person2# greet each other.", "#Person2# apologises to #Person1# for being late.",
        "#Person1# offers tea and #Person2# accepts."]


@pytest.fixture(params=["longer", "first"])
def endpoint(request):
    proc, url = serve(request.param)
    yield request.param, build(judge.JudgeConfig, {"url": url, "model": "stub", "examples": 3})
    proc.terminate()
    proc.wait(10)


def test_pairwise_verdicts_with_position_swap(endpoint):
    mode, cfg = endpoint
    out = judge.compare(cfg, DIALOGUES, SHORT, LONG)
    assert out["n"] == 3 and len(out["verdicts"]) == 3
    if mode == "longer":  # a consistent judge: B (the longer summary) wins every example, in both orders
        assert out["wins"] == 3 and out["win"]["value"] == 1.0 and out["win"]["low"] > 0.4
        assert out["position_inconsistent"]["k"] == 0 and out["first_position_preferred"]["value"] == 0.5
    else:  # pure position bias: the swap turns every verdict into a tie instead of a win for whoever came first
        assert out["ties"] == 3 and out["wins"] == out["losses"] == 0 and out["p_value"] == 1.0
        assert out["position_inconsistent"]["value"] == 1.0 and out["first_position_preferred"]["value"] == 1.0


def test_an_unreachable_judge_is_a_clear_error():
    cfg = build(judge.JudgeConfig, {"url": "http://127.0.0.1:9/v1", "model": "stub", "timeout_s": 2})
    with pytest.raises(judge.JudgeError, match=r"the judge at http://127.0.0.1:9/v1 failed.*evaluate.judge.url"):
        judge.compare(cfg, DIALOGUES[:1], SHORT[:1], LONG[:1])


def test_judge_config_is_validated():
    from lifecycle.core.errors import ConfigError

    with pytest.raises(ConfigError, match="url"):
        build(judge.JudgeConfig, {"url": "localhost:8000", "model": "m"})
