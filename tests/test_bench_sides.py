"""bench/sides.py: sides run interleaved (A B A B …) in fresh processes, and the medians and
spreads of each side and of the per-round ratios are right. The sides are real `python -c`
subprocesses that print fixed results and append their name to a shared file."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("sides", ROOT / "bench" / "sides.py")
sides = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sides)

# per round: (samples/s, peak RSS MB) of each side
OURS = [(12.0, 800.0), (9.0, 900.0), (15.0, 700.0)]
PEER = [(6.0, 1000.0), (6.0, 1000.0), (5.0, 1400.0)]


def fake_side(name: str, per_round: list, log: Path) -> list[str]:
    """A side that logs its name and pid, then prints the result of the round it is in
    (the round is how many times it already ran, read back from the log)."""
    code = (
        "import json, os, sys\n"
        f"log = {str(log)!r}\n"
        f"runs = open(log).read().split().count({name!r}) if os.path.exists(log) else 0\n"
        f"open(log, 'a').write({name!r} + ' ' + str(os.getpid()) + '\\n')\n"
        f"rate, rss = {per_round!r}[runs]\n"
        "print('some log line')\n"
        "print('RESULT ' + json.dumps({'samples_per_s': rate, 'peak_rss_mb': rss}))\n")
    return [sys.executable, "-c", code]


def test_sides_run_interleaved_in_fresh_processes_and_ratios_are_per_round(tmp_path, capsys):
    log = tmp_path / "order.log"
    results = sides.run_rounds({"peer": fake_side("peer", PEER, log),
                                "ours": fake_side("ours", OURS, log)}, rounds=3, log=lambda _: None)
    entries = [line.split() for line in log.read_text().splitlines()]
    assert [name for name, _ in entries] == ["peer", "ours"] * 3          # A B A B A B
    assert len({pid for _, pid in entries}) == 6                          # a new process each run
    assert [r["samples_per_s"] for r in results["ours"]] == [12.0, 9.0, 15.0]
    assert [r["round"] for r in results["peer"]] == [1, 2, 3]

    summary = sides.report(results, "ours", labels={"peer": "TRL"}, load_at_start=(1.5, 1.0, 0.5))
    assert summary["sides"]["ours"]["samples_per_s"] == {"median": 12.0, "min": 9.0, "max": 15.0}
    assert summary["sides"]["peer"]["peak_rss_mb"] == {"median": 1000.0, "min": 1000.0, "max": 1400.0}
    ratio = summary["ratios"]["peer"]
    # per round: 12/6 = 2.0, 9/6 = 1.5, 15/5 = 3.0 (not the ratio of the medians, 12/6)
    assert ratio["throughput"] == {"median": 2.0, "min": 1.5, "max": 3.0}
    assert ratio["peak_rss"]["median"] == pytest.approx(0.8)             # 0.8, 0.9, 0.5
    out = capsys.readouterr().out
    assert "ratio ours/TRL: throughput median 2.00x [1.50-3.00], peak RSS median 0.80x" in out
    assert "load average at start 1.50 1.00 0.50" in out


def test_a_failing_side_stops_the_run_with_its_error(tmp_path):
    bad = [sys.executable, "-c", "import sys; sys.exit('no model here')"]
    with pytest.raises(SystemExit, match="(?s)bad failed in round 1.*no model here"):
        sides.run_rounds({"bad": bad}, rounds=2, log=lambda _: None)


def test_cpu_time_throughput_is_summarised_when_every_run_reports_it():
    run = lambda wall, cpu: {"samples_per_s": wall, "peak_rss_mb": 1.0, "samples_per_cpu_s": cpu}
    results = {"peer": [run(1.0, 2.0), run(2.0, 2.0), run(1.0, 1.0)],
               "ours": [run(3.0, 8.0), run(3.0, 4.0), run(3.0, 3.0)]}
    summary = sides.summarize(results, "ours")
    assert summary["sides"]["ours"]["samples_per_cpu_s"] == {"median": 4.0, "min": 3.0, "max": 8.0}
    assert summary["ratios"]["peer"]["cpu_throughput"] == {"median": 3.0, "min": 2.0, "max": 4.0}
    assert summary["ratios"]["peer"]["throughput"]["median"] == 3.0
    del results["peer"][0]["samples_per_cpu_s"]                 # one run without it: left out
    assert "cpu_throughput" not in sides.summarize(results, "ours")["ratios"]["peer"]
