"""SynthWiki: a seeded fictional encyclopedia whose 1-3 hop questions only search can answer.

People, cities, countries and organisations with invented names are linked by four
relations (born in, located in, founded by, headquartered in) and written up as short
wiki-18 style passages (``"Title"\\ntext``). Some entities get a near-duplicate twin (a
name one letter apart, different facts): a search for one also finds the other, which
is what lets a careless policy commit to a confident wrong answer — a dead end.

Questions chain the relations: 1 hop ("Where was X born?"), 2 hops ("In which country
was X born?") and 3 hops ("In which country was the founder of O born?"). Every
question records its evidence chain (``metadata["hops"]``: the entity searched and the
entity found at each step). Splits are by question, disjoint, and the same seed gives
byte-identical files on every machine. ``rexrag_env/SynthWiki-v0`` is ``SearchQAEnv``
over a split with BM25 over the corpus; ``load_qa_dataset("synthwiki/train")`` and
``make_retriever("synthwiki")`` give the same pieces to any other user of the env.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = "v1"  # bump when generation changes, so caches rebuild
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "n", "r", "s", "l", "th", "nd", "rk")
_ORG_KINDS = ("Institute", "Company", "Guild", "Foundation", "Works", "Society")
_OCCUPATIONS = ("engineer", "painter", "botanist", "merchant", "poet", "surveyor")

#: The sentence that states each relation in a passage; {0} is the subject, {1} the object.
RELATIONS = {
    "born_in": "{0} was born in {1}.",
    "located_in": "{0} is a city in {1}.",
    "founded_by": "{0} was founded by {1}.",
    "headquartered_in": "{0} is headquartered in {1}.",
}


@dataclass(frozen=True)
class SynthWiki:
    """The generated encyclopedia: passages (``{"id", "contents"}``) and split questions."""

    passages: list[dict[str, str]]
    questions: dict[str, list[dict[str, Any]]]


class _Names:
    """Unique pronounceable names from a seeded RNG."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        parts = [
            self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
            for _ in range(syllables)
        ]
        return "".join(parts).capitalize()

    def fresh(self, make) -> str:
        for _ in range(1000):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("name space exhausted: lower the entity counts")

    def twin(self, name: str) -> str | None:
        """A name one letter apart (a near-duplicate), or None if none is free."""
        for _ in range(50):
            position = self.rng.randrange(1, len(name))
            if not name[position].isalpha() or name[position].isupper():
                continue
            letter = self.rng.choice("aeiourstnl")
            candidate = name[:position] + letter + name[position + 1 :]
            if candidate != name and candidate not in self.used:
                self.used.add(candidate)
                return candidate
        return None


def generate_synthwiki(
    seed: int = 0,
    *,
    countries: int = 10,
    cities_per_country: int = 4,
    people: int = 160,
    organisations: int = 60,
    twin_fraction: float = 0.3,
) -> SynthWiki:
    """Generate the encyclopedia for ``seed`` (pure: same arguments, same result)."""
    rng = random.Random(seed)
    names = _Names(rng)
    country_names = [names.fresh(lambda: names.word(2)) for _ in range(countries)]
    city_country: dict[str, str] = {}
    for country in country_names:
        for _ in range(cities_per_country):
            city_country[names.fresh(lambda: names.word(rng.choice((2, 3))))] = country
    cities = list(city_country)
    person_city, person_job = {}, {}
    for _ in range(people):
        person = names.fresh(lambda: f"{names.word(2)} {names.word(2)}")
        person_city[person], person_job[person] = rng.choice(cities), rng.choice(_OCCUPATIONS)
    founders = list(person_city)
    org_founder, org_city = {}, {}
    for _ in range(organisations):
        org = names.fresh(lambda: f"{names.word(2)} {rng.choice(_ORG_KINDS)}")
        org_founder[org], org_city[org] = rng.choice(founders), rng.choice(cities)

    # near-duplicate twins: same kind of entity, a name one letter apart, other facts
    for person in rng.sample(founders, int(twin_fraction * len(founders))):
        twin = names.twin(person)
        if twin:
            person_city[twin] = rng.choice([c for c in cities if c != person_city[person]])
            person_job[twin] = rng.choice(_OCCUPATIONS)
    for city in rng.sample(cities, int(twin_fraction * len(cities))):
        twin = names.twin(city)
        if twin:
            city_country[twin] = rng.choice([c for c in country_names if c != city_country[city]])

    passages = _passages(city_country, person_city, person_job, org_founder, org_city, rng)
    questions = _questions(city_country, person_city, org_founder, org_city, founders, cities, rng)
    return SynthWiki(passages, _split(questions, rng))


def _passages(city_country, person_city, person_job, org_founder, org_city, rng):
    rows = []
    for person, city in person_city.items():
        job = person_job[person]
        rows.append((person, f"{person} is a {job}. {RELATIONS['born_in'].format(person, city)}"))
    for city, country in city_country.items():
        size = rng.choice(("small", "large", "coastal", "mountain"))
        rows.append((city, f"{RELATIONS['located_in'].format(city, country)} It is a {size} town."))
    for country in sorted(set(city_country.values())):
        members = sorted(c for c, k in city_country.items() if k == country)
        rows.append((country, f"{country} is a country. Its cities include {', '.join(members)}."))
    for org, founder in org_founder.items():
        text = RELATIONS["founded_by"].format(org, founder)
        rows.append((org, f"{text} {RELATIONS['headquartered_in'].format('It', org_city[org])}"))
    rng.shuffle(rows)
    return [
        {"id": f"synthwiki-{index}", "contents": f'"{title}"\n{text}'}
        for index, (title, text) in enumerate(rows)
    ]


