"""A tiny Qwen2 causal LM with a locally trained tokenizer, for tests and the CPU demo.

It is saved with ``save_pretrained`` and loaded with ``AutoModelForCausalLM`` /
``AutoTokenizer.from_pretrained``: the same code path as a user's ``Qwen/Qwen2.5-3B``,
at a size that trains in seconds on a laptop CPU. Nothing is downloaded: the
tokenizer is trained on the shipped corpus and questions, and the weights are a seeded
random initialisation, so the same seed gives the same model on every machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rexrag_env.protocol import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    INFORMATION_CLOSE,
    INFORMATION_OPEN,
    SEARCH_CLOSE,
    SEARCH_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    make_prompt,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

#: Tag strings get one token each, as in the vocabularies of real instruction models.
TAG_TOKENS = (
    THINK_OPEN,
    THINK_CLOSE,
    SEARCH_OPEN,
    SEARCH_CLOSE,
    ANSWER_OPEN,
    ANSWER_CLOSE,
    INFORMATION_OPEN,
    INFORMATION_CLOSE,
)
PAD_TOKEN, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_VERSION = "v2"  # bump when the recipe changes, so caches rebuild


def _training_texts(num_passages: int = 2000) -> list[str]:
    """A fixed, ordered sample of the text the model will see: prompts, passages, questions."""
    from rexrag_env.datasets import load_qa_dataset
    from rexrag_env.embedded import EMBEDDED_DATASETS, embedded_corpus_path
    from rexrag_env.retrieval.corpus import Corpus

    corpus = Corpus(embedded_corpus_path())
    texts = [corpus[i].contents for i in range(min(num_passages, len(corpus)))]
    for name in EMBEDDED_DATASETS:
        for example in load_qa_dataset(name)[:200]:
            texts.append(make_prompt(example.question))
            texts.append(
                f"{THINK_OPEN} {example.question} {THINK_CLOSE}{SEARCH_OPEN} {example.question} "
                f"{SEARCH_CLOSE}{ANSWER_OPEN} {example.golden_answers[0]} {ANSWER_CLOSE}"
            )
    return texts


def build_tiny_tokenizer(
    vocab_size: int = 2048, texts: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML and tag tokens, trained in about a second
    on ``texts`` (default: prompts, passages and questions of the embedded datasets).

    Byte-level, with no normaliser, so that ``decode(encode(text)) == text`` for any
    text: rollouts are scored on the ids they sampled, and the tiny model must not hide
    a re-tokenisation bug that a real Qwen tokenizer would expose.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_texts() if texts is None else texts, trainer)
    # not "special": decode must reproduce the tags, they are text the model writes
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in TAG_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int = 128,
    vocab_size: int = 2048,
    texts: Iterable[str] | None = None,
) -> Path:
    """Write a seeded tiny ``Qwen2ForCausalLM`` and its tokenizer to ``out_dir``.

    The same ``seed`` gives bit-identical weights and the same tokenizer on any machine
    (CPU initialisation under ``torch.manual_seed``, a deterministic BPE training run).
    EOS is ``<|im_end|>`` and pad ``<|endoftext|>`` in the tokenizer, the config and
    the generation config alike, as in Qwen2.5-Instruct, so ``generate`` stops where
    a chat turn ends. ``texts`` train the tokenizer (see :func:`build_tiny_tokenizer`).
    Returns ``out_dir``.

    The default heads are 32 wide (64 / 2): vLLM's CPU attention takes head sizes of
    32 and up only, and the tiny model runs on that backend too.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer(vocab_size, texts)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_model_path(seed: int = 0) -> Path:
    """The tiny model for ``seed``, built once into the rexrag cache (about 2 s).

    Concurrent callers (Ray workers, pytest-xdist) share one build through ``build_once``.
    """
    from rexrag_env.cache import build_once, cache_dir

    target = cache_dir() / "models" / f"tiny-qwen2-{seed}-{TINY_VERSION}"
    return build_once(target, lambda tmp: build_tiny_model(tmp, seed=seed))
