"""Every ```python block of README.md runs as written, against real servers (issue 12.18).

The README is the user's manual, so its snippets are code under test. The rules,
for anyone adding a section:

* Every fence names its language. Python is ```python and runs here; anything
  else uses another fence: ```sh for commands, ```dotenv for .env lines,
  ```text for output and trees, ```json, ```toml... A bare ``` fence, or
  ```py / ```python3 / ```pycon, is an error.
* A block that defines a ``test_`` function is a test file. It is written whole
  to a temporary project (no conftest, no .env, ``asyncio_mode = "auto"``) and
  run there by pytest with mailer's plugin, so it carries its imports and the
  small application function it tests. Every test in it must pass.
* Any other block is a script. It runs in a fresh interpreter, with top-level
  ``await`` allowed, in a temporary directory holding ``templates/`` (a copy of
  examples/templates), ``recipients.csv`` (examples/recipients.csv), the same
  two under ``examples/`` (as in a clone of this repository) and a ``.env``
  that points at an SMTPTestServer on 127.0.0.1 (plain SMTP, no login,
  ``MAILER_FROM=Example Shop <shop@example.test>``). A script that sends must
  get its mail there, and when a ```text block follows it (only blank lines
  between), what it prints must match that block (``...`` matches anything).
* A block that needs a service the harness does not start says so on the line
  right before its fence: ``<!-- readme-test: needs=postgres -->``. Each need
  is a key of SERVICES below, naming a fixture (module or session scope) that
  starts the service and returns the variables that reach it, such as
  ``{"MAILER_QUEUE_DSN": dsn}``: a script gets them in its .env and its
  environment, the test run in its environment (where the plugin's doubles
  keep them from the code under test, as any inherited MAILER_* variable). A
  need that SERVICES does not know is a failure, never a skip: add the
  fixture, or write the block so that it needs nothing.
"""

from __future__ import annotations

import asyncio
import doctest
import os
import re
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailer.testing import SMTPTestServer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
SENDER = "Example Shop <shop@example.test>"
BLOCK_TIMEOUT = 120.0  # seconds; generous for a loaded 2-core machine

# need -> the name of a fixture (module or session scope) that starts the service
# and returns the variables that reach it: Mapping[str, str].
SERVICES: dict[str, str] = {
    "inbox": "readme_inbox",  # `mailer inbox` with its web API, in its own process
    "postgres": "readme_postgres",  # a queue database (`mailer queue init` done)
}

PYTHON_ALIASES = frozenset({"py", "python3", "pycon", "py3", "ipython"})
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
NEEDS = re.compile(r"^\s*<!--\s*readme-test:\s*needs=(?P<needs>[\w,-]+)\s*-->\s*$")
TEST_FUNCTION = re.compile(r"^(async )?def test_\w+\(", re.MULTILINE)
PROBLEMS = frozenset({"failure", "error", "skipped"})  # junit's tags; a skip fails too
SENDS = re.compile(r"\b(send|send_many|send_messages|stream|stream_messages)\(")

# Runs a script block: top-level await allowed, as in `python -m asyncio`.
RUNNER = """\
import ast, asyncio, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as file:
    code = compile(file.read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
outcome = eval(code, {"__name__": "__main__", "__file__": path})
if asyncio.iscoroutine(outcome):
    asyncio.run(outcome)
"""


