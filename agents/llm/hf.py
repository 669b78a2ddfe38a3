"""HFGenerator: batched sampling with Hugging Face transformers, on CPU or GPU."""

from __future__ import annotations

import inspect

import torch

from agents.llm.base import FinishReason, Generation, SamplingParams
from agents.llm.kv_cache import growing_cache
from agents.llm.sampling import sample_next_tokens
from agents.llm.stop_strings import StopStringMatcher


class HFGenerator:
    """Token-in/token-out generation with a transformers causal LM.

    One call samples a whole batch: prompts are left-padded, the KV cache is kept
    across steps, and rows that finish (stop string, EOS, length) are dropped from the
    batch and its cache, so long stragglers do not pay for short rows. Log-probs are
    those of the sampling distribution (see :func:`agents.llm.sampling.sampling_logprobs`).

    Args:
        model: a causal LM (``AutoModelForCausalLM``); put in eval mode here.
        tokenizer: its tokenizer (for decoding, stop strings and the pad/EOS ids).
    """

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        eos = (
            tokenizer.eos_token_id
            if tokenizer.eos_token_id is not None
            else model.config.eos_token_id
        )
        self.eos_token_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else next(iter(self.eos_token_ids), 0)
        self._cache_argument = cache_argument(model)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **load_options) -> HFGenerator:
        """Load a model by alias, hub name or path (see :mod:`agents.llm.models`)."""
        from agents.llm.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(name_or_path, **load_options)
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Take new policy weights (the trainer syncs them in after each update)."""
        self.model.load_state_dict(state_dict, strict=False)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        if any(len(prompt) == 0 for prompt in prompts):
            raise ValueError("every prompt needs at least one token")
        device = self.device
        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator(device=device).manual_seed(params.seed)
        width = max(len(prompt) for prompt in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every row ends at column width-1
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [batch, width]

        matcher = StopStringMatcher(self.tokenizer, params.stop)
        sampled: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        finish: list[tuple[FinishReason, str | None] | None] = [None] * len(prompts)
        active = list(range(len(prompts)))  # original row index of each batch row
        cache = growing_cache(self.model.config)
        step_ids, step_positions = input_ids, position_ids
        for _ in range(params.max_new_tokens):
            output = self.model(
                input_ids=step_ids,
                attention_mask=attention_mask,
                position_ids=step_positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_argument: cache},  # the model fills the cache in place
            )
            token_ids, token_logprobs = sample_next_tokens(
                output.logits[:, -1, :], params.temperature, params.top_p, generator
            )
            keep = []
            step_tokens, step_logprobs = token_ids.tolist(), token_logprobs.tolist()
            for batch_row, row in enumerate(active):
                token = step_tokens[batch_row]
                sampled[row].append(token)
                logprobs[row].append(step_logprobs[batch_row])
                stop = matcher.completed(sampled[row])
                if token in self.eos_token_ids:
                    finish[row] = ("eos", None)
                elif stop is not None:
                    finish[row] = ("stop", stop)
                elif len(sampled[row]) >= params.max_new_tokens:
                    finish[row] = ("length", None)
                else:
                    keep.append(batch_row)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                token_ids, attention_mask = token_ids[index], attention_mask[index]
                position_ids = position_ids[index]
                active = [active[batch_row] for batch_row in keep]
            attention_mask = torch.cat(
                [attention_mask, attention_mask.new_ones((len(active), 1))], dim=1
            )
            position_ids = position_ids[:, -1:] + 1
            step_ids, step_positions = token_ids.unsqueeze(-1), position_ids
        return [
            Generation(ids, lps, self.tokenizer.decode(ids, skip_special_tokens=False), *done)
            for ids, lps, done in zip(sampled, logprobs, finish, strict=True)
        ]


def cache_argument(model) -> str:
    """The name under which ``model``'s forward takes its KV cache: ``cache`` where
    transformers has renamed ``past_key_values`` (deprecated with removal in 5.40, a
    FutureWarning at every generate call), ``past_key_values`` before. A PEFT model
    passes the keyword on to its base model, whose signature decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
