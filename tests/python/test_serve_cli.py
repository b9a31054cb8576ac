"""`rtml serve`: the config file loader (the documented example included) and the CLI."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

import rtml
from rtml.server.config import server_from_config

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "rtml.example.toml"
FEATURES = ["amount", "avg_amount_30d", "n_txn_30d", "txn_count_10m", "txn_max_1h"]


def _example_dir(tmp_path: Path) -> Path:
    """The documented example config, next to a model with the features it names."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, len(FEATURES))), columns=FEATURES)
    y = (X["amount"] > 0).astype(int)
    rtml.Model.load(xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(X, y)).save(
        tmp_path / "fraud.rtml"
    )
    shutil.copy(EXAMPLE, tmp_path / "rtml.toml")
    return tmp_path / "rtml.toml"


def test_the_documented_example_config_serves(tmp_path):
    server = server_from_config(_example_dir(tmp_path), port=0)
    assert sorted(server.store.tables) == ["card"]
    assert sorted(server.store.window_sets) == ["card_txn"]
    assert sorted(server.scorers) == ["fraud"] and sorted(server.models) == ["fraud"]
    with server.start_in_thread() as srv, rtml.Client("127.0.0.1", srv.port) as client:
        client.put_features("card", ["c1"], {"avg_amount_30d": [40.0], "n_txn_30d": [3]}, ts=1e9)
        client.ingest("card_txn", ["c1", "c1"], [5.0, 7.0], ts=[1e9, 1e9 + 1])
        got = client.score("fraud", {"card_id": "c1", "amount": 12.5}, now=1e9 + 2)
        want = server.scorers["fraud"].score({"card_id": "c1", "amount": 12.5}, now=1e9 + 2)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"nonsense": {}}, "unknown sections"),
        ({"server": {"colour": "red"}}, "unknown \\[server\\] entries"),
        ({"tables": {"t": {"key": "float", "fields": {"x": "float64"}}}}, "key must be"),
        ({"tables": {"t": {"key": "str", "fields": {"x": "float64"}, "size": 3}}}, "tables.t"),
        ({"models": {"m": "missing.rtml"}}, "missing.rtml"),
        ({"server": {"host": "0.0.0.0"}}, "token"),
    ],
)
def test_config_errors_name_the_entry(config, message):
    with pytest.raises(rtml.RtmlError, match=message):
        server_from_config(config)


def test_unreadable_config_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = ")
    with pytest.raises(rtml.InputError, match="not valid TOML"):
        server_from_config(bad)
    with pytest.raises(rtml.InputError, match="cannot read"):
        server_from_config(tmp_path / "absent.toml")


def test_rtml_serve_without_config_serves_the_demo_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtml", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert "demo's fraud scorer" in lines[0], lines
        assert "listening on" in lines[1], lines
        port = int(lines[1].split("listening on ")[1].split(";")[0].rsplit(":", 1)[1])
        with rtml.Client("127.0.0.1", port) as client:
            schema = client.stats("fraud")["scorers"]["fraud"]
            request = dict.fromkeys(schema["keys"], "x") | dict.fromkeys(schema["fields"], 1.0)
            score = client.score("fraud", request)
            assert 0.0 <= float(np.ravel(score)[-1]) <= 1.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_rtml_bench_refuses_unknown_suites(capsys):
    from rtml.cli import main

    assert main(["bench", "nonsense"]) == 2
    assert "unknown suites" in capsys.readouterr().err


def test_rtml_bench_runs_the_checkouts_suite_from_its_root(tmp_path, monkeypatch, capsys):
    """`rtml bench` imports benchmarks/ from the current directory (the console script's
    directory, not the checkout, is first on sys.path)."""
    from rtml import cli

    suite = tmp_path / "benchmarks"
    suite.mkdir()
    (suite / "__init__.py").write_text("")
    (suite / "fake_suite.py").write_text(
        "def main(argv):\n    print('fake suite ran with', argv)\n    return 0\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.setattr(cli, "BENCH_SUITES", ("fake_suite",))
    monkeypatch.delitem(sys.modules, "benchmarks", raising=False)
    assert cli.main(["bench", "--quick"]) == 0
    assert "fake suite ran with ['--quick']" in capsys.readouterr().out
