"""`alignctl race`: a tiny race through the CLI, pairing and censoring, resume."""

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.train.race import table

runner = CliRunner()
TINY = {
    "model": {"arch": "mlp", "in_features": 8, "hidden": [32], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 200, "n_bits": 8, "k": 2, "seed": 0},
    "train": {"epochs": 30, "loss": "cross_entropy",
              "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1}},
    "grokked": {"test_acc": 0.9},
}  # fmt: skip


def _run(r, s, epoch, secs=1.0):
    return {"grokked_epoch": epoch, "train_seconds": secs}


def test_pairing_censoring_and_speedup():
    results = {("none", 0): _run("none", 0, 100, 2.0), ("none", 1): _run("none", 1, None, 3.0),
               ("ga", 0): _run("ga", 0, 10, 0.5), ("ga", 1): _run("ga", 1, 20, 1.0)}  # fmt: skip
    rows = table(results, ["none", "ga"], [0, 1], max_epochs=200)
    base, ga = rows
    assert base["mean_epochs"] == 150  # the censored run counts at max_epochs
    assert ga["mean_epochs"] == 15 and ga["speedup"] == pytest.approx(10.0)
    assert base["grokked"] == 1 and ga["grokked"] == 2
    assert base["censored"] and ga["censored"]
    assert base["bound"] is None and ga["bound"] == "lower"  # censored baseline: speed-up >=
    assert base["p_value"] is None and base["test"] is None
    # a censored baseline run: the log-rank test, by hand (events at 10, 20 and 100)
    assert ga["test"] == "log-rank"
    assert ga["p_value"] == pytest.approx(logrank_by_hand([100, 200], [1, 0], [10, 20], [1, 1]))
    assert ga["wall_speedup"] == pytest.approx(2.5 / 0.75)


def logrank_by_hand(xe, xg, ye, yg) -> float:
    """Two-sided log-rank p-value: sum over event times of observed minus expected events of
    the first group, over the square root of the hypergeometric variance."""
    import math

    obs = exp = var = 0.0
    for t in sorted({e for e, g in zip(xe + ye, xg + yg, strict=True) if g}):
        nx = sum(e >= t for e in xe)
        n = nx + sum(e >= t for e in ye)
        d = sum(e == t and g for e, g in zip(xe + ye, xg + yg, strict=True))
        obs += sum(e == t and g for e, g in zip(xe, xg, strict=True))
        exp += d * nx / n
        var += d * (nx / n) * (1 - nx / n) * (n - d) / (n - 1) if n > 1 else 0.0
    z = (obs - exp) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2))


