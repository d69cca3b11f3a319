"""mkdocs hook: the pages' generated parts, made at build time from the code and the data.

A page holds a marker line, ``<!-- generated: NAME -->``, which the build replaces by:

- ``config-reference``: every key of the detection config, read from
  ``detection/config/schema.py`` (types, defaults, choices and the comments beside each field),
  so the reference cannot drift from the code;
- ``model-zoo``: the reference numbers of the shipped configs (``docs/results/references.yaml``);
- ``quickstart-results``: the quick start's measured results (``docs/results/quickstart.yaml``);
- ``augmentation-results``: LSJ against the quick start's augmentation
  (``docs/results/augmentation.yaml``);
- ``commands``: the ``resdet`` subcommands and their one-line summaries.

Figures are never copied into the Markdown: the data files are their one home.
"""
from __future__ import annotations

import ast
import dataclasses
import io
import re
import sys
import tokenize
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


# ------------------------------------------------------------------------------ config reference
def _field_comments(source: str) -> dict[tuple[str, str], str]:
    """``{(class, field): comment}``: the comment at the end of a field's line, and the comment
    lines right above it."""
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                above, n = [], item.lineno - 1
                while n >= 1 and lines[n - 1].strip().startswith("#"):
                    above.insert(0, comments.get(n, ""))
                    n -= 1
                beside = [comments[item.lineno]] if item.lineno in comments else []
                text = " ".join(above + beside)
                out[(node.name, item.target.id)] = text
    return out


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin is list:
        return f"list[{_type_name(typing.get_args(hint)[0])}]"
    return getattr(hint, "__name__", str(hint))


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _fmt(value) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"`{text}`"


def config_reference() -> str:
    """Markdown tables of every key of ``detection.config.schema.Config``, section by section."""
    from detection.config import schema

    comments = _field_comments(Path(schema.__file__).read_text(encoding="utf-8"))
    sections: list[tuple[str, type]] = [("", schema.Config)]
    out = []
    while sections:
        prefix, cls = sections.pop(0)
        hints = typing.get_type_hints(cls)
        rows, subsections = [], []
        for f in dataclasses.fields(cls):
            key, hint = f"{prefix}{f.name}", hints[f.name]
            if dataclasses.is_dataclass(hint):
                subsections.append((key + ".", hint))
                continue
            note = comments.get((cls.__name__, f.name), "")
            choices = f.metadata.get("choices")
            if choices:
                note = f"one of {', '.join(_fmt(c) for c in choices)}" + (
                    f"; {note}" if note else "")
            rows.append(f"| `{key}` | {_type_name(hint)} | {_fmt(_default(f))} | "
                        f"{note.replace('|', '/')} |")
        title = prefix.rstrip(".") or "top level"
        doc = (cls.__doc__ or "").strip()
        intro = "" if doc.startswith(cls.__name__ + "(") else f"{' '.join(doc.split())}\n\n"
        if rows:
            out.append(f"### `{title}`\n\n{intro}| key | type | default | meaning |\n"
                       "| --- | --- | --- | --- |\n" + "\n".join(rows))
        sections[0:0] = subsections
    return "\n\n".join(out)


# ------------------------------------------------------------------------------ figures
def model_zoo() -> str:
    """The shipped configs with the number each should reach, from references.yaml."""
    from detection.cli.configs import reference
    from detection.resources import read_results

    refs = read_results("references.yaml")
    rows = [f"| `{name}` | {reference(name)} | {', '.join(entry.get('deviations', [])) or '-'} |"
            for name, entry in refs["configs"].items()]
    sources = "\n".join(f"- **{key}**: [{s['name']}]({s['url']})"
                        for key, s in refs["sources"].items())
    notes = "\n".join(f"- **{key}**: {' '.join(text.split())}"
                      for key, text in refs["deviations"].items())
    return ("| config | reference (COCO val2017 box AP unless said) | known differences |\n"
            "| --- | --- | --- |\n" + "\n".join(rows)
            + f"\n\nSources:\n\n{sources}\n\nKnown differences:\n\n{notes}")


