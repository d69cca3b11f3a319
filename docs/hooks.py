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

MARKER = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->$", re.M)


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
    lines += [f"| mean | {means} | |", ""]
    longer = a.get("longer_schedule")
    if longer:
        lines += [f"A longer schedule, seed {longer['seed']} ({' '.join(longer['change'].split())}): "
                  + ", ".join(f"{n} {longer[n]['mAP50']} / {longer[n]['mAP']}" for n in names)
                  + ".", ""]
    return "\n".join(lines + [" ".join(a["reading"].split())])


_PATH_NAMES = {"torchvision_float32": "torchvision float32", "ours_float32": "ours float32",
               "ours_bf16": "ours bf16", "onnxruntime_float32": "ONNX Runtime float32",
               "openvino_f32": "OpenVINO f32", "openvino_bf16": "OpenVINO bf16",
               "openvino_int8": "OpenVINO INT8", "torch_float32": "PyTorch float32",
               "torch_bf16": "PyTorch bf16", "ours_bf16_unprepared": "ours bf16, unprepared",
               "ours_bf16_prepared": "ours bf16, prepared"}


def _machine(h: dict, key: str) -> str:
    m = h["machines"][key]
    return (f"{m['cpu']}, {m['cores']} cores, `lscpu` flags `{m['flags']}`; "
            + ", ".join(f"{k} {v}" for k, v in m["software"].items()))


def hardware_speed() -> str:
    """Every timing of the reduced-precision paths, from hardware.yaml: one table per run."""
    from detection.resources import read_results

    h = read_results("hardware.yaml")
    used = dict.fromkeys(b["machine"] for b in h["benchmarks"])
    out = [" ".join(f"Machine `{key}`: {_machine(h, key)}." for key in used)]
    for b in h["benchmarks"]:
        times = b.get("inference", b)
        head = (f"**{b['id']}** (machine `{b['machine']}`, load average "
                f"{' - '.join(str(x) for x in b['load_average'])} on the 2 cores): "
                f"`{' '.join(b['command'].split())}`")
        if "input_hw" in b:
            head += f"; input {b['input_hw'][0]} x {b['input_hw'][1]}"
        if "code" in b:
            head += f". Code: {' '.join(b['code'].split())}"
        rows = ["| path | median ms | median CPU ms | images/s over torchvision's | "
                "training step over torchvision's | detections matched |",
                "| --- | --- | --- | --- | --- | --- |"]
        speed = times.get("images_per_s_over_torchvision", {})
        train = b.get("training_step", {}).get("images_per_s_over_torchvision", {})
        matched = times.get("matched_vs_our_float32", {})
        for path, ms in times["median_ms"].items():
            m = matched.get(path)
            m = m["matched"] if isinstance(m, dict) else m
            rows.append(f"| {_PATH_NAMES[path]} | {ms} | "
                        f"{times.get('median_cpu_ms', {}).get(path, '-')} | "
                        f"{speed.get(path, 1 if path.startswith('torchvision') else '-')} | "
                        f"{train.get(path, '-')} | "
                        f"{'-' if m is None else f'{100 * m:.0f} %'} |")
        out.append(head + "\n\n" + "\n".join(rows))
    notes = "\n".join(f"- {' '.join(n.split())}" for n in h.get("notes", []))
    return "\n\n".join(out) + (f"\n\n{notes}" if notes else "")


