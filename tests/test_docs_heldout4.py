"""The documentation tells the truth, checked against the code, not against a hand-kept list:
every command line in README.md and docs/*.md parses, every option spelled there exists and
every option of every command is documented with it; internal links resolve; the README's JSON
report section is the keys of a real report; every path, module and function the docs cite
exists; the Python API snippet runs as written. The key and name tables (config keys,
registries, presets, verdicts): test_docs_tables_heldout4.py."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
import typer
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from alignctl.cli.assemble import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {p: p.read_text(encoding="utf-8") for p in DOCS}
README = TEXT[ROOT / "README.md"]
GROUP = typer.main.get_command(app)
OPS = {"&", "|", "&&", "||", ";", ">", "<"}
OPTION = r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w-])"  # not the rule's `--no-X`


def options(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


def snippets():
    """(file, text) of every shell-like fenced block (continuations joined) and inline span."""
    for path, text in TEXT.items():
        for t in MarkdownIt().parse(text):
            if t.type == "fence" and t.info.strip() in ("", "bash", "sh", "yaml"):
                yield path, t.content.replace("\\\n", " ")
            elif t.type == "inline":
                yield from ((path, c.content) for c in t.children if c.type == "code_inline")


def command_lines():
    """(file, command, args, line) of each `alignctl CMD ...` (also after `-m`, `run:`, `&`)."""
    for path, text in snippets():
        for line in text.splitlines():
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split, lex.commenters = True, "#"
            try:
                toks = list(lex)
            except ValueError:
                continue
            for i, t in enumerate(toks[:-1]):
                if t == "alignctl" and (i == 0 or toks[i - 1] in OPS | {"-m", "run:"}):
                    args = []
                    for a in toks[i + 2 :]:
                        if a in OPS:
                            break
                        args.append(a)
                    yield path, toks[i + 1], [a for a in args if a != "..."], line.strip()


def test_every_command_line_in_the_docs_parses():
    from typer._click.exceptions import ClickException, MissingParameter

    bad, n = [], 0
    for path, name, args, line in command_lines():
        if name.startswith("-"):  # alignctl --version
            assert name in options(GROUP) | {"--help"}, line
            continue
        assert name in GROUP.commands, f"{path.name}: unknown command in {line!r}"
        n += 1
        try:
            GROUP.commands[name].make_context(name, list(args))
        except MissingParameter as e:  # a mention (`alignctl analyze --output KEY`): no PATH
            if e.param is None or e.param.param_type_name != "argument":
                bad.append(f"{path.name}: {line!r}: {e.format_message()}")
        except ClickException as e:
            bad.append(f"{path.name}: {line!r}: {e.format_message()}")
    assert n >= 50 and not bad, "\n".join(bad)


def _foreign_options() -> set[str]:
    """Options of the other programs the docs run: benchmark scripts and torchrun."""
    from torch.distributed.run import get_args_parser

    out = set(get_args_parser()._option_string_actions)
    for script in (ROOT / "benchmarks").glob("*.py"):
        out |= set(re.findall(r"[\"'](--[a-z][\w-]*)[\"']", script.read_text(encoding="utf-8")))
    return out


def test_every_option_spelled_in_the_docs_exists():
    ours = set().union(options(GROUP), *(options(c) for c in GROUP.commands.values()))
    spelled = {o for t in TEXT.values() for o in re.findall(OPTION, t)}
    assert spelled - ours - {"--help", "--check"} - _foreign_options() == set()  # ruff --check
    # a benchmark's options are that script's
    for path, text in snippets():
        for script, rest in re.findall(r"(benchmarks/\w+\.py)([^|;&]*)", text):
            src = (ROOT / script).read_text(encoding="utf-8")
            for opt in re.findall(OPTION, rest):
                assert f'"{opt}"' in src, f"{path.name}: {script} has no {opt}"


def _context(name: str) -> str:
    """What the docs say about command `name`: sections headed by it, paragraphs naming it."""
    out = []
    for text in TEXT.values():
        parts = re.split(r"(?m)^(#{2,4} .*)$", text)
        for head, body in zip(["", *parts[1::2]], parts[::2], strict=True):
            if re.search(rf"alignctl {name}\b", head):
                out.append(body)
            out += [p for p in re.split(r"\n\s*\n", body) if re.search(rf"alignctl {name}\b", p)]
    if name == "train":
        out.append(TEXT[ROOT / "docs" / "training.md"])
    return "\n".join(out)


def _analyze_table() -> str:
    section = README.split("## `alignctl analyze`", 1)[1].split("### Metrics", 1)[0]
    return "\n".join(line.split(" | ")[0] for line in section.splitlines() if line.startswith("|"))


NO_RULE = "Every on/off switch `--X` also has `--no-X`"


@pytest.mark.parametrize("name", sorted(GROUP.commands))
def test_every_option_of_every_command_is_documented_with_it(name):
    cmd = GROUP.commands[name]
    where = _analyze_table() if name == "analyze" else _context(name)
    said = lambda o: re.search(re.escape(o) + r"(?![\w-])", where)  # noqa: E731
    missing = []
    for p in cmd.params:
        for o in p.opts:
            if o.startswith("-") and not said(o):
                missing.append(o)
        for o in p.secondary_opts:  # --no-X: spelled, or the README's rule and --X documented
            if not said(o) and not (NO_RULE in README and said(p.opts[0])):
                missing.append(o)
    assert not missing, f"alignctl {name}: undocumented {missing}"


def test_choice_lists_in_the_docs_are_the_commands():
    metavars = {o: p.metavar for c in GROUP.commands.values() for p in c.params for o in p.opts}
    for text in TEXT.values():
        for opt, choices in re.findall(r"`(--[a-z-]+) ([\w,.]+(?:\\?\|[\w,.]+)+)`", text):
            if "|" in metavars[opt]:  # a choice list, not `--plot FILE.png|svg|pdf`
                assert choices.replace("\\|", "|") == metavars[opt], opt


def _slug(heading: str) -> str:
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_internal_links_resolve():
    for path, text in TEXT.items():
        anchors = {_slug(h) for h in re.findall(r"(?m)^#+ (.*)$", text)}
        for target in re.findall(r"\]\(#([^)]+)\)", text):
            assert target in anchors, f"{path.name}: #{target}"
        for target in re.findall(r"\]\(((?!https?:|#)[^)#]+)", text):
            assert (path.parent / target).exists(), f"{path.name}: {target}"


# ---------------------------------------------------------------- the JSON report
EXAMPLE = ROOT / "examples" / "checkpoints" / "sparse-parity-grokalign"
DATA_KEYED = {"metrics", "metrics_std", "metrics_error", "thresholds", "regularisers"}
# fields the shipped example cannot produce: more than 256 classes, the XOR task's noise
CONDITIONAL = {("checkpoints", "metrics_error"), ("checkpoints", "noise_accuracy")}


def documented_fields() -> set[tuple]:
    """(enclosing keys..., key) of every quoted name in the README's JSON report block."""
    block = README.split("### JSON report", 1)[1].split("```", 2)[1]
    fields, stack, last = set(), [], None
    for m in re.finditer(r'"(\w+)"|[\[\]{}]', block):
        if m[1]:
            last = m[1]
            fields.add((*[k for k in stack if k], last))
        elif m[0] in "[{":
            stack.append(last)
            last = None
        else:
            stack.pop()
    return {f for f in fields if not set(f[:-1]) & DATA_KEYED or f[-1] == "name"}