def _questions(city_country, person_city, org_founder, org_city, founders, cities, rng):
    questions = []

    def add(text, hops, answer):
        questions.append(
            {"question": text, "golden_answers": [answer], "hops": hops, "num_hops": len(hops)}
        )

    for person in founders:
        city = person_city[person]
        add(f"Where was {person} born?", [[person, city]], city)
        country = city_country[city]
        add(f"In which country was {person} born?", [[person, city], [city, country]], country)
    for city in cities:
        add(f"In which country is {city}?", [[city, city_country[city]]], city_country[city])
    for org, founder in org_founder.items():
        city = person_city[founder]
        add(f"Who founded {org}?", [[org, founder]], founder)
        add(f"Where was the founder of {org} born?", [[org, founder], [founder, city]], city)
        add(
            f"In which country was the founder of {org} born?",
            [[org, founder], [founder, city], [city, city_country[city]]],
            city_country[city],
        )
        headquarters = org_city[org]
        add(
            f"In which country is {org} headquartered?",
            [[org, headquarters], [headquarters, city_country[headquarters]]],
            city_country[headquarters],
        )
    rng.shuffle(questions)
    return questions


def _split(questions, rng) -> dict[str, list[dict[str, Any]]]:
    splits: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for index, (name, fraction) in enumerate(zip(SPLITS, SPLIT_FRACTIONS, strict=True)):
        end = len(questions) if index == len(SPLITS) - 1 else start + int(fraction * len(questions))
        splits[name] = [
            {"id": f"synthwiki-{name}-{i}", "data_source": "synthwiki", **record}
            for i, record in enumerate(questions[start:end])
        ]
        start = end
    return splits


def synthwiki_dir(seed: int = 0) -> Path:
    """``corpus.jsonl`` and ``{train,validation,test}.jsonl``, generated once into the cache."""
    from rexrag_env.cache import build_once, cache_dir

    def write(directory: Path) -> None:
        wiki = generate_synthwiki(seed)
        _write_jsonl(directory / "corpus.jsonl", wiki.passages)
        for split, records in wiki.questions.items():
            _write_jsonl(directory / f"{split}.jsonl", records)

    return build_once(cache_dir() / "synthwiki" / f"seed{seed}-{VERSION}", write)


def _write_jsonl(path: Path, records) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def synthwiki_split_path(split: str, seed: int = 0) -> Path:
    if split not in SPLITS:
        raise ValueError(f"SynthWiki split must be one of {SPLITS}, got {split!r}")
    return synthwiki_dir(seed) / f"{split}.jsonl"


def synthwiki_texts(seed: int = 0) -> list[str]:
    """The text a SynthWiki policy reads: passages and the prompts of the train questions
    (what a tokenizer for the testbed is trained on, so that invented names are whole
    tokens)."""
    from rexrag_env.protocol import make_prompt

    wiki = generate_synthwiki(seed)
    return [passage["contents"] for passage in wiki.passages] + [
        make_prompt(record["question"]) for record in wiki.questions["train"]
    ]


def synthwiki_retriever(seed: int = 0):
    """BM25 over the SynthWiki corpus, built once into the cache."""
    from rexrag_env.cache import INDEX_CACHE_VERSION, build_once, cache_dir
    from rexrag_env.retrieval.index import build_index, load_retriever

    corpus = synthwiki_dir(seed) / "corpus.jsonl"
    target = cache_dir() / "indexes" / f"synthwiki-seed{seed}-{VERSION}-bm25-{INDEX_CACHE_VERSION}"
    build_once(
        target, lambda tmp: build_index(corpus, "bm25", tmp, overwrite=True, show_progress=False)
    )
    return load_retriever(target)


def make_synthwiki_env(split: str = "train", seed: int = 0, **env_options):
    """The ``rexrag_env/SynthWiki-v0`` entry point: ``SearchQAEnv`` over a SynthWiki split."""
    from rexrag_env.env import SearchQAEnv

    return SearchQAEnv(**_split_env_arguments(split, seed, env_options))


def make_synthwiki_vector_env(
    num_envs: int = 1, split: str = "train", seed: int = 0, **env_options
):
    """Its vector entry point: ``SearchQAVectorEnv`` over a SynthWiki split."""
    from rexrag_env.vector import SearchQAVectorEnv

    return SearchQAVectorEnv(num_envs, **_split_env_arguments(split, seed, env_options))


def _split_env_arguments(split: str, seed: int, env_options: dict[str, Any]) -> dict[str, Any]:
    """The env arguments over a split: its questions, and BM25 over its corpus unless
    ``env_options`` name a retriever."""
    if "dataset" in env_options:
        raise TypeError(f"a SynthWiki env asks split={split!r} for its questions, not dataset=")
    retriever = env_options.pop("retriever", None) or synthwiki_retriever(seed)
    return {"dataset": synthwiki_split_path(split, seed), "retriever": retriever, **env_options}
