"""Stop-string detection at the token level.

A stop string such as ``</search>`` may be one token, several tokens, or end in the
middle of a token (``</search>\\n`` merged by BPE). Generation stops at the token that
completes it; the sampled ids are kept whole, so the text may run a few characters
past the stop string (the environment ignores text after a complete action).
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    """Finds which stop string (if any) the newest token completed.

    Only the last few tokens are decoded at each step: every token decodes to at least
    one character, so a stop string of n characters that ends in the newest token
    starts within its last n tokens (+1 for a partially decoded multi-byte character).
    """

    def __init__(self, tokenizer, stop: Sequence[str]):
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._window = max((len(s) for s in self._stop), default=0) + 1
        self._last_characters = {s[-1] for s in self._stop}
        self._may_end_a_stop: dict[int, bool] = {}  # token id -> decodes to a stop's last char

    def completed(self, token_ids: Sequence[int]) -> str | None:
        """The stop string that ends in the last token of ``token_ids``, or None."""
        if not self._stop or not token_ids:
            return None
        newest = token_ids[-1]
        if newest not in self._may_end_a_stop:  # cheap filter: most tokens cannot end a stop
            text = self._tokenizer.decode([newest], skip_special_tokens=False)
            self._may_end_a_stop[newest] = (
                any(c in text for c in self._last_characters) or "\ufffd" in text
            )
        if not self._may_end_a_stop[newest]:
            return None
        # Any stop string in the tail ends in the newest token: one that ended earlier
        # would have stopped generation at that earlier token.
        tail = self._tokenizer.decode(token_ids[-self._window :], skip_special_tokens=False)
        return next((stop for stop in self._stop if stop in tail), None)
