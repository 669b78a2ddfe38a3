"""Test doubles shared by several test modules."""

from agents.llm.base import Generation


class ScriptedGenerator:
    """A Generator that 'samples' fixed turns with a real tokenizer, to drive known paths.

    Each generate call takes the next turn: one text for every row, or a list of texts,
    one per row (so the rows of a group can have different outcomes).
    """

    def __init__(self, tokenizer, turns):
        self.tokenizer = tokenizer
        self.turns = list(turns)
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        turn = self.turns.pop(0)
        texts = [turn] * len(prompts) if isinstance(turn, str) else list(turn)
        if len(texts) != len(prompts):
            raise ValueError(f"scripted {len(texts)} texts for {len(prompts)} prompts")
        return [self._generation(text) for text in texts]

    def _generation(self, text: str) -> Generation:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return Generation(ids, [-0.5] * len(ids), self.tokenizer.decode(ids), "stop")