def report_fields(value, where=()) -> set[tuple]:
    out = set()
    if isinstance(value, list):
        for v in value:
            out |= report_fields(v, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            out.add((*where, k))
            if k not in DATA_KEYED:
                out |= report_fields(v, (*where, k))
            elif k == "regularisers":  # [{"name", ...its parameters}]
                out |= {(*where, k, "name") for r in v if "name" in r}
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[dict]:
    """The example analysed plainly, then with every option that adds a field, then without
    its step-0 checkpoint (the stand-in `reference`)."""
    tmp = tmp_path_factory.mktemp("report")
    run = shutil.copytree(EXAMPLE, tmp / "run")
    bare = shutil.copytree(EXAMPLE, tmp / "bare")
    (bare / "checkpoints" / "step_00000000.safetensors").unlink()
    r = CliRunner()
    calls = [
        [str(run), "--json", str(tmp / "a.json")],
        [str(run), "--json", str(tmp / "b.json"), "--robustness", "--keep-samples",
         "--baseline", str(tmp / "a.json"), "--max-drop", "test_accuracy=0.5",
         "--max-rise", "jacobian_norm=100", "--fail-under", "train_accuracy=0.5"],
        [str(bare), "--json", str(tmp / "c.json"), "--no-cache"],
    ]  # fmt: skip
    for args in calls:
        res = r.invoke(app, ["analyze", *args, "--quiet", "--threads", "1"])
        assert res.exit_code == 0, res.stderr
    return [json.loads((tmp / f"{n}.json").read_text()) for n in "abc"]


def test_the_json_report_section_is_a_real_reports_fields(reports):
    doc = documented_fields()
    assert ("checkpoints", "evidence", "reads") in doc and ("gates", "max_rise") in doc
    real = set().union(*(report_fields(r) for r in reports))
    assert real - doc == set(), "fields a report has that the README does not document"
    assert doc - real - CONDITIONAL == set(), "documented fields no report has"
    assert reports[2]["reference"] is not None and "cache" not in reports[2]
    assert reports[0]["pgd"] is None and set(reports[1]["pgd"]) == {"eps", "alpha", "steps"}


# ---------------------------------------------------------------- what the docs cite
def test_every_path_module_and_function_the_docs_cite_exists():
    import importlib

    for path, text in TEXT.items():
        for ref in re.findall(r"(?<![\w/.-])((?:tests|src|benchmarks|examples|docs|\.ci)/"
                              r"[\w./-]*\w)", text):  # fmt: skip
            if not ref.endswith("_"):  # `tests/test_cli_*.py`
                assert (ROOT / ref).exists(), f"{path.name}: {ref}"
        for ref in re.findall(r"`((?:[\w]+/)+\w+\.py)[`:]", text):  # runs/run.py, geometry/svd.py
            bases = (ROOT / "src" / "alignctl", ROOT / "src" / "alignctl" / "runs", ROOT / "src")
            assert any((b / ref).exists() for b in (*bases, ROOT)), f"{path.name}: {ref}"
        for ref in re.findall(r"`(alignctl(?:\.\w+)+)`", text):
            if ref == "alignctl.yaml":
                continue
            parts = ref.split(".")
            for i in range(len(parts), 0, -1):
                try:
                    with warnings.catch_warnings():  # 0.1's flat paths, cited as deprecated
                        warnings.simplefilter("ignore", DeprecationWarning)
                        obj = importlib.import_module(".".join(parts[:i]))
                    break
                except ImportError:
                    continue
            for attr in parts[i:]:
                assert hasattr(obj, attr), f"{path.name}: {ref}"
                obj = getattr(obj, attr)
    # the data flows' `function (module.py)`: the function is defined in that module
    flows = TEXT[ROOT / "docs" / "architecture.md"]
    for name, ref in re.findall(r"(?<![\w.])([A-Za-z_]\w*) \(([\w/]+\.py)", flows):
        src = next(p for b in ("", "runs") if (p := ROOT / "src" / "alignctl" / b / ref).exists())
        if name not in {"render", "locked"}:  # verbs of the diagram, not function names
            assert re.search(rf"(def|class) {name}\b", src.read_text()), f"{name} not in {ref}"
    for test, name in re.findall(r"`(tests/\w+\.py)`: [^`]*\(`(test_\w+)`\)", flows):
        assert f"def {name}(" in (ROOT / test).read_text(), name


def test_the_python_api_snippet_runs_as_written(tmp_path, monkeypatch):
    """The README's Python API block, with the `model`, `x`, `y` it says are the user's."""
    import torch

    code = [t.content for t in MarkdownIt().parse(README) if t.type == "fence"
            and t.info.strip() == "python" and "alignctl.measure(" in t.content]  # fmt: skip
    assert len(code) == 1 and "# model: your nn.Module" in code[0]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.randn(24, 6), torch.randint(0, 3, (24,))
    monkeypatch.chdir(tmp_path)
    names = {"model": model, "x": x, "y": y}
    exec(compile(code[0], "README.md", "exec"), names)
    assert names["J"].shape == (24, 3, 6) and names["report"]["checkpoints"]
    assert names["values"]["centroid_alignment"].shape == (24,)
