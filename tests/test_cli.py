"""Every CLI command has help with an example, and is documented in the README (as sqlite-utils' test_docs)."""

import errno
import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli_helpers import disk_full, leftovers, one_line, read_only, run_main
from netzoo.cli import cli
from zoo_fixture import make_zoo

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += _commands(command, f"{prefix}{name} ")
        else:
            out.append((f"{prefix}{name}", command))
    return out


COMMANDS = _commands(cli)


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_every_command_has_help_with_an_example(name):
    result = CliRunner().invoke(cli, name.split() + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"netzoo {name} --help shows no example"


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_every_command_is_in_the_readme(name):
    assert f"netzoo {name}" in README, f"README.md does not mention `netzoo {name}`"


def test_netzoo_errors_print_one_line_without_traceback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "netzoo.cli", "zoo", "list", "--zoo", str(tmp_path / "nowhere")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --- issue 12 G15: one clear line, no traceback, no temporary file left ------------------------------


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"), names=("Basic", "LinearTanh_1"))


def _train(monkeypatch, capsys, zoo, results, *extra):
    return run_main(monkeypatch, capsys, "train", "--zoo", zoo, "--dataset", "digits", "--results", results,
                    "--epochs", "1", "--device", "cpu", "--workers", "1", "--no-lenses", "--quiet", *extra)


def _verify_clean(monkeypatch, capsys, results):
    code, out, _ = run_main(monkeypatch, capsys, "verify", "--results", results)
    assert code == 0, out


@pytest.mark.parametrize("command", ["train", "status", "verify", "compact"])
def test_results_pointing_at_a_file_is_refused_in_one_line(zoo, tmp_path, monkeypatch, capsys, command):
    file = tmp_path / "results.txt"
    file.write_text("not a folder")
    if command == "train":
        code, _, err = _train(monkeypatch, capsys, zoo, file)
    else:
        code, _, err = run_main(monkeypatch, capsys, command, "--results", file)
    assert code == 2 and "results.txt" in one_line(err) and "folder" in err
    assert file.read_text() == "not a folder"


@pytest.mark.parametrize("trained_first", [False, True])
@pytest.mark.parametrize("fault", [errno.EROFS, errno.EACCES])
def test_a_read_only_results_folder_is_one_line(zoo, tmp_path, monkeypatch, capsys, trained_first, fault):
    results = tmp_path / "results"
    if trained_first:  # nothing left to train: still refused, nothing written
        assert _train(monkeypatch, capsys, zoo, results)[0] == 0
    else:
        results.mkdir()
    read_only(monkeypatch, results, fault)
    code, _, err = _train(monkeypatch, capsys, zoo, results)
    monkeypatch.undo()
    assert code == 2 and str(results) in one_line(err), err
    assert leftovers(results) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the read-only test above simulates it")
def test_a_chmod_read_only_results_folder_is_one_line(zoo, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    assert _train(monkeypatch, capsys, zoo, results)[0] == 0
    for path in [results, *results.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    try:
        code, _, err = _train(monkeypatch, capsys, zoo, results)
    finally:
        for path in [results, *results.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    assert code == 2 and "ermission" in one_line(err)


@pytest.mark.parametrize("where", ["/epochs/", "/predictions/", "/networks/", "/recipes/", "/jobs/", "/claims/",
                                   "dataset.json"])
def test_disk_full_while_writing_is_one_line_and_a_rerun_completes(zoo, tmp_path, monkeypatch, capsys, where):
    results = tmp_path / "results"
    results.mkdir()
    disk_full(monkeypatch, results, match=where)
    code, _, err = _train(monkeypatch, capsys, zoo, results)
    monkeypatch.undo()
    assert code != 0 and "space" in one_line(err), err
    assert leftovers(results) == []
    claims = results / "claims"
    assert not claims.is_dir() or not list(claims.glob("*.claim"))
    code, out, err = _train(monkeypatch, capsys, zoo, results)  # space freed
    assert code == 0, err
    _verify_clean(monkeypatch, capsys, results)


def test_a_truncated_manifest_is_refused_by_train_in_one_line(zoo, tmp_path, monkeypatch, capsys):
    import shutil

    broken = tmp_path / "zoo"
    shutil.copytree(zoo, broken)
    manifest = broken / "manifest.parquet"
    manifest.write_bytes(manifest.read_bytes()[:300])
    code, _, err = _train(monkeypatch, capsys, broken, tmp_path / "results")
    assert code == 2 and "manifest.parquet" in one_line(err) and "netzoo generate" in err
    assert leftovers(tmp_path) == []


def test_a_damaged_job_record_is_refused_by_status_in_one_line(zoo, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    assert _train(monkeypatch, capsys, zoo, results)[0] == 0
    (record,) = (results / "jobs").glob("*.json")
    record.write_text(record.read_text()[:20])
    code, _, err = run_main(monkeypatch, capsys, "status", "--results", results)
    assert code == 2 and record.name in one_line(err)
    assert _train(monkeypatch, capsys, zoo, results)[0] == 0  # train rewrites it
    assert json.loads(record.read_text())["networks"]
    assert run_main(monkeypatch, capsys, "status", "--results", results)[0] == 0


@pytest.mark.parametrize("seeds", ["99999999999999999999", "-1", str(2**63), "1,x", "", ","])
def test_seeds_outside_int64_or_none_at_all_are_refused_in_one_line(zoo, tmp_path, monkeypatch, capsys, seeds):
    code, _, err = _train(monkeypatch, capsys, zoo, tmp_path / "results", "--seeds", seeds)
    assert code == 2 and "--seeds" in one_line(err)
    assert not (tmp_path / "results").exists()


def test_an_eof_inside_a_command_is_a_bug_with_a_traceback_not_an_abort(tmp_path, monkeypatch, capsys):
    import netzoo.status

    def broken(results):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(netzoo.status, "status_report", broken)
    with pytest.raises(EOFError):
        run_main(monkeypatch, capsys, "status", "--results", tmp_path)
    assert "aborted" not in capsys.readouterr().err


def test_ctrl_c_is_aborted_with_exit_130(tmp_path, monkeypatch, capsys):
    import netzoo.status

    def interrupted(results):
        raise KeyboardInterrupt

    monkeypatch.setattr(netzoo.status, "status_report", interrupted)
    code, _, err = run_main(monkeypatch, capsys, "status", "--results", tmp_path)
    assert code == 130 and one_line(err) == "aborted"
