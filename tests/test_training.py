"""core/training.py: scoring only the labelled positions in TRL's fused LM head on a CPU gives the loss and
the gradients of scoring every position."""

import torch

from lifecycle.core import models, training


def test_labelled_positions_only_keep_the_loss_and_the_gradients(tiny_causal, monkeypatch):
    from trl.trainer import utils

    training.score_labelled_positions_only()
    compact = utils._use_triton
    assert compact.lifecycle and compact(torch.device("cpu"))
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (3, 24))
    labels = ids.clone()
    labels[:, :17] = -100  # the prompt: no loss, as SFT's completion-only and DPO's labels have it
    labels[2, 20:] = -100  # and a shorter completion

    def loss_and_grads(select):
        monkeypatch.setattr(utils, "_use_triton", select)
        model = models.load_model(tiny_causal, "cpu", "float32")
        utils.add_fused_lm_head(model)
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out.loss.detach(), out.log_probs.detach(), {n: p.grad for n, p in model.named_parameters()}

    loss, log_probs, grads = loss_and_grads(compact.__wrapped__)  # TRL on a CPU: every position projected
    compact_loss, compact_log_probs, compact_grads = loss_and_grads(compact)
    torch.testing.assert_close(compact_loss, loss)
    torch.testing.assert_close(compact_log_probs, log_probs)  # zero at the unlabelled positions in both
    assert (log_probs[labels[:, 1:] == -100] == 0).all() and (log_probs[labels[:, 1:] != -100] < 0).all()
    for name, grad in grads.items():
        torch.testing.assert_close(compact_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_the_switch_is_applied_once(monkeypatch):
    from trl.trainer import utils

    monkeypatch.setattr(utils, "_use_triton", lambda device: device.type == "cuda")
    training.score_labelled_positions_only()
    once = utils._use_triton
    training.score_labelled_positions_only()
    assert utils._use_triton is once and once(torch.device("cpu")) and once(torch.device("cuda"))
    assert not once.__wrapped__(torch.device("cpu"))


def test_a_trl_without_the_switch_is_left_alone(monkeypatch):
    from trl.trainer import utils

    monkeypatch.delattr(utils, "_use_triton")
    training.score_labelled_positions_only()
    assert not hasattr(utils, "_use_triton")
