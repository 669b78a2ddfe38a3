"""Index directories (issue 29 items 3 and 10): `rexrag index` replaces only an index or
an empty directory, and an index's manifest decides which corpus is read only if this
user's key signed it."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest

from agents.cli import main
from rexrag_env.retrieval.index import (
    META_FILE,
    UntrustedIndexError,
    build_index,
    load_retriever,
)
from rexrag_env.signing import SECRET_FILE_ENV_VAR


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, hotpot_slice):
    """A BM25 index over the HotpotQA slice, built once for the module."""
    directory = tmp_path_factory.mktemp("indexes") / "bm25"
    build_index(hotpot_slice, "bm25", directory, show_progress=False)
    return directory


def index_args(corpus, out, *extra):
    return ["index", "--corpus", str(corpus), "--out", str(out), *extra]


def test_overwrite_never_replaces_a_directory_that_is_not_an_index(tmp_path, hotpot_slice, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("four years of work")
    (thesis / "notes").mkdir()
    assert main(index_args(hotpot_slice, thesis, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "thesis.tex" in err and "notes/" in err and "not a rexrag index" in err
    assert (thesis / "thesis.tex").read_text() == "four years of work"
    assert sorted(p.name for p in thesis.iterdir()) == ["notes", "thesis.tex"]


def test_out_dot_dot_names_the_parent_and_is_refused(tmp_path, hotpot_slice, capsys):
    (tmp_path / "keep.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    assert main(index_args(hotpot_slice, tmp_path / "sub" / "..", "--overwrite")) == 2
    assert "keep.txt" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "x" and (tmp_path / "sub").is_dir()


def test_an_index_or_an_empty_directory_is_replaced_and_nothing_else_is_deleted(
    tmp_path, hotpot_slice
):
    out = tmp_path / "idx"
    stale = tmp_path / "idx.partial"  # what the old build deleted unconditionally
    stale.mkdir()
    (stale / "mine.txt").write_text("not rexrag's")
    out.mkdir()  # empty: fine without --overwrite
    assert main(index_args(hotpot_slice, out)) == 0
    with pytest.raises(FileExistsError, match="is not empty"):
        build_index(hotpot_slice, "bm25", out, show_progress=False)
    (out / "marker").write_text("old index")
    assert main(index_args(hotpot_slice, out, "--overwrite")) == 0
    assert (out / META_FILE).is_file() and not (out / "marker").exists()
    assert (stale / "mine.txt").read_text() == "not rexrag's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "idx.partial"]


def test_an_edited_manifest_is_refused_unless_trusted(index_dir, tmp_path, hotpot_slice, capsys):
    """The attack: point rexrag_index.json's corpus at another file (same line count)."""
    secrets = tmp_path / "secrets.jsonl"
    lines = hotpot_slice.read_text().splitlines()
    secrets.write_text(
        "".join(
            json.dumps({"id": str(i), "contents": f"SECRET {i}"}) + "\n" for i in range(len(lines))
        )
    )
    edited = tmp_path / "edited"
    shutil.copytree(index_dir, edited)
    meta = json.loads((edited / META_FILE).read_text())
    meta["corpus"] = str(secrets)
    (edited / META_FILE).write_text(json.dumps(meta))

    with pytest.raises(UntrustedIndexError, match="not signed with your rexrag key"):
        load_retriever(edited)
    assert main(["search", "--index", str(edited), "anything"]) == 2
    err = capsys.readouterr().err
    assert "refusing to open index" in err and "--trust-index" in err and str(secrets) in err
    assert main(["search", "--index", str(edited), "--trust-index", "SECRET", "-k", "1"]) == 0
    assert "SECRET" in capsys.readouterr().out  # trusted: the user said so


def test_an_unsigned_or_other_users_index_is_refused(index_dir, tmp_path, monkeypatch):
    unsigned = tmp_path / "unsigned"
    shutil.copytree(index_dir, unsigned)
    meta = json.loads((unsigned / META_FILE).read_text())
    del meta["signature"]  # as rexrag wrote indexes before they were signed
    (unsigned / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UntrustedIndexError, match="unsigned"):
        load_retriever(unsigned)
    monkeypatch.setenv(SECRET_FILE_ENV_VAR, str(tmp_path / "someone-else.key"))
    (tmp_path / "someone-else.key").write_text("ab" * 32)
    (tmp_path / "someone-else.key").chmod(0o600)
    with pytest.raises(UntrustedIndexError, match="not signed with your rexrag key"):
        load_retriever(index_dir)


def test_a_settings_file_is_covered_by_the_signature(index_dir, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(index_dir, edited)
    params = edited / "rexrag_bm25.json"
    params.write_text(params.read_text().replace("english", "german"))
    with pytest.raises(UntrustedIndexError):
        load_retriever(edited)


def test_a_pickled_index_reopens_where_there_is_no_key(index_dir, tmp_path, monkeypatch):
    """A Ray worker on another node gets the index from the driver, which checked it."""
    sent = pickle.dumps(load_retriever(index_dir))
    monkeypatch.setenv(SECRET_FILE_ENV_VAR, str(tmp_path / "absent.key"))
    assert len(pickle.loads(sent).search(["Neil Peart"], 2)[0]) == 2


def test_serve_prints_the_corpus_it_serves_and_health_does_not(
    index_dir, hotpot_slice, monkeypatch, capsys
):
    from rexrag_env.retrieval import server

    served = {}
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: served.update(kwargs, args=args))
    assert main(["serve", "--index", str(index_dir)]) == 0
    assert f"of {hotpot_slice.resolve()}" in capsys.readouterr().out
    assert len(served["args"]) == 3  # retriever, host, port: no description for /health


