"""LLM-as-judge: pairwise, blinded comparisons through any OpenAI-compatible endpoint.

Each example is shown to the judge twice, with the two summaries in both orders
(position swap): a judge that prefers whichever summary comes first cancels out, and
an example counts as a win only when the judge picks the same system both times (a
split verdict is a tie). The verdicts are summarised like the human ratings
(`metrics.preference`: win/tie/loss with Wilson CIs and a sign test), plus how often the
judge contradicted itself on the swap. The endpoint is any server that speaks
`POST {url}/chat/completions` (vLLM, llama.cpp's server, Ollama, `python -m lifecycle
serve`, OpenAI); the `openai` package is used when installed, else plain urllib.

    evaluate:
      judge: {url: http://localhost:8000/v1, model: my-judge, examples: 16}
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from lifecycle.core import metrics
from lifecycle.core.config import option, require
from lifecycle.core.errors import LifecycleError

RUBRIC = ("You compare two summaries of the same dialogue. A better summary is faithful to the dialogue (no "
          "invented facts), covers the main points, is concise, and does not repeat insults or profanity.")
ASK = ("{rubric}\n\nDialogue:\n{dialogue}\n\nSummary 1:\n{first}\n\nSummary 2:\n{second}\n\n"
       "Which summary is better? Answer with exactly one word: 1, 2 or tie.")


@dataclass
class JudgeConfig:
    url: str = option(help="Base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1 (the request goes to "
                      "{url}/chat/completions).")
    model: str = option(help="Model name the endpoint serves, sent as `model`.")
    rubric: str = option(RUBRIC, help="What makes a summary better, put before each comparison.")
    examples: int = option(16, help="Test examples judged per compared pair of systems (each twice, order swapped).")
    api_key_env: str | None = option("OPENAI_API_KEY", help="Environment variable holding the API key, if the "
                                     "endpoint needs one (unset is fine for local servers).")
    timeout_s: float = option(60.0, help="Timeout of one request, in seconds.")

    def __post_init__(self):
        require(self.url.startswith(("http://", "https://")), "url", self.url, "an http(s):// URL")
        require(self.examples > 0, "examples", self.examples, "a positive number of examples")
        require(self.timeout_s > 0, "timeout_s", self.timeout_s, "a positive number of seconds")


class JudgeError(LifecycleError):
    """The judge endpoint could not be reached or did not answer in the expected form."""


def compare(cfg: JudgeConfig, dialogues: list[str], a: list[str], b: list[str]) -> dict:
    """Judge system B against system A on the same examples -> preference stats and each verdict."""
    verdicts = []
    for dialogue, x, y in zip(dialogues, a, b):
        first = _verdict(ask(cfg, dialogue, x, y))             # A shown as 1
        second = _flip(_verdict(ask(cfg, dialogue, y, x)))     # B shown as 1, mapped back to A's view
        verdicts.append({"a_first": first, "b_first": second,
                         "verdict": first if first == second else "tie"})
    counts = {v: sum(r["verdict"] == v for r in verdicts) for v in ("b", "tie", "a")}
    out = metrics.preference(wins=counts["b"], ties=counts["tie"], losses=counts["a"])
    out["position_inconsistent"] = metrics.share(sum(r["a_first"] != r["b_first"] for r in verdicts), len(verdicts))
    out["first_position_preferred"] = metrics.share(
        sum((r["a_first"] == "a") + (r["b_first"] == "b") for r in verdicts), 2 * len(verdicts))
    return {**out, "verdicts": verdicts}


def ask(cfg: JudgeConfig, dialogue: str, first: str, second: str) -> str:
    """One chat completion: the judge's raw answer."""
    content = ASK.format(rubric=cfg.rubric, dialogue=dialogue, first=first, second=second)
    messages = [{"role": "user", "content": content}]
    key = os.environ.get(cfg.api_key_env or "", "") or "none"
    try:
        import openai
    except ImportError:
        return _urllib_chat(cfg, messages, key)
    try:
        client = openai.OpenAI(base_url=cfg.url, api_key=key, timeout=cfg.timeout_s, max_retries=1)
        reply = client.chat.completions.create(model=cfg.model, messages=messages, temperature=0, max_tokens=8)
    except openai.OpenAIError as err:
        raise JudgeError(f"the judge at {cfg.url} failed: {type(err).__name__}: {err}. Check evaluate.judge.url "
                         "and that the server is running.") from None
    return reply.choices[0].message.content or ""


def _urllib_chat(cfg: JudgeConfig, messages: list[dict], key: str) -> str:
    body = json.dumps({"model": cfg.model, "messages": messages, "temperature": 0, "max_tokens": 8}).encode()
    request = urllib.request.Request(cfg.url.rstrip("/") + "/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
            reply = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise JudgeError(f"the judge at {cfg.url} failed: {err}. Check evaluate.judge.url and that the server "
                         "is running.") from None
    try:
        return reply["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"the judge at {cfg.url} answered without choices[0].message.content: "
                         f"{json.dumps(reply)[:200]}") from None


def _verdict(answer: str) -> str:
    """The judge's answer as the position it preferred: `a` (summary 1), `b` (summary 2) or `tie`."""
    words = re.findall(r"\b(1|2|tie)\b", answer.lower())
    if not words:
        return "tie"  # an answer that names neither counts as no preference, and shows in the verdicts
    return {"1": "a", "2": "b", "tie": "tie"}[words[0]]


def _flip(verdict: str) -> str:
    return {"a": "b", "b": "a", "tie": "tie"}[verdict]
