"""Reference agents without a language model: baselines and test drivers."""

from __future__ import annotations

import re
from typing import Any

from rexrag_env.protocol import INFORMATION_CLOSE
from rexrag_env.reward import normalize_answer

#: One passage line of an <information> block: rank, title line, text.
_DOC = re.compile(rf"Doc (\d+)\(Title: (.*?)\) (.*?)(?:{INFORMATION_CLOSE})?$", re.MULTILINE)


_YES_NO_OPENERS = frozenset(("is", "are", "was", "were", "do", "does", "did", "can", "could"))
_CAPITALISED_RUN = re.compile(r"(?:[A-Z][\w'.-]*)(?:\s+(?:of|the|de|von|[A-Z][\w'.-]*))*")


class NoSearchAgent:
    """Answers at once, without searching, from a guess it can make from the question alone.

    The guess: "yes" for a yes/no question (it opens with an auxiliary verb), else the
    longest capitalised phrase of the question past its first word. This is the
    "closed-book" floor every search agent must beat; it is not tuned to any benchmark.
    """

    def reset(self, prompt: str, info: dict[str, Any]) -> None:
        self._question = info["question"].strip()

    def act(self, observation: str, info: dict[str, Any]) -> str:
        return f"<answer> {self.guess(self._question)} </answer>"

    @staticmethod
    def guess(question: str) -> str:
        words = question.split()
        if words and words[0].lower() in _YES_NO_OPENERS:
            return "yes"
        body = question[len(words[0]) :] if words else ""
        phrases = _CAPITALISED_RUN.findall(body)
        return max(phrases, key=len).strip() if phrases else ""


class SearchOnceAgent:
    """Classic retrieve-then-read without an LLM: search the question, answer from the passages.

    The extractive rule is deliberately simple and not tuned to any benchmark: the
    answer is the title of the best-ranked passage whose title does not already occur
    in the question (a question rarely asks for an entity it names).
    """

    def reset(self, prompt: str, info: dict[str, Any]) -> None:
        self._question = info["question"]
        self._searched = False

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if not self._searched:
            self._searched = True
            return f"<think>I will look this up.</think>\n<search> {self._question} </search>"
        return f"<answer> {self._extract(observation)} </answer>"

    def _extract(self, information: str) -> str:
        question = f" {normalize_answer(self._question)} "
        titles = [title.strip().strip('"') for _, title, _ in _DOC.findall(information)]
        for title in titles:
            if f" {normalize_answer(title)} " not in question:
                return title
        return titles[0] if titles else ""


class OracleAgent:
    """Knows the gold answer (from the reset info): searches once, then answers correctly.

    Used to test environments and to produce demonstrations, never as a baseline.
    """

    def reset(self, prompt: str, info: dict[str, Any]) -> None:
        self._question = info["question"]
        self._answer = info["golden_answers"][0]
        self._searched = False

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if not self._searched:
            self._searched = True
            return f"<think>Let me search.</think>\n<search> {self._question} </search>"
        return f"<think>I know it now.</think>\n<answer> {self._answer} </answer>"


#: What the evidence-chain agents think before they answer (where a probe would cut in).
CHAIN_COMPLETE = "<think>The chain is complete.</think>\n"


class EvidenceChainAgent:
    """Follows a question's evidence chain (``info["metadata"]["hops"]``, as SynthWiki
    records it): one search per hop for the entity in hand, and it moves on only when
    the retrieved passages name the next entity. It answers with the last entity it
    found, so it is right exactly when every hop is retrievable: the check that a
    generated question is answerable from its corpus, and the demonstrator of correct
    multi-step search.
    """

    def reset(self, prompt: str, info: dict[str, Any]) -> None:
        self._hops = list(info["metadata"].get("hops", []))
        self._step = 0
        self._found: str | None = None

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if self._step > 0:  # check what the last search found
            expected = self._hops[self._step - 1][1]
            if expected not in observation:
                return "<think>The passages do not say.</think>\n<answer> unknown </answer>"
            self._found = expected
        if self._step < len(self._hops):
            subject = self._hops[self._step][0]
            self._step += 1
            return (
                f"<think>I need to find out about {subject}.</think>\n<search> {subject} </search>"
            )
        return f"{CHAIN_COMPLETE}<answer> {self._found} </answer>"


class OverconfidentAgent(EvidenceChainAgent):
    """Searches only the first hop of the chain and answers with what it found there.

    Right on 1-hop questions, confidently wrong on longer chains: the demonstrations
    that teach a warm-started policy to commit early, i.e. to walk into dead ends.
    """

    def reset(self, prompt: str, info: dict[str, Any]) -> None:
        super().reset(prompt, info)
        self._hops = self._hops[:1]


_YES_NO = frozenset(("yes", "no"))


class PassageReaderAgent:
    """Knows the gold answers (from the reset info) but answers only what the passages
    show: the demonstrator of search, read, answer with a span on real questions.

    It searches the question; when a retrieved passage contains a gold answer (whole
    words, any case) it names that passage (rank and title) and answers with the span as
    the passage writes it. It quotes no more than the span: a small policy taught to
    quote context learns to start copying a passage, not where to stop (the first
    recipe's warm start ran 97 of 350 held-out episodes out of tokens mid-quote).
    Otherwise it searches the first supporting title not yet retrieved
    (``metadata["supporting_titles"]``, as the multi-hop benchmarks record them) and
    reads again; with none left it answers "unknown", a wrong episode that a
    recipe drops. A yes/no question is answered after the first search (the passages
    hold the evidence, not the word).
    """

    #: bumped whenever its actions change: the warm starts it demonstrates key on it
    VERSION = 2

    def reset(self, prompt: str, info: dict[str, Any]) -> None:
        self._question = info["question"].strip()
        self._answers = [a for a in info["golden_answers"] if a.strip()]
        self._titles = list(info["metadata"].get("supporting_titles") or [])
        self._searched: set[str] = set()

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if not self._searched:
            return self._search(self._question, "Let me search for this.")
        if normalize_answer(self._answers[0]) in _YES_NO:
            answer = self._answers[0].strip()
            thought = f"From the passages, the answer is {answer}."
            return f"<think>{thought}</think>\n<answer> {answer} </answer>"
        docs = _DOC.findall(observation)
        for rank, title, text in docs:
            for answer in self._answers:
                pattern = rf"(?<!\w){re.escape(answer.strip())}(?!\w)"
                found = re.search(pattern, text, re.IGNORECASE)
                if found:
                    source = f"Doc {rank} ({title.strip()})"
                    return (
                        f"<think>{source} gives the answer: {found[0]}.</think>\n"
                        f"<answer> {found[0]} </answer>"
                    )
        self._searched.update(normalize_answer(title.strip().strip('"')) for _, title, _ in docs)
        for title in self._titles:
            if normalize_answer(title) not in self._searched:
                thought = f"The passages do not say. I need to know about {title}."
                return self._search(title, thought)
        return "<think>The passages do not say.</think>\n<answer> unknown </answer>"

    def _search(self, query: str, thought: str) -> str:
        self._searched.add(normalize_answer(query))
        return f"<think>{thought}</think>\n<search> {query} </search>"