def foreign_copy(index_dir, tmp_path):
    """``index_dir`` as it arrives from another machine: unsigned, its corpus elsewhere."""
    foreign = tmp_path / "foreign"
    shutil.copytree(index_dir, foreign)
    meta = json.loads((foreign / META_FILE).read_text())
    del meta["signature"]
    meta["corpus"] = "/their/machine/wiki.jsonl"
    (foreign / META_FILE).write_text(json.dumps(meta))
    return foreign


def test_an_index_from_elsewhere_is_signed_once_then_opens_in_eval(
    index_dir, tmp_path, hotpot_slice, capsys
):
    """`rexrag eval`/`train`/`tune` take an index only through --retriever or a config, so
    the user vouches once with `rexrag trust-index`, which also moves its corpus here."""
    foreign = foreign_copy(index_dir, tmp_path)
    evaluation = ["eval", "--agent", "search-once", "--retriever", str(foreign)]
    evaluation += ["--datasets", "bamboogle", "--limit", "1", "--out", str(tmp_path / "eval")]
    assert main(evaluation) == 2
    err = capsys.readouterr().err
    assert "unsigned" in err and f"rexrag trust-index {foreign}" in err

    assert main(["trust-index", str(foreign)]) == 2  # its corpus is not on this machine
    assert "/their/machine/wiki.jsonl, which does not exist here" in capsys.readouterr().err
    assert main(["trust-index", str(foreign), "--corpus", str(hotpot_slice)]) == 0
    passages = len(hotpot_slice.read_text().splitlines())
    assert f"over {passages} passages of {hotpot_slice.resolve()}" in capsys.readouterr().out
    assert load_retriever(foreign).search(["Neil Peart"], 1)[0]
    assert main(evaluation) == 0


def test_trust_index_checks_the_corpus_and_changes_nothing_when_refused(
    index_dir, tmp_path, hotpot_slice, capsys
):
    foreign = foreign_copy(index_dir, tmp_path)
    before = (foreign / META_FILE).read_text()
    shorter = tmp_path / "shorter.jsonl"
    shorter.write_text("".join(hotpot_slice.read_text().splitlines(keepends=True)[:-1]))
    assert main(["trust-index", str(foreign), "--corpus", str(shorter)]) == 2
    passages = len(hotpot_slice.read_text().splitlines())
    assert f"was built on a corpus of {passages} passages but" in capsys.readouterr().err
    assert (foreign / META_FILE).read_text() == before
    assert sorted(p.name for p in foreign.iterdir()) == sorted(p.name for p in index_dir.iterdir())


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (None, "not a rexrag index"),
        ([1, 2], "not the manifest of a rexrag index"),
        ({"kind": "pickle", "corpus": "x", "num_passages": 1}, "not the manifest"),
    ],
)
def test_trust_index_refuses_what_is_not_a_rexrag_index(tmp_path, manifest, message, capsys):
    directory = tmp_path / "directory"
    directory.mkdir()
    if manifest is not None:
        (directory / META_FILE).write_text(json.dumps(manifest))
    assert main(["trust-index", str(directory)]) == 2
    assert message in capsys.readouterr().err


def test_trust_index_writes_through_no_link_the_index_planted(index_dir, tmp_path, hotpot_slice):
    """The index is someone else's directory: a link there named like a staging file
    must not make rexrag overwrite a file of this user's."""
    foreign = foreign_copy(index_dir, tmp_path)
    mine = tmp_path / "mine.txt"
    mine.write_text("my notes")
    for name in (f".{META_FILE}.new", f".{META_FILE}.tmp", f".{META_FILE}.partial"):
        (foreign / name).symlink_to(mine)
    assert main(["trust-index", str(foreign), "--corpus", str(hotpot_slice)]) == 0
    assert mine.read_text() == "my notes"
    assert load_retriever(foreign).search(["Neil Peart"], 1)[0]
    leftovers = {p.name for p in foreign.iterdir()} - {p.name for p in index_dir.iterdir()}
    assert leftovers == {f".{META_FILE}.new", f".{META_FILE}.tmp", f".{META_FILE}.partial"}


def plant(directory, planted, tmp_path):
    """A settings name in ``directory`` that is not a regular file of the index's."""
    extra = directory / "extra_settings.json"
    if planted == "fifo":
        os.mkfifo(extra)
    elif planted == "link to /dev/zero":
        extra.symlink_to("/dev/zero")
    else:
        mine = tmp_path / "mine.json"
        mine.write_text("{}")
        extra.symlink_to(mine)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("planted", ["link to a file of mine", "link to /dev/zero", "fifo"])
def test_a_settings_name_that_is_not_a_regular_file_is_refused_unread(
    index_dir, tmp_path, hotpot_slice, planted, capsys
):
    """An index directory may be someone else's: a `*.json` there that is a link (to a
    file of this user's, to /dev/zero) or a FIFO is refused before it is read, by
    trust-index and by the check that opens an index, instead of being signed or hanging
    the command."""
    foreign = foreign_copy(index_dir, tmp_path)
    plant(foreign, planted, tmp_path)
    assert main(["trust-index", str(foreign), "--corpus", str(hotpot_slice)]) == 2
    assert "is a link or not a regular file" in capsys.readouterr().err
    signed = tmp_path / "signed"
    shutil.copytree(index_dir, signed)
    plant(signed, planted, tmp_path)
    with pytest.raises(UntrustedIndexError, match="is a link or not a regular file"):
        load_retriever(signed)
