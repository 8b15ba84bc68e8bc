"""scripts/check_links.py finds every broken internal link of a built site, and only those."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "check_links", Path(__file__).resolve().parents[1] / "scripts" / "check_links.py"
)
assert _SPEC is not None
assert _SPEC.loader is not None
check_links = sys.modules["check_links"] = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check_links)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "guide").mkdir()
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "app.js").write_text("")
    (tmp_path / "index.html").write_text(
        '<html><head><script src="assets/app.js"></script></head><body>\n'
        '<a href="guide/">guide</a> <a href="guide/#setup">setup</a> <a href="#top">top</a>\n'
        '<a id="top"></a> <a href="https://example.com/x#y">out</a> <a href="mailto:a@b">mail</a>\n'
        '<a href="guide/#nowhere">bad anchor</a>\n'
        '<a href="missing.html">missing</a>\n'
        '<img src="assets/logo.png">\n'
        '<a href="../outside.html">outside</a>\n'
        "</body></html>"
    )
    (tmp_path / "guide" / "index.html").write_text(
        '<h2 id="setup">Set-up</h2><a name="legacy"></a><a href="../index.html#top">home</a>'
        '<a href="../index.html#legacy">wrong page</a><a href="#legacy">here</a>'
    )
    return tmp_path


def test_finds_missing_files_and_anchors_only(site: Path) -> None:
    broken = {(str(b.page), b.link, b.reason) for b in check_links.broken_links(site)}
    assert broken == {
        ("index.html", "guide/#nowhere", "no #nowhere in guide/index.html"),
        ("index.html", "missing.html", "no such file in the site"),
        ("index.html", "assets/logo.png", "no such file in the site"),
        ("index.html", "../outside.html", "no such file in the site"),
        ("guide/index.html", "../index.html#legacy", "no #legacy in index.html"),
    }
    lines = {b.link: b.line for b in check_links.broken_links(site)}
    assert lines["missing.html"] == 5


def test_main_exit_status(site: Path, tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    assert check_links.main([str(site)]) == 1
    assert "5 broken" in capsys.readouterr().out
    good = tmp_path_factory.mktemp("good")
    (good / "index.html").write_text('<a href="#a" id="a">a</a>')
    assert check_links.main([str(good)]) == 0
    assert check_links.main([str(tmp_path_factory.mktemp("empty"))]) == 2
    assert check_links.main([]) == 2
