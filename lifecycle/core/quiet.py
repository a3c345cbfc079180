"""Quiet by default: third-party warnings and log chatter are filtered at their source.

A newcomer reads bitsandbytes' "Failed to load CPU gemm_4bit_forward from
kernels-community" or a stream of transformers FutureWarnings as errors of this
project; they are notes for those libraries' own users and developers. So the
CLI silences them once, before anything heavy is imported: warnings filters for
deprecation notes and library UserWarnings, and the libraries' loggers cut to
errors. Nothing is imported to do it: transformers' handler is filtered when
transformers loads, so `status` and `options` never pay for importing it. Progress bars (tqdm, the Trainer's) and the `[lifecycle]` banners stay.

`python -m lifecycle ... --verbose`, or `LIFECYCLE_VERBOSE=1`, shows everything.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings

VERBOSE_ENV = "LIFECYCLE_VERBOSE"
# Loggers cut to errors. Not transformers': its level also decides whether the Trainer
# shows a progress bar (TrainingArguments.disable_tqdm), so its handler is filtered instead.
LOGGERS = ("bitsandbytes", "trl", "peft", "datasets", "accelerate", "huggingface_hub", "torch", "sentence_transformers")
THIRD_PARTY = r"(?!lifecycle)"  # a warnings `module` pattern: any module but ours
HF_LOGGING = "transformers.utils.logging"  # sets up transformers' handler, the one to filter


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def setup(show_all: bool = False) -> None:
    """Filter the noise unless `show_all` or LIFECYCLE_VERBOSE is set; the setting is passed
    on to child processes (quantize's fresh-process check) through the environment."""
    if show_all:
        os.environ[VERBOSE_ENV] = "1"
    if verbose():
        return
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=UserWarning, module=THIRD_PARTY)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # datasets sets its logger's level from this when it is imported, over the one set above
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    if HF_LOGGING in sys.modules:
        _quiet_transformers()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(HF_LOGGING, _quiet_transformers))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `then()` right after module `name` is first imported (once, then it steps aside)."""

    def __init__(self, name: str, then):
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # what the other finders make of it
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then(module):
            exec_module(module)
            self.then()

        spec.loader.exec_module = exec_then  # this spec's own loader instance: nothing else is patched
        return spec


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _quiet_transformers() -> None:
    hf_logging = sys.modules[HF_LOGGING]
    hf_logging.get_logger("transformers")  # makes transformers attach its handler, which we then filter
    for handler in logging.getLogger("transformers").handlers:
        if not any(isinstance(f, _ErrorsOnly) for f in handler.filters):
            handler.addFilter(_ErrorsOnly())