@dataclass(frozen=True)
class Fence:
    """One fenced block of README.md."""

    line: int  # of the opening fence, from 1
    language: str
    source: str
    needs: tuple[str, ...]
    output: str | None  # the ```text block right after it, if any

    @property
    def is_test_file(self) -> bool:
        return bool(TEST_FUNCTION.search(self.source))

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def read_fences(text: str) -> list[Fence]:
    """Return every fenced block, with what the lines around it say."""
    lines = text.splitlines()
    raw: list[tuple[int, int, str, str, tuple[str, ...]]] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        language = opening["info"].strip().split(" ")[0]
        previous = lines[index - 1] if index else ""
        needs = NEEDS.match(previous)
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = FENCE.match(lines[end])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(
                lines[end][indent:] if lines[end][:indent].isspace() else lines[end]
            )
            end += 1
        raw.append(
            (
                index + 1,
                end + 1,
                language,
                "\n".join(body) + "\n",
                tuple(needs["needs"].split(",")) if needs else (),
            )
        )
        index = end + 1
    fences = []
    for position, (line, end_line, language, source, needs) in enumerate(raw):
        output = None
        following = raw[position + 1] if position + 1 < len(raw) else None
        if (
            following is not None
            and following[2] == "text"
            and not "".join(lines[end_line : following[0] - 1]).strip()
        ):
            output = following[3]
        fences.append(Fence(line, language, source, needs, output))
    return fences


FENCES = read_fences(README.read_text(encoding="utf-8"))
PYTHON = [fence for fence in FENCES if fence.language == "python"]
TEST_FILES = [fence for fence in PYTHON if fence.is_test_file]
SCRIPTS = [fence for fence in PYTHON if not fence.is_test_file]


