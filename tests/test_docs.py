"""The documentation cannot drift from the product: every `whatart` command and flag it shows
parses, every setting it names exists with the documented default, every `make` target and
relative link resolves, and the README stays a five-minute read."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import subprocess
from pathlib import Path

import pytest
from whatart.client.cli import build_parser
from whatart.retrieval_service.settings import ENV_PREFIX, Settings

from tests.helpers import WHATART

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION = ROOT / "docs" / "configuration.md"
COMPOSE_VARIABLES = {"WHATART_UID", "WHATART_GID"}  # docker-compose.yml's, not the product's settings
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)
COMMAND_END = re.compile(r"\s(?:\||&&|;|#|>)\s|\n")  # a shell pipe, list, comment or redirection ends a command
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _code(page: Path) -> list[str]:
    """The page's code: each block and each inline span."""
    return [block or span for block, span in CODE.findall(page.read_text())]


def _invocations() -> list[tuple[str, list[str], list[str]]]:
    """(page, command words, flags) of every `whatart ...` the docs show."""
    found = []
    for page in PAGES:
        for code in _code(page):
            for match in re.finditer(r"(?<![\w.\-/\[])whatart((?: [a-z][a-z-]*)+)(.*)", code):
                words = match.group(1).split()
                rest = COMMAND_END.split(match.group(2), maxsplit=1)[0]
                found.append((page.name, words, [flag for flag in FLAG.findall(rest) if not flag[1:].isdigit()]))
    return found


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _resolve(words: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """The longest run of subcommand names at the start of `words`, and its parser."""
    parser, path = build_parser(), []
    for word in words:
        choices = _subcommands(parser)
        if word not in choices:
            break
        parser, path = choices[word], [*path, word]
    return path, parser


INVOCATIONS = _invocations()


def test_the_docs_show_commands_at_all() -> None:
    assert len(INVOCATIONS) > 50, INVOCATIONS
    assert {tuple(_resolve(words)[0]) for _, words, _ in INVOCATIONS} >= {("demo",), ("serve",), ("identify",), ("ingest",)}


@pytest.mark.parametrize(("page", "words", "flags"), INVOCATIONS, ids=[f"{p}:{' '.join(w)}" for p, w, _ in INVOCATIONS])
def test_every_command_and_flag_shown_exists(page: str, words: list[str], flags: list[str]) -> None:
    path, parser = _resolve(words)
    assert path, f"{page}: `whatart {' '.join(words)}` names no whatart command"
    assert not _subcommands(parser), f"{page}: `whatart {' '.join(path)}` needs one of {sorted(_subcommands(parser))}"
    known = set(parser._option_string_actions) | set(build_parser()._option_string_actions)
    unknown = [flag for flag in flags if flag not in known]
    assert not unknown, f"{page}: `whatart {' '.join(path)}` has no {unknown}"


@pytest.mark.parametrize("path", sorted({tuple(_resolve(w)[0]) for _, w, _ in INVOCATIONS} - {()}), ids=" ".join)
def test_help_parses_for_every_command_shown(path: tuple[str, ...]) -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*path, "--help"])
    assert exit_.value.code == 0 and f"usage: whatart {' '.join(path)}" in output.getvalue()


def test_the_installed_command_answers_help() -> None:
    result = subprocess.run([WHATART, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: whatart" in result.stdout, result.stderr


def _documented_settings() -> dict[str, str]:
    """variable -> default cell of configuration.md's settings tables."""
    rows = re.findall(r"^\| `(WHATART_[A-Z0-9_]+)` \| ([^|]*) \| ([^|]*)\|$", CONFIGURATION.read_text(), re.M)
    assert all(meaning.strip() for _, _, meaning in rows), "every setting's meaning is written"
    variables = [variable for variable, _, _ in rows]
    assert len(variables) == len(set(variables)), "each setting has one row"
    return {variable: default.strip() for variable, default, _ in rows}


def test_the_settings_table_lists_every_setting_with_its_default() -> None:
    documented = _documented_settings()
    fields = {ENV_PREFIX + field.name.upper(): field.name for field in dataclasses.fields(Settings)}
    assert sorted(documented) == sorted(fields), (f"missing: {sorted(set(fields) - set(documented))}, "
                                                  f"not settings: {sorted(set(documented) - set(fields))}")
    defaults = Settings()
    for variable, cell in documented.items():
        if cell == "(empty)":
            assert getattr(defaults, fields[variable]) == "", variable
        else:
            value = re.fullmatch(r"`([^`]*)`", cell)
            assert value, f"{variable}: the default {cell!r} is not one code span"
            parsed = Settings.from_env({variable: value.group(1)})
            assert getattr(parsed, fields[variable]) == getattr(defaults, fields[variable]), \
                f"{variable}={value.group(1)} is not the default {getattr(defaults, fields[variable])!r}"


def test_every_variable_the_docs_name_is_a_setting() -> None:
    settings = {ENV_PREFIX + field.name.upper() for field in dataclasses.fields(Settings)} | COMPOSE_VARIABLES
    for page in PAGES:
        named = set(re.findall(r"\bWHATART_[A-Z0-9_]*[A-Z0-9]\b", page.read_text()))
        assert named <= settings, f"{page.name} names variables whatart does not read: {sorted(named - settings)}"


def test_every_make_target_shown_exists() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    for page in PAGES:
        shown = {target for code in _code(page) for target in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code)}
        assert shown <= targets, f"{page.name} shows make targets the Makefile lacks: {sorted(shown - targets)}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_relative_link_resolves() -> None:
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            assert linked.exists(), f"{page.name} links to a missing {file}"
            if anchor and linked.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), re.M)}
                assert anchor in slugs, f"{page.name} links to #{anchor}, which {linked.name} lacks"


def test_the_readme_is_short_and_shows_the_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "](docs/ui.png)" in readme and (ROOT / "docs" / "ui.png").stat().st_size > 50_000