def test_a_race_where_the_baseline_never_grokked_uses_the_log_rank_test():
    """Issue 12: 0 of 2 baseline runs grokked, yet a paired t-test gave p = 0.0049."""
    from scipy.stats import CensoredData, logrank

    results = {("none", 0): _run("none", 0, None), ("none", 1): _run("none", 1, None),
               ("ga", 0): _run("ga", 0, 10), ("ga", 1): _run("ga", 1, 20)}  # fmt: skip
    base, ga = table(results, ["none", "ga"], [0, 1], max_epochs=200)
    assert base["grokked"] == 0 and ga["test"] == "log-rank"
    # by hand: at t=10, 4 at risk (2 baseline), 1 event: E=1/2, V=1/4; at t=20, 3 at risk
    # (2 baseline), 1 event: E=2/3, V=2/9; O=0: z = -(7/6) / sqrt(17/36)
    z = -(7 / 6) / (17 / 36) ** 0.5
    import math

    assert ga["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert ga["p_value"] == pytest.approx(logrank_by_hand([200, 200], [0, 0], [10, 20], [1, 1]))
    want = logrank(CensoredData(right=[200, 200]), CensoredData(uncensored=[10, 20])).pvalue
    assert ga["p_value"] == pytest.approx(want)
    # no run of either grokked: no test can say anything
    results = {(r, s): _run(r, s, None) for r in ("none", "ga") for s in (0, 1)}
    ga = table(results, ["none", "ga"], [0, 1], max_epochs=200)[1]
    # and no test is named beside the missing p (the table said "log-rank" beside "-")
    assert ga["p_value"] is None and ga["test"] is None


def test_a_race_where_nothing_grokked_names_no_test_in_its_tables():
    from alignctl.report.render_race import markdown_table

    results = {(r, s): _run(r, s, None) for r in ("none", "ga") for s in (0, 1)}
    res = {"task": "sparse-parity", "seeds": 2, "seed_offset": 0, "max_epochs": 200,
           "rows": table(results, ["none", "ga"], [0, 1], max_epochs=200)}  # fmt: skip
    assert "log-rank" not in markdown_table(res).split("\n\n")[1]  # the table, not its note


def test_every_pair_grokked_keeps_the_paired_t_test():
    from scipy.stats import ttest_rel

    results = {("none", 0): _run("none", 0, 100), ("none", 1): _run("none", 1, 150),
               ("none", 2): _run("none", 2, 90), ("ga", 0): _run("ga", 0, 10),
               ("ga", 1): _run("ga", 1, 20), ("ga", 2): _run("ga", 2, 12)}  # fmt: skip
    ga = table(results, ["none", "ga"], [0, 1, 2], max_epochs=200)[1]
    assert ga["test"] == "paired t-test" and not ga["censored"]
    assert ga["p_value"] == pytest.approx(ttest_rel([100, 150, 90], [10, 20, 12]).pvalue)


def _censored_race(reg: str) -> dict:
    """Sparse parity, 2 seeds: one baseline run censored, the regulariser's both grokked."""
    results = {("none", 0): _run("none", 0, None), ("none", 1): _run("none", 1, 1800),
               (reg, 0): _run("g", 0, 90), (reg, 1): _run("g", 1, 85)}  # fmt: skip
    return {"task": "sparse-parity", "seeds": 2, "seed_offset": 0, "max_epochs": 6000,
            "rows": table(results, ["none", reg], [0, 1], max_epochs=6000)}  # fmt: skip


def test_race_tables_say_which_test_and_fit_the_terminal():
    from markdown_it import MarkdownIt
    from rich.console import Console

    from alignctl.report.render_race import markdown_table, rich_table

    res = _censored_race("grokalign:lambda=0.1|x")
    toks = MarkdownIt("commonmark").enable("table").parse(markdown_table(res))
    cells = [t.children[0].content if t.children else "" for t in toks if t.type == "inline"]
    n = 9  # 8 columns and the paper's epochs: sparse parity is a row of Table 1
    head, ga = cells[1 : 1 + n], cells[1 + 2 * n : 1 + 3 * n]
    assert head[3:5] == ["p", "test"] and head[-1] == "paper epochs"
    assert ga[0] == "grokalign:lambda=0.1|x" and ga[4] == "log-rank" and ga[-1] == "110"
    for width in (80, 120):
        console = Console(width=width, no_color=True, record=True)
        with console.capture() as cap:
            console.print(rich_table(res))
        out = cap.get()
        assert max(len(x) for x in out.splitlines()) <= width and "…" not in out
        assert "log-rank" in out and ">=" in out


@pytest.mark.parametrize(
    ("base", "reg", "want", "mark"),
    [(100, 10, None, ""), (None, 10, "lower", ">="), (100, None, "upper", "<="),
     (None, None, "unknown", "~")],
)  # fmt: skip
def test_censored_speedup_is_marked_with_its_direction(base, reg, want, mark):
    from alignctl.cli.race import markdown_table

    results = {("none", 0): _run("none", 0, base), ("ga", 0): _run("ga", 0, reg)}
    rows = table(results, ["none", "ga"], [0], max_epochs=200)
    assert rows[1]["bound"] == want
    res = {"task": "t", "seeds": 1, "seed_offset": 0, "max_epochs": 200, "rows": rows}
    line = next(x for x in markdown_table(res).splitlines() if x.startswith("| ga |"))
    speedup = (200 if base is None else base) / (200 if reg is None else reg)
    assert line.split(" | ")[2].replace("\\", "") == f"{mark}{speedup:.2f}x"  # \>= in Markdown
    assert ("lower bound" in markdown_table(res)) == (want is not None)


def test_tiny_race_through_the_cli_and_resume(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "race"
    args = ["race", "--config", str(cfg), "--regs", "none,grokalign:lambda=0.1", "--seeds", "2",
            "--max-epochs", "30", "--out", str(out),
            "--json", str(tmp_path / "r.json")]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert {"task", "seeds", "max_epochs", "rows"} <= set(res) and res["seeds"] == 2
    for row in res["rows"]:
        assert {"reg", "mean_epochs", "std_epochs", "speedup", "p_value", "mean_seconds",
                "wall_speedup", "grokked", "runs"} <= set(row)  # fmt: skip
    assert res["rows"][0]["p_value"] is None and res["rows"][0]["runs"] == 2
    assert "| none |" in r.stdout  # piped: Markdown
    terminal = {"FORCE_COLOR": "1", "NO_COLOR": "1", "COLUMNS": "100"}  # rich: a terminal
    on_terminal = runner.invoke(app, args, env=terminal)
    assert on_terminal.exit_code == 0 and "| none |" not in on_terminal.stdout
    assert "regulariser" in on_terminal.stdout and "none" in on_terminal.stdout
    # the same seed gives the same data and initialisation to every regulariser
    a = yaml.safe_load((out / "none" / "seed_1" / "alignctl.yaml").read_text())
    b = yaml.safe_load((out / "grokalign__lambda=0.1" / "seed_1" / "alignctl.yaml").read_text())
    assert a["data"] == b["data"] and a["train"]["seed"] == b["train"]["seed"] == 1
    # a second run skips every finished pair
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("run.json")}
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("run.json")} == stamps
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == res["rows"]


