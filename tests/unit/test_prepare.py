"""``models prepare``: cache location, idempotence, unknown names."""

import pytest

from byzer_like import prepare
from byzer_like.errors import InvalidSpecError


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(prepare.CACHE_ENV, str(tmp_path / "env"))
    assert prepare.cache_dir() == tmp_path / "env"
    assert prepare.cache_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(prepare.CACHE_ENV)
    assert prepare.cache_dir().name == "byzer_like"


def test_tiny_random_is_built_once(tmp_path):
    lines: list[str] = []
    path = prepare.prepare_model("tiny-random", cache=tmp_path, progress=lines.append)
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    stamp = (path / "config.json").stat().st_mtime_ns
    lines.clear()
    assert prepare.prepare_model("tiny-random", cache=tmp_path, progress=lines.append) == path
    assert any("already prepared" in line for line in lines)
    assert (path / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny")]  # no staging leftovers


def test_unknown_name_lists_known(tmp_path):
    with pytest.raises(InvalidSpecError, match="smollm2-hf"):
        prepare.prepare_model("nope", cache=tmp_path)


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(out, progress):
        out.mkdir()
        raise RuntimeError("disk full")

    broken = prepare.PreparedModel("broken", "broken-dir", boom, "test")
    monkeypatch.setitem(prepare.PREPARED_MODELS, "broken", broken)
    with pytest.raises(Exception, match="disk full"):
        prepare.prepare_model("broken", cache=tmp_path)
    assert list(tmp_path.iterdir()) == []