def quickstart_results() -> str:
    """The quick start's measured results, from quickstart.yaml."""
    from detection.resources import read_results

    q = read_results("quickstart.yaml")
    fresh, seeds, work = q["fresh_run"], q["seeds"], q["work"]
    lines = [f"Machine: {q['machine']} ({q['date']}).", "",
             f"A fresh run (`{fresh['command']}`, {fresh['threads']} threads, seed "
             f"{fresh['seed']}): **mAP@.5 {fresh['mAP50']}, mAP@[.5,.95] {fresh['mAP']}** in "
             f"{fresh['wall_s']} s.", "",
             f"Five seeds ({seeds['threads']} thread each, two runs side by side): "
             f"`{' '.join(seeds['command'].split())}`", "",
             "| seed | mAP@.5 | mAP@[.5,.95] | wall time (s) |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['seed']} | {r['mAP50']} | {r['mAP']} | {r['wall_s']} |"
              for r in seeds["runs"]]
    iters = q["recipe"]["solver.max_iter"]
    share = (work["step_s"] * iters) / (work["baseline_step_s"] * work["baseline_max_iter"])
    lines += ["", f"CPU work against the SGD recipe before (`{work['baseline']}`): a step "
              f"{work['step_s']} s against {work['baseline_step_s']} s, {iters} against "
              f"{work['baseline_max_iter']} iterations: {100 * share:.1f} % of its work.", "",
              "Earlier recipes on the same seeds (mAP@.5 / mAP@[.5,.95]):", ""]
    lines += [f"- {p['name']}: " + ", ".join(f"{a} / {b}" for a, b in p["runs"])
              for p in q["previous"]]
    lines += ["", "How the recipe was found (one thread; seed 0 unless named):", "",
              "| change | result |", "| --- | --- |"]
    for step in q["ablation"]:
        got = "; ".join(f"{k}: {v[0]} / {v[1]}" for k, v in step.items()
                        if k.startswith("seed"))
        note = step.get("note", "")
        lines.append(f"| {step['change']} | {'; '.join(x for x in (got, note) if x)} |")
    return "\n".join(lines)


def augmentation_results() -> str:
    """LSJ against the quick start's resize and flip on the same budget, from augmentation.yaml."""
    from detection.resources import read_results

    a = read_results("augmentation.yaml")
    names = list(a["configs"])
    head = " | ".join(f"{n}: mAP@.5 / mAP@[.5,.95]" for n in names)
    lines = [f"Machine: {a['machine']} ({a['date']}). {' '.join(a['budget'].split())}", "",
             *(f"- **{n}**: `{c['config']}` ({' '.join(c['augmentation'].split())})"
               for n, c in a["configs"].items()), "",
             f"Each seed's pair side by side, {a['threads']} thread each: "
             f"`{' '.join(a['command'].split())}`", "",
             f"| seed | {head} | step time {names[1]} / {names[0]} |",
             "| --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for r in a["runs"]:
        cells = " | ".join(f"{r[n]['mAP50']} / {r[n]['mAP']}" for n in names)
        lines.append(f"| {r['seed']} | {cells} | "
                     f"{r[names[1]]['step_s'] / r[names[0]]['step_s']:.2f}x |")
    means = " | ".join(
        f"**{sum(r[n]['mAP50'] for r in a['runs']) / len(a['runs']):.1f} / "
        f"{sum(r[n]['mAP'] for r in a['runs']) / len(a['runs']):.1f}**" for n in names)
    lines += [f"| mean | {means} | |", "", " ".join(a["reading"].split())]
    return "\n".join(lines)


def commands() -> str:
    """The ``resdet`` subcommands, from the one table of them."""
    from detection.cli.main import COMMANDS, summary

    return "| command | what it does |\n| --- | --- |\n" + "\n".join(
        f"| `resdet {name}` | {summary(name)} |" for name in COMMANDS)


GENERATORS = {"config-reference": config_reference, "model-zoo": model_zoo,
              "quickstart-results": quickstart_results, "commands": commands,
              "augmentation-results": augmentation_results}


def on_page_markdown(markdown: str, **kwargs) -> str:
    """mkdocs event: each marker line replaced by what it names."""
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)