def test_race_rejects_unknown_regulariser(tmp_path):
    args = ["race", "--task", "sparse-parity", "--regs", "none,bogus", "--seeds", "1",
            "--out", str(tmp_path / "o")]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "bogus" in r.stderr


def test_paper_numbers_beside_ours_only_for_table_1_rows():
    from alignctl.report.paper import TABLE1, paper_epochs
    from alignctl.report.render_race import markdown_table

    assert paper_epochs("sparse-parity", "grokalign:every=4") == 110
    assert paper_epochs("modular-addition", "orthograd") == "unstable"
    # the digits stand-ins carry the MNIST rows they stand in for, squared error included
    mse = paper_epochs("digits-grok-mse", "grokalign")
    assert mse == 1154 == paper_epochs("mnist-mse", "grokalign")
    assert paper_epochs("digits-grok-mse", "orthograd") == "unstable"
    assert paper_epochs("digits-grok", "none") == 2508
    assert paper_epochs("my-task", "none") is None and paper_epochs(None, "none") is None
    assert {"xor-cluster", "sparse-parity", "mnist", "mnist-mse", "modular-addition"} <= set(TABLE1)
    own = {"task": None, "seeds": 1, "seed_offset": 0, "max_epochs": 5, "rows": []}
    assert "paper" not in markdown_table(own).lower()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 220))
def test_race_terminal_table_fits_any_width_and_cuts_no_number(width):
    """qa9: the race table was rich's own squeeze: on a narrow terminal numbers were folded
    or cropped. Now it is fitted as analyze's and compare's: regulariser, mean epochs and
    speed-up always whole, the other columns while they fit, the rest named below."""
    from rich.console import Console

    from alignctl.report.render_race import fitted, head, rows

    res = _censored_race("grokalign:lambda=0.1")
    renderable, need = fitted(res, width)
    console = Console(width=max(width, need), no_color=True, record=True)
    with console.capture() as cap:
        console.print(renderable)
    out = cap.get()
    lines = out.splitlines()
    assert max(len(x) for x in lines) <= max(width, need) and "…" not in out
    cols = head(res)
    for row in rows(res):
        for i in (1, 2):  # mean epochs, speed-up: whole, on one line
            assert any(row[i] in line for line in lines), (row[i], out)
    if width >= 200:
        assert "not shown" not in out and all(c.split()[0] in out for c in cols)