def prepare_project(root: Path) -> Path:
    """Lay out a project as the README has it: a user's, and this repository's.

    ``templates/`` and ``recipients.csv`` (a user's project), and the same files
    under ``examples/``, for snippets written from a clone of this repository.
    """
    root.mkdir(parents=True, exist_ok=True)
    for base in (root, root / "examples"):
        shutil.copytree(EXAMPLES / "templates", base / "templates")
        shutil.copy(EXAMPLES / "recipients.csv", base / "recipients.csv")
    return root


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """Return this environment without MAILER_* (and pytest's options), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def services_for(fences: list[Fence], request: pytest.FixtureRequest) -> dict[str, str]:
    """Start what the blocks need (SERVICES) and return their variables."""
    lines: dict[str, str] = {}
    for need in sorted({need for fence in fences for need in fence.needs}):
        fixture = SERVICES.get(need)
        if fixture is None:
            pytest.fail(
                f"a README block needs {need!r}, which SERVICES in {__name__} does "
                "not provide: add a fixture for it there",
                pytrace=False,
            )
        lines.update(request.getfixturevalue(fixture))
    return lines


# -- services ------------------------------------------------------------------

INBOX_BANNER = re.compile(r"listening on 127\.0\.0\.1:(\d+) and (http://\S+?),")


@pytest.fixture(scope="module")
def readme_inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Run `mailer inbox` (SMTP and web, free ports) as a user would, for needs=inbox.

    Returns ``INBOX_URL`` and the ``MAILER_*`` lines of an application that
    sends to it (the README's .env for the inbox).
    """
    folder = tmp_path_factory.mktemp("readme-inbox")
    command = ["inbox", "--port", "0", "--http-port", "0", "--dir", str(folder)]
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", *command],
        cwd=folder,
        env=child_environment({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Should it never print its banner, the read below ends when this kills it.
    watchdog = threading.Timer(BLOCK_TIMEOUT, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        watchdog.cancel()
        found = INBOX_BANNER.search(banner)
        assert found, f"mailer inbox did not start: {banner!r}"
        yield {
            "INBOX_URL": found[2],
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_PORT": found[1],
            "MAILER_FROM": SENDER,
        }
    finally:
        watchdog.cancel()
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture(scope="module")
def readme_postgres(postgres: Any, _queue_template: str) -> Iterator[dict[str, str]]:
    """A database of the session's PostgreSQL with the queue's tables, for needs=postgres.

    Returns ``MAILER_QUEUE_DSN``, as a user's .env would have it.
    """
    import psycopg

    name = f"readme_{os.getpid()}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {_queue_template}")
    try:
        yield {"MAILER_QUEUE_DSN": postgres.dsn.rsplit("/", 1)[0] + f"/{name}"}
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- the rules -----------------------------------------------------------------


def test_the_readme_has_python_blocks_of_both_kinds() -> None:
    """The harness finds the README's test files and scripts (it cannot pass empty)."""
    assert len(TEST_FILES) >= 3
    assert len(SCRIPTS) >= 3


def test_every_fence_names_its_language() -> None:
    """A bare fence or a Python alias would hide a block from this harness."""
    unnamed = [fence.name for fence in FENCES if not fence.language]
    aliases = [
        f"{fence.name} ({fence.language})"
        for fence in FENCES
        if fence.language.lower() in PYTHON_ALIASES
    ]
    assert not unnamed, f"fences without a language (use ```text, ```sh...): {unnamed}"
    assert not aliases, f"write ```python, so that the block runs: {aliases}"


def test_the_fence_reader_sees_what_markdown_sees() -> None:
    """Languages, indented fences, the needs comment and a following output block."""
    text = (
        "Intro\n\n"
        "<!-- readme-test: needs=postgres,redis -->\n"
        "```python\nprint(1)\n```\n\n"
        "```text\n1\n```\n\n"
        "- item\n\n  ```python\n  x = 1\n  ```\n"
        "````md\n```python\nnot a block\n```\n````\n"
        "```\nbare\n```\n"
    )
    fences = read_fences(text)
    assert [(f.line, f.language) for f in fences] == [
        (4, "python"),
        (8, "text"),
        (14, "python"),
        (17, "md"),
        (22, ""),
    ]
    assert fences[0].needs == ("postgres", "redis")
    assert fences[0].output == "1\n"
    assert fences[1].output is None
    assert fences[2].source == "x = 1\n"
    assert fences[3].source == "```python\nnot a block\n```\n"


# -- test files ----------------------------------------------------------------


@dataclass(frozen=True)
class BlockRun:
    """The outcome of one pytest run over every test-file block."""

    outcomes: dict[str, list[tuple[str, str, str]]]  # module -> (test, outcome, text)
    output: str


@pytest.fixture(scope="module")
def test_files_run(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> BlockRun:
    """Run every test-file block in one pytest process (one start-up for all)."""
    project = prepare_project(tmp_path_factory.mktemp("readme-tests") / "project")
    (project / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'asyncio_mode = "auto"\n'
        'asyncio_default_fixture_loop_scope = "function"\n'
        'filterwarnings = ["error"]\n'
        'pythonpath = ["."]\n'
    )
    tests = project / "tests"
    tests.mkdir()
    for fence in TEST_FILES:
        (tests / f"test_readme_line_{fence.line}.py").write_text(fence.source)
    report = project / "report.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            "--continue-on-collection-errors",
            "tests",
        ],
        cwd=project,
        env=child_environment(services_for(TEST_FILES, request)),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT * 2,
        check=False,
    )
    output = result.stdout + result.stderr
    outcomes: dict[str, list[tuple[str, str, str]]] = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - ours
            # A module that fails to import is reported by name, without a class.
            where = case.get("classname") or case.get("name", "")
            module = where.rsplit(".", 1)[-1]
            problems = [child for child in case if child.tag in PROBLEMS]
            outcome = problems[0].tag if problems else "passed"
            text = problems[0].get("message", "") if problems else ""
            outcomes.setdefault(module, []).append(
                (case.get("name", ""), outcome, text)
            )
    return BlockRun(outcomes, output)


@pytest.mark.parametrize("fence", TEST_FILES, ids=lambda fence: fence.name)
def test_a_test_block_passes_under_the_plugin(
    fence: Fence, test_files_run: BlockRun
) -> None:
    """The block, as a test file of a bare project, has tests and they all pass."""
    cases = test_files_run.outcomes.get(f"test_readme_line_{fence.line}")
    assert cases, f"no test ran from {fence.name}:\n{test_files_run.output}"
    failed = [case for case in cases if case[1] != "passed"]
    assert not failed, f"{fence.name}: {failed}\n{test_files_run.output}"


# -- scripts -------------------------------------------------------------------


@pytest.fixture
async def readme_server() -> AsyncIterator[SMTPTestServer]:
    """The SMTP server the scripts' .env points at: 127.0.0.1, a free port, plain."""
    async with SMTPTestServer() as server:
        yield server


async def run_script(
    fence: Fence, directory: Path, server: SMTPTestServer, extra: Mapping[str, str]
) -> tuple[int, str, str]:
    """Run the block in ``directory`` with a .env for ``server``: (code, out, err)."""
    env_lines = {
        "MAILER_SMTP_HOST": server.host,
        "MAILER_SMTP_PORT": str(server.port),
        "MAILER_FROM": SENDER,
        **extra,
    }
    (directory / ".env").write_text(
        "".join(f"{key}={value}\n" for key, value in env_lines.items())
    )
    script = directory / "readme_block.py"
    script.write_text(fence.source)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUNNER,
        script.name,
        cwd=directory,
        env=child_environment(extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(BLOCK_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{fence.name} did not end within {BLOCK_TIMEOUT}s", pytrace=False)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("fence", SCRIPTS, ids=lambda fence: fence.name)
async def test_a_script_block_runs_and_its_mail_arrives(
    fence: Fence,
    readme_server: SMTPTestServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The block runs against a real local server; what it sends arrives, what it prints matches."""
    directory = prepare_project(tmp_path / "project")
    code, out, err = await run_script(
        fence, directory, readme_server, services_for([fence], request)
    )
    assert code == 0, f"{fence.name} failed:\n{fence.source}\n{err}"
    if fence.output is not None:
        checker = doctest.OutputChecker()
        assert checker.check_output(fence.output, out, doctest.ELLIPSIS), (
            f"{fence.name} printed:\n{out}\nthe README shows:\n{fence.output}"
        )
    if SENDS.search(fence.source):
        arrived = readme_server.outbox
        assert len(arrived) > 0, f"{fence.name} sends, but nothing arrived"
        for mail in arrived:
            assert mail.from_ == ("shop@example.test",), mail.from_


async def test_the_script_runner_allows_top_level_await_and_reports_failures(
    readme_server: SMTPTestServer, tmp_path: Path
) -> None:
    """A block's top-level await runs; an exception is a non-zero exit with its traceback."""
    fine = Fence(
        1, "python", "import asyncio\nprint(await asyncio.sleep(0, 'ok'))\n", (), None
    )
    broken = Fence(2, "python", "from mailer import no_such_name\n", (), None)
    assert await run_script(fine, tmp_path, readme_server, {}) == (0, "ok\n", "")
    code, _, err = await run_script(broken, tmp_path, readme_server, {})
    assert code == 1
    assert "ImportError: cannot import name 'no_such_name'" in err


@pytest.fixture(scope="module")
def readme_example_service() -> dict[str, str]:
    """Stand in for a service a block may need (as a PostgreSQL fixture would)."""
    return {"MAILER_TIMEOUT": "7", "EXAMPLE_URL": "example://service"}


async def test_a_block_gets_the_services_it_names(
    readme_server: SMTPTestServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """needs=NAME starts SERVICES[NAME]'s fixture and adds its lines to the .env."""
    monkeypatch.setitem(SERVICES, "example", "readme_example_service")
    fence = read_fences(
        "<!-- readme-test: needs=example -->\n"
        "```python\nimport os\nfrom mailer import MailerSettings\n"
        "print(MailerSettings(_env_file=None).timeout, os.environ['EXAMPLE_URL'])\n"
        "print(MailerSettings().timeout)\n```\n"
    )[0]
    extra = services_for([fence], request)
    assert await run_script(fence, tmp_path, readme_server, extra) == (
        0,
        "7.0 example://service\n7.0\n",
        "",
    )


def test_a_need_nobody_provides_fails_and_says_where_to_add_it(
    request: pytest.FixtureRequest,
) -> None:
    """An unknown need is a failure naming SERVICES, never a skip."""
    fence = Fence(1, "python", "pass\n", ("redis",), None)
    with pytest.raises(pytest.fail.Exception, match="needs 'redis'.*SERVICES"):
        services_for([fence], request)
