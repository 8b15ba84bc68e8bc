#!/usr/bin/env python3
"""Check every internal link of a built site (``mkdocs build`` writes it to ``site/``); no network.

For each HTML page, every ``href`` and ``src`` that is not external (no scheme such as ``https:``,
no ``//host``) must name a file of the site (a folder means its ``index.html``) and, when it has a
``#fragment``, an element with that ``id`` (or an ``<a name>``) in the target page. External links are
counted but not fetched. Prints one line per broken link and exits 1 if there is any:

    python scripts/check_links.py site/
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, int]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name in ("href", "src"):
                self.links.append((value, self.getpos()[0]))


@dataclass(frozen=True)
class BrokenLink:
    page: Path
    line: int
    link: str
    reason: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.link}: {self.reason}"


def _parse(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser


def _is_external(link: str) -> bool:
    parts = urlsplit(link)
    return bool(parts.scheme or parts.netloc) or link.startswith(("mailto:", "javascript:", "data:"))


def _target(site: Path, page: Path, path: str) -> Path | None:
    """The file a link's path names, or None when it points outside the site or to nothing."""
    base = site if path.startswith("/") else page.parent
    target = (base / unquote(path.lstrip("/"))).resolve()
    if not target.is_relative_to(site.resolve()):
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def broken_links(site: Path) -> Iterator[BrokenLink]:
    """Every broken internal link of the site under ``site``, page by page."""
    pages = sorted(site.rglob("*.html"))
    ids: dict[Path, set[str]] = {}
    parsed = {page: _parse(page) for page in pages}
    for page, parser in parsed.items():
        ids[page.resolve()] = parser.ids
    for page, parser in parsed.items():
        for link, line in parser.links:
            if _is_external(link) or not link:
                continue
            parts = urlsplit(link)
            target = _target(site, page, parts.path) if parts.path else page.resolve()
            if target is None:
                yield BrokenLink(page.relative_to(site), line, link, "no such file in the site")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                anchors = ids.get(target.resolve())
                if anchors is None:
                    anchors = ids[target.resolve()] = _parse(target).ids
                if fragment not in anchors:
                    where = target.relative_to(site.resolve())
                    yield BrokenLink(page.relative_to(site), line, link, f"no #{fragment} in {where}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    site = Path(argv[0])
    if not (site / "index.html").is_file():
        print(f"{site}: not a built site (no index.html)", file=sys.stderr)
        return 2
    broken = list(broken_links(site))
    for link in broken:
        print(link)
    num_pages = sum(1 for _ in site.rglob("*.html"))
    print(f"checked the internal links of {num_pages} pages under {site}: {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
