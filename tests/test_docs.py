"""The documentation's examples do what it says: docs/testing.md's lab suite passes in a fresh
folder with plain ``pytest`` (no options, no ini file), as a lab's project would run it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of one language in a Markdown text, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_testing_guides_complete_example_passes_with_plain_pytest(tmp_path):
    text = (ROOT / "docs" / "testing.md").read_text()
    code = code_blocks(text.split("## A complete example", 1)[1], "python")[0]
    assert code.count("def test_") == 3
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_lab.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_the_testing_guide_asks_for_no_p_option_and_no_package_index():
    text = (ROOT / "docs" / "testing.md").read_text()
    assert "no:nengo" not in text
    installs = re.findall(r"pip install ([^\n]*)", text)
    assert installs and all(not i.startswith("memristor-hil ") for i in installs), installs


#: The README's two commands, exactly as a fresh clone runs them (CI and the lead run these).
README_COMMANDS = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/memristor-hil demo",
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest",
)


def test_the_readme_starts_with_the_two_commands_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    blocks = code_blocks(text, "sh")
    assert [b.strip() for b in blocks[:2]] == list(README_COMMANDS)
    assert len(text.splitlines()) < 130  # a front page; the reference lives in docs/
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_every_guide_is_a_page_of_the_site():
    index = (ROOT / "docs" / "index.md").read_text()
    guides = {p.stem for p in (ROOT / "docs").glob("*.md")} - {"index"}
    missing = sorted(g for g in guides if f"\n{g}\n" not in index)
    assert not missing, f"add to a toctree of docs/index.md: {missing}"


def test_the_lab_bench_service_block_can_be_pasted_at_once(tmp_path):
    """docs/lab-bench.md step 1 then `info`, pasted in one go: the service's ready file makes
    the next command wait instead of meeting "Connection refused"."""
    import socket

    text = (ROOT / "docs" / "lab-bench.md").read_text()
    block = next(b for b in code_blocks(text, "sh") if "memristor-hil emulate" in b)
    info = next(b for b in code_blocks(text, "sh") if b.startswith("memristor-hil info visa"))
    with socket.socket() as s:  # the walkthrough's port may be taken on a CI machine
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = (block + info).replace("5025", port) + "kill %1\nwait\n"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "memristor-hil,EmulatedCrossbar,208x200,seed=3" in done.stdout  # as the page says
    assert not (tmp_path / "out" / "service.ready").exists()  # gone with the service


def _docs_conf() -> dict:
    import runpy

    return runpy.run_path(str(ROOT / "docs" / "conf.py"))


def test_the_docs_build_treats_a_cross_reference_to_nothing_as_an_error(tmp_path):
    """Nitpicky mode is on in docs/conf.py (so the README's command and CI both use it), and it
    ignores only third-party targets: a reference to a missing name of ours fails ``-W``."""
    conf = _docs_conf()
    assert conf["nitpicky"] is True
    assert "nitpick_ignore_regex" not in conf
    ours = [
        t
        for _, t in conf["nitpick_ignore"]
        if t.split(".")[0].startswith(("memristor", "pytest_memristor"))
    ]
    assert not ours, ours
    assert "sphinx-build -W" in (ROOT / ".ci" / "run").read_text()

    pytest.importorskip("sphinx", reason="the [docs] extra; .ci/run runs this after installing it")
    (tmp_path / "conf.py").write_text(f"exec(open({str(ROOT / 'docs' / 'conf.py')!r}).read())\n")
    (tmp_path / "index.rst").write_text("Index\n=====\n\nSee :func:`memristor_hil.no_such_name`.\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-q",
            "-b",
            "html",
            str(tmp_path),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "memristor_hil.no_such_name" in done.stderr


def test_the_api_page_names_no_private_base_class():
    """show-inheritance replaces a base from a private module (``drivers._sequenced``) by its
    own public bases, so the API page never links to an undocumented class."""
    from memristor_hil.drivers import SerialCrossbar, VisaCrossbar

    from memristor_hil.crossbar import Crossbar

    public_bases = _docs_conf()["public_bases"]
    for cls in (SerialCrossbar, VisaCrossbar):
        bases = list(cls.__bases__)
        assert any(b.__module__.endswith("._sequenced") for b in bases)  # the case this covers
        public_bases(None, cls.__name__, cls, {}, bases)
        assert bases == [Crossbar]


WALKTHROUGH = ROOT / ".ci" / "walkthrough.py"


def test_the_walkthrough_runner_stops_at_the_first_failure_and_stops_its_services(tmp_path):
    # .ci/walkthrough.py runs docs/lab-bench.md in CI: a failing block must fail the run, the
    # blocks after it must not run, and a service a block started in the background must not
    # outlive it (CI would hang on it, or the next walkthrough find its port taken)
    port_file = tmp_path / "service.port"
    service = (
        "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
        "open(sys.argv[1], 'w').write(str(s.getsockname()[1])); time.sleep(60)"
    )
    guide = tmp_path / "guide.md"
    guide.write_text(
        "# A guide\n\n"
        f'```sh\n{sys.executable} -c "{service}" {port_file} &\n'
        f"until [ -s {port_file} ]; do sleep 0.1; done\n```\n\n"
        "<!-- walkthrough: skip needs an instrument -->\n```sh\nexit 3\n```\n\n"
        "```python\nprint('python block ran')\n```\n\n"
        "```sh\nfalse\n```\n\n"
        "```sh\necho never printed\n```\n"
    )
    done = subprocess.run(
        [sys.executable, str(WALKTHROUGH), str(guide)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "skipped, needs an instrument" in done.stdout
    assert "python block ran" in done.stdout
    assert "never printed" not in done.stdout
    with pytest.raises(ConnectionRefusedError):  # the service the first block started is gone
        socket.create_connection(("127.0.0.1", int(port_file.read_text())), timeout=5).close()


def test_the_lab_bench_walkthrough_runs_every_block():
    # CI runs the guide as pasted; no block of it may be quietly left out
    script = subprocess.run(
        [sys.executable, str(WALKTHROUGH), "docs/lab-bench.md", "--print"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    blocks = code_blocks((ROOT / "docs" / "lab-bench.md").read_text(), "(?:sh|python)")
    assert len(blocks) == 13 and "skipped" not in script
    assert all(block in script for block in blocks)
