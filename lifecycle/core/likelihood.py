"""How likely a model finds a text: the negative log-likelihood behind perplexity and the forgetting check.

`completion_nll` scores only the completion (the reference summary) given the prompt the
model is used with, the way a completion-only fine-tune is trained: labels are -100 on the
prompt and on padding, so the prompt's tokens cost nothing. `text_nll` scores every token of
a plain text after the first (general text, for a model that may have forgotten English).
Both run in length-sorted batches under `torch.inference_mode`. Causal models are
left-padded with explicit position ids, so a batched row scores exactly as it would alone,
and only the logits of the scored tail are materialised (a 262k-word vocabulary times a
whole prompt would not fit).

NLL is in nats; perplexity = exp(summed NLL / summed tokens).
"""

from __future__ import annotations

import numpy as np

from lifecycle.core.prompts import tokenize


def completions(tokenizer, references: list[str]) -> list[str]:
    """The completion text the model would produce for each reference: the reference itself after a chat
    template's generation prompt, `" " + reference` after a plain prompt (as fine-tuning trains it)."""
    return list(references) if tokenizer.chat_template else [" " + r for r in references]


def completion_nll(model, tokenizer, prompts: list[str], completions_: list[str], batch_size: int = 8
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the summed NLL of the completion's tokens given the prompt, and how many tokens were scored.

    The prompt is tokenized as for generation (`prompts.tokenize`), the completion without special
    tokens, and the two are joined: the model is scored on exactly the tokens it would have to emit
    after that prompt. A completion that would overflow the model's context is cut to fit.
    """
    if len(prompts) != len(completions_):
        raise ValueError(f"{len(prompts)} prompts for {len(completions_)} completions")
    prompt_ids = tokenize(tokenizer, prompts)["input_ids"]
    target_ids = tokenizer(completions_, add_special_tokens=False)["input_ids"]
    if model.config.is_encoder_decoder:
        return _seq2seq_nll(model, tokenizer, prompt_ids, target_ids, batch_size)
    context = _context(model, tokenizer)
    seqs, starts = [], []
    for p, t in zip(prompt_ids, target_ids):
        seqs.append((list(p) + list(t))[:context])
        starts.append(len(p))
    return _causal_nll(model, tokenizer, seqs, starts, batch_size)


def text_nll(model, tokenizer, texts: list[str], batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per text: the summed NLL of every token after the first (with the tokenizer's own special
    tokens, e.g. BOS), and the number of tokens scored."""
    if model.config.is_encoder_decoder:  # a decoder conditioned on an empty input
        return completion_nll(model, tokenizer, [""] * len(texts), list(texts), batch_size)
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    context = _context(model, tokenizer)
    return _causal_nll(model, tokenizer, [list(i)[:context] for i in ids], [1] * len(ids), batch_size)


def _causal_nll(model, tokenizer, seqs: list[list[int]], starts: list[int], batch_size: int):
    """Score seqs[i][j] for every j >= max(starts[i], 1) given seqs[i][:j]."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, counts = np.zeros(len(seqs)), np.zeros(len(seqs), dtype=np.int64)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            rows = [i for i in order[b:b + batch_size]]
            width = max(len(seqs[i]) for i in rows)
            scored = [max(len(seqs[i]) - max(starts[i], 1), 0) for i in rows]
            tail = max(max(scored), 1)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            labels = torch.full((len(rows), tail), -100, dtype=torch.long)
            for r, i in enumerate(rows):  # left padding: every row ends at the last column
                ids[r, width - len(seqs[i]):] = torch.tensor(seqs[i])
                mask[r, width - len(seqs[i]):] = 1
                if scored[r]:
                    labels[r, tail - scored[r]:] = torch.tensor(seqs[i][len(seqs[i]) - scored[r]:])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            # logits at column c predict the token at c + 1: keep the `tail` columns before the last one
            inputs = {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device),
                      "position_ids": positions.to(model.device)}
            try:
                out = model(**inputs, logits_to_keep=tail + 1)
            except TypeError:  # a model class without logits_to_keep: every position's logits
                out = model(**inputs)
            logits = out.logits[:, -(tail + 1):-1].float()
            _accumulate(logits, labels.to(logits.device), rows, nll, counts)
    return nll, counts


def _seq2seq_nll(model, tokenizer, prompt_ids, target_ids, batch_size: int):
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, counts = np.zeros(len(prompt_ids)), np.zeros(len(prompt_ids), dtype=np.int64)
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            rows = order[b:b + batch_size]
            width = max(max(len(prompt_ids[i]) for i in rows), 1)
            tail = max(max(len(target_ids[i]) for i in rows), 1)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            labels = torch.full((len(rows), tail), -100, dtype=torch.long)
            for r, i in enumerate(rows):
                if prompt_ids[i]:
                    ids[r, :len(prompt_ids[i])] = torch.tensor(prompt_ids[i])
                mask[r, :max(len(prompt_ids[i]), 1)] = 1
                if target_ids[i]:
                    labels[r, :len(target_ids[i])] = torch.tensor(target_ids[i])
            out = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), labels=labels.to(model.device))
            _accumulate(out.logits.float(), labels.to(out.logits.device), rows, nll, counts)
    return nll, counts


def _accumulate(logits, labels, rows: list[int], nll: np.ndarray, counts: np.ndarray) -> None:
    import torch

    token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    for r, i in enumerate(rows):
        nll[i] = float(token_nll[r].sum())
        counts[i] = int((labels[r] != -100).sum())


def _context(model, tokenizer) -> int:
    from lifecycle.core.models import context_length

    return context_length(model.config, tokenizer) or 1 << 30
