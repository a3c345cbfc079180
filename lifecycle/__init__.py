"""lifecycle: a generative-AI use case through scope, select, prompt, finetune, rlhf, evaluate, quantize."""

__version__ = "0.1.0"
