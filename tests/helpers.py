"""Test doubles shared by several test modules."""

from agents.llm.base import Generation


class ScriptedGenerator:
    """A Generator that 'samples' fixed turns with a real tokenizer, to drive known paths."""

    def __init__(self, tokenizer, turns):
        self.tokenizer = tokenizer
        self.turns = list(turns)
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        text = self.turns.pop(0)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return [
            Generation(ids, [-0.5] * len(ids), self.tokenizer.decode(ids), "stop") for _ in prompts
        ]