def precision_accuracy() -> str:
    """mAP of each reduced-precision path against float32, from hardware.yaml."""
    from detection.resources import read_results

    h = read_results("hardware.yaml")
    rows = ["| detector | test set | path | mAP@[.5,.95] | change | mAP@.5 | matched |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for a in h["accuracy"]:
        ref = a["paths"]["torch_float32"]["mAP"]
        for i, (path, r) in enumerate(a["paths"].items()):
            change = "" if i == 0 else f"{r['mAP'] - ref:+.2f}"
            first = (f"{' '.join(a['weights'].split())} | {' '.join(a['test'].split())}"
                     if i == 0 else " | ")
            matched = "" if i == 0 else f"{100 * r['matched']:.1f} %"
            rows.append(f"| {first} | {_PATH_NAMES[path]} | {r['mAP']:.2f} | {change} | "
                        f"{r['mAP50']:.2f} | {matched} |")
    return "\n".join(rows)


def bf16_training() -> str:
    """The quick start trained in float32 and bf16 over three seeds, from hardware.yaml."""
    from detection.resources import read_results

    h = read_results("hardware.yaml")
    t = h["training_bf16_quickstart"]
    rows = [f"Machine: {_machine(h, t['machine'])}. `{' '.join(t['command'].split())}` "
            f"({' '.join(t['protocol'].split())})", "",
            "| seed | float32 mAP@[.5,.95] / @.5 | bf16 | s/iteration, bf16 / float32 | "
            "load average |", "| --- | --- | --- | --- | --- |"]
    for seed, r in t["seeds"].items():
        rows.append(f"| {seed} | {r['float32']['mAP']} / {r['float32']['mAP50']} | "
                    f"{r['bf16']['mAP']} / {r['bf16']['mAP50']} | "
                    f"{r['s_per_iter_ratio_bf16_over_float32']:.2f} | {r['load_average']} |")
    m = t["mean"]
    rows += [f"| mean | {m['float32']['mAP']} / {m['float32']['mAP50']} | "
             f"{m['bf16']['mAP']} / {m['bf16']['mAP50']} | | |", "",
             " ".join(t["verdict"].split())]
    return "\n".join(rows)


def mask_quickstart_results() -> str:
    """The mask quick start's seeds and its time against the box quick start's."""
    from detection.resources import read_results

    q = read_results("quickstart_mask.yaml")
    m, t = q["machine"], q["timing"]
    lines = [f"Machine: {m['cpu']}, {m['threads_per_run']} thread per run, "
             f"{m['runs_side_by_side']} runs side by side ({' '.join(m['load'].split())}). "
             f"`{' '.join(q['command'].split())}`", "",
             "| seed | box mAP@.5 / mAP@[.5,.95] | mask mAP@.5 / mAP@[.5,.95] |",
             "| --- | --- | --- |"]
    lines += [f"| {r['seed']} | {r['box']['mAP50']} / {r['box']['mAP']} | "
              f"{r['mask']['mAP50']} / {r['mask']['mAP']} |" for r in q["seeds"]]
    s, w = t["median_s_per_iteration"], t["training_wall_s"]
    lines += ["", f"Against the box quick start started with seed 0 "
              f"(`{' '.join(t['against'].split())}`): median s/iteration {s['mask']} against "
              f"{s['box']} ({s['ratio']}x), training wall time {w['mask']} s against {w['box']} s "
              f"({w['ratio']}x)."]
    return "\n".join(lines)


def soak_results() -> str:
    """Host memory over a long training run and a long evaluation, from soak.yaml."""
    from detection.resources import read_results

    s = read_results("soak.yaml")
    lines = [f"Machine: {s['machine']}. `{' '.join(s['command'].split())}`", "",
             "| run | phase | at | main rss / pss / uss MB | each worker rss / pss / uss MB |",
             "| --- | --- | --- | --- | --- |"]
    for run in s["runs"]:
        for phase, samples in run["phases"].items():
            for at, r in samples.items():
                workers = "; ".join(f"{w['rss']} / {w['pss']} / {w['uss']}"
                                    for w in r["workers"])
                lines.append(f"| {run['name']} | {phase} | {at} | {r['main']['rss']} / "
                             f"{r['main']['pss']} / {r['main']['uss']} | {workers} |")
    lines += [""] + [f"- {' '.join(n.split())}" for n in s["notes"]]
    return "\n".join(lines)


def commands() -> str:
    """The ``resdet`` subcommands, from the one table of them."""
    from detection.cli.main import COMMANDS, summary

    return "| command | what it does |\n| --- | --- |\n" + "\n".join(
        f"| `resdet {name}` | {summary(name)} |" for name in COMMANDS)


GENERATORS = {"config-reference": config_reference, "model-zoo": model_zoo,
              "quickstart-results": quickstart_results, "commands": commands,
              "augmentation-results": augmentation_results, "hardware-speed": hardware_speed,
              "precision-accuracy": precision_accuracy, "bf16-training": bf16_training,
              "mask-quickstart-results": mask_quickstart_results, "soak-results": soak_results}


def on_page_markdown(markdown: str, **kwargs) -> str:
    """mkdocs event: each marker line replaced by what it names."""
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)
