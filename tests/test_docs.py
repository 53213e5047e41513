"""The docs tell the truth: generated pages up to date, samples as printed, links that lead."""

from __future__ import annotations

import io
import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests import docs


def test_the_reference_pages_are_what_conf_the_schemas_and_help_say():
    done = subprocess.run(
        [sys.executable, str(docs.DOCS / "gen_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_configuration_reference_lists_every_option_and_key():
    from mlcli.config import GROUPS, catalog

    text = docs.page("reference/config.md")
    for setting in catalog.run_settings():
        assert f"| `{setting.name}` |" in text, setting.name
    for group in GROUPS:
        for option in catalog.options(group):
            assert f"### `{group}={option.name}`" in text, (group, option.name)
            for key in option.keys:
                assert f"| `{group}.{key.name}` |" in text, (group, option.name, key.name)


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = docs.page("README.md")
    assert len(text.splitlines()) <= 150
    first = next(b for b in docs.blocks(text) if b.lang)
    assert [line.split("#")[0].strip() for line in first.lines] == ["make train", "make test"]
    assert text.index("make train") < text.index("\n## ")


def test_every_relative_link_and_picture_of_the_readme_exists():
    text = docs.page("README.md")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert len(local) >= 15 and "docs/img/report_curves.png" in local
    for target in local:
        assert (docs.ROOT / target).exists(), target
    picture = (docs.ROOT / "docs/img/report_curves.png").read_bytes()
    assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 10_000


def _samples() -> list[tuple[str, int, str, str]]:
    """(page, line, command, text) for each one-command ``bash`` block followed by a ``text``
    block: what the command prints."""
    found = []
    for path in docs.PAGES:
        page_blocks = docs.blocks(path.read_text(encoding="utf-8"))
        for block, after in itertools.pairwise(page_blocks):
            if block.lang == "bash" and block.after == "text" and len(block.lines) == 1:
                name = str(path.relative_to(docs.ROOT))
                found.append((name, block.start, block.lines[0], "\n".join(after.lines) + "\n"))
    return found


@pytest.mark.parametrize("sample", _samples(), ids=lambda s: f"{s[0]}:{s[1]}")
def test_a_sample_output_is_what_the_command_prints(sample, cli, tmp_path):
    _, _, command, expected = sample
    docs.write_example_runs(tmp_path)
    result = cli(*shlex.split(command, comments=True)[1:])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


def test_there_are_samples_to_compare():
    assert {s[0] for s in _samples()} >= {"README.md", "docs/guide/report.md"}


def test_a_study_journal_opens_in_optuna_dashboard(cli, tmp_path):
    """The Optuna page's `optuna-dashboard outputs/sweeps/<sweep dir>/optuna.journal`: the
    dashboard's own app, given the same path, lists the study and its trials."""
    import optuna_dashboard
    from optuna_dashboard._storage_url import get_storage

    result = cli(
        "train", "-m", "hydra/sweeper=optuna", "optim.lr=tag(log,interval(1e-4,1e-1))",
        "hydra.sweeper.n_trials=2", "dataset=iris", "epochs=1", "cv.n_splits=2",
        "progress=false",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (journal,) = Path("outputs/sweeps").glob("*/optuna.journal")
    app = optuna_dashboard.wsgi(get_storage(str(journal)))

    def get(path: str) -> dict:
        status: list[str] = []
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.input": io.BytesIO(),
            "wsgi.url_scheme": "http",
        }  # fmt: skip
        body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
        assert status[0].startswith("200"), (path, status)
        return json.loads(body)

    (study,) = get("/api/studies")["study_summaries"]
    assert study["study_name"] == "mlcli" and study["directions"] == ["maximize"]
    trials = get(f"/api/studies/{study['study_id']}")["trials"]
    assert [t["state"] for t in trials] == ["Complete", "Complete"]
    assert all("optim.lr" in {p["name"] for p in t["params"]} for t in trials)
