"""The nightly's history as one page: `python -m policyload.report history RUN.json... --html PATH`.

A run's own report (`table`) and the gate (`compare`) each see one night, or two. This page puts
every run given side by side, in time order (pytest-benchmark's `datetime`), so that a case's
drift across nights is visible: per case, its median latency in each run with the gate's
allowance over the run before (benchmarks/thresholds.toml, read by `thresholds`), the outcome of
each run (measured, skipped, failed, oom; "absent": the run did not have the case), and, where
the machine measured memory, the measured resident and peak memory against the memory model's
prediction (a DPO case: the bill DPOTrainer held against the planner's). On top, what the gate
says of each run against the one before it on the same device and settings (`gate.compare_runs`,
the nightly's own comparison).

The page is one self-contained HTML file: plotly.js is inlined (`plotly.offline.get_plotlyjs()`),
nothing is fetched to view it. Charts are drawn from the JSON embedded in the page.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from .gate import compare_runs
from .runs import ReportError, Run, load_run

#: An outcome per case and run: measured, or why not (benchmarks/outcomes.py), or not in the run.
ABSENT = "absent"
MIB = 1024**2


@dataclass
class Case:
    """One case across the runs of its series: a value (or None) per run, in the series' order."""

    key: str
    outcomes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    latency_ms: list[float | None] = field(default_factory=list)
    allowance_ms: list[float | None] = field(default_factory=list)
    memory: dict[str, list[float | None]] = field(default_factory=dict)
    memory_note: str | None = None


def in_time_order(runs: list[Run]) -> list[Run]:
    """The runs sorted by when they ran; a file without pytest-benchmark's `datetime` is refused."""
    undated = [str(run.path) for run in runs if not run.datetime]
    if undated:
        raise ReportError(f"{', '.join(undated)}: no 'datetime' (pytest-benchmark writes it): cannot order the runs")
    return sorted(runs, key=lambda run: run.datetime)


def series_of(runs: list[Run]) -> dict[tuple[str, object], list[Run]]:
    """Runs grouped as the gate would compare them: same device, same quick setting."""
    series: dict[tuple[str, object], list[Run]] = {}
    for run in runs:
        series.setdefault((run.device, run.quick), []).append(run)
    return series


def _outcome(run: Run, key: str, dpo: bool) -> tuple[str, str]:
    outcomes = run.dpo_outcomes if dpo else run.outcomes
    for outcome in outcomes:
        name = f"dpo/{outcome.get('case_id')}" if dpo else (
            f"{outcome.get('checkpoint')}/{outcome.get('dtype')}/{outcome.get('quantization')}"
        )
        if name == key:
            return outcome.get("outcome", "?"), outcome.get("reason", "")
    return ABSENT, ""


def allowance(previous_s: float | None, thresholds: dict) -> float | None:
    """The largest latency the gate lets through after `previous_s` (gate.compare_runs: a regression
    is a growth beyond the allowance *and* beyond the latency floor), in seconds."""
    if previous_s is None:
        return None
    return max(previous_s * (1 + thresholds["max_latency_regression"]), previous_s + thresholds["latency_floor_s"])


def cases_of(runs: list[Run], thresholds: dict) -> list[Case]:
    """Every load case and DPO case of a series, each with one value per run."""
    loads = {key for run in runs for key in run.rows_by_key()}
    loads |= {f"{o.get('checkpoint')}/{o.get('dtype')}/{o.get('quantization')}" for run in runs for o in run.outcomes}
    dpo = {f"dpo/{extra['case_id']}" for run in runs for extra in run.dpo}
    dpo |= {f"dpo/{o.get('case_id')}" for run in runs for o in run.dpo_outcomes}
    cases = []
    for key in sorted(loads) + sorted(dpo):
        case, sources, previous = Case(key), set(), None
        series = {name: [] for name in ("measured resident", "predicted resident", "measured peak", "predicted peak")}
        for run in runs:
            is_dpo = key.startswith("dpo/")
            figures = _dpo_figures(run, key) if is_dpo else _load_figures(run, key)
            if figures is None:
                outcome, reason = _outcome(run, key, is_dpo)
                case.outcomes.append(outcome)
                case.reasons.append(reason)
                case.latency_ms.append(None)
                for values in series.values():
                    values.append(None)
            else:
                latency_s, memory, source = figures
                case.outcomes.append("measured")
                case.reasons.append("")
                case.latency_ms.append(latency_s * 1000)
                for name, values in series.items():
                    values.append(memory[name] / MIB if memory.get(name) is not None else None)
                if source:
                    sources.add(source)
            limit = allowance(previous, thresholds)
            case.allowance_ms.append(limit * 1000 if limit is not None else None)
            if case.latency_ms[-1] is not None:
                previous = case.latency_ms[-1] / 1000
        if any(value is not None for values in series.values() for value in values):
            case.memory = series
        else:
            case.memory_note = "; ".join(sorted(sources)) or "n/a (these runs recorded no memory figure)"
        cases.append(case)
    return cases


def _load_figures(run: Run, key: str):
    row = run.rows_by_key().get(key)
    if row is None:
        return None
    memory = {
        "measured resident": row.memory_measured_bytes, "predicted resident": row.memory_predicted_bytes,
        "measured peak": row.memory_peak_measured_bytes, "predicted peak": row.memory_peak_predicted_bytes,
    }
    return row.median_latency_s, memory, row.memory_source if row.memory_measured_bytes is None else None


def _dpo_figures(run: Run, key: str):
    for extra in run.dpo:
        if f"dpo/{extra['case_id']}" == key:
            bill = extra.get("dpo_bill") or {}
            measured, planned = bill.get("measured") or {}, bill.get("planned") or {}
            memory = {
                "measured resident": measured.get("total_bytes"), "predicted resident": planned.get("total_bytes"),
                "measured peak": measured.get("peak_bytes"), "predicted peak": planned.get("peak_bytes"),
            }
            source = None if measured else "n/a: the DPO bill was not measured (checkpoint below measurable size)"
            return extra["median_latency_s"], memory, source
    return None


def gate_verdicts(runs: list[Run], thresholds: dict) -> list[dict]:
    """The gate of each run against the one before it in its series: exit code and what it found."""
    verdicts = []
    for base, new in pairwise(runs):
        verdict = {"base": _label(base), "new": _label(new)}
        if not base.rows or not new.rows:
            verdict |= {"exit": None, "lines": ["no load case in one of the runs: nothing the gate compares"]}
        else:
            try:
                result = compare_runs(
                    base, new, thresholds["max_latency_regression"], thresholds["max_memory_regression"],
                    latency_floor_s=thresholds["latency_floor_s"],
                )
            except ReportError as error:
                verdict |= {"exit": 2, "lines": [str(error)]}
            else:
                lines = [f"regression: {line}" for line in result.regressions]
                lines += [f"missing from the new run: {line}" for line in result.missing_cases]
                lines += [f"metric lost: {line}" for line in result.missing_metrics]
                verdict |= {"exit": 1 if result.failed else 0, "common": len(result.common), "lines": lines}
        verdicts.append(verdict)
    return verdicts


def _label(run: Run) -> str:
    when = run.datetime[:16].replace("T", " ")
    return f"{when} {run.commit[:8]}" if run.commit else when


def page(runs: list[Run], thresholds: dict) -> str:
    """The whole HTML page."""
    from plotly.offline import get_plotlyjs

    runs = in_time_order(runs)
    data, body = [], []
    for index, ((device, quick), members) in enumerate(series_of(runs).items()):
        # Chart ticks: the run's number (the list on the page names each) and when it ran.
        labels = [f"{position + 1} · {run.datetime[5:16].replace('T', ' ')}" for position, run in enumerate(members)]
        cases = cases_of(members, thresholds)
        verdicts = gate_verdicts(members, thresholds)
        body.append(_series_html(index, device, quick, members, labels, cases, verdicts, thresholds))
        data.append({"labels": labels, "cases": [case.__dict__ for case in cases]})
    script = json.dumps(data).replace("</", "<\\/")
    return _TEMPLATE.format(
        plotly=get_plotlyjs(), data=script, runs=len(runs), body="\n".join(body),
        thresholds=html.escape(_thresholds_text(thresholds)), draw=_DRAW,
    )


def _thresholds_text(thresholds: dict) -> str:
    return (
        f"latency +{thresholds['max_latency_regression']:.0%} and +{thresholds['latency_floor_s'] * 1000:.0f} ms, "
        f"memory +{thresholds['max_memory_regression']:.0%}"
    )


def _series_html(index, device, quick, runs, labels, cases, verdicts, thresholds) -> str:
    escape = html.escape
    settings = "quick (1 round)" if quick else "full rounds" if quick is False else "rounds not recorded"
    out = [f'<section class="series" id="series-{index}"><h2>{escape(device)}, {settings}: {len(runs)} run(s)</h2>']
    out.append("<ol>" + "".join(f"<li>{escape(_label(run))} <code>{escape(run.path.name)}</code></li>"
                                for run in runs) + "</ol>")
    out.append('<h3>What the gate says, each run against the one before</h3>')
    if not verdicts:
        out.append("<p>One run: nothing to compare.</p>")
    for verdict in verdicts:
        code = verdict["exit"]
        status = {0: "passes", 1: "fails", 2: "cannot compare", None: "not gated"}[code]
        common = f", {verdict['common']} case(s) in common" if "common" in verdict else ""
        out.append(
            f'<div class="verdict exit-{code}"><b>{escape(verdict["new"])}</b> against {escape(verdict["base"])}: '
            f"{status}" + (f" (exit {code})" if code is not None else "") + common
            + ("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in verdict["lines"]) + "</ul>"
               if verdict["lines"] else "")
            + "</div>"
        )
    out.append("<h3>Outcome of each case in each run</h3>")
    out.append('<table class="outcomes"><tr><th>case</th>'
               + "".join(f"<th>{position + 1}</th>" for position in range(len(runs))) + "</tr>")
    for case_index, case in enumerate(cases):
        cells = "".join(
            f'<td class="{outcome}" title="{escape(reason)}">'
            + (f"{latency:.1f} ms" if latency is not None else outcome) + "</td>"
            for outcome, reason, latency in zip(case.outcomes, case.reasons, case.latency_ms, strict=True)
        )
        out.append(f'<tr><td><a href="#case-{index}-{case_index}">{escape(case.key)}</a></td>{cells}</tr>')
    out.append("</table>")
    for case_index, case in enumerate(cases):
        out.append(f'<div class="case" id="case-{index}-{case_index}"><h3>{escape(case.key)}</h3>')
        if any(value is not None for value in case.latency_ms):
            out.append(f'<div class="chart latency" data-series="{index}" data-case="{case_index}"></div>')
        else:
            out.append("<p>No run measured this case: " + escape(", ".join(sorted(set(case.outcomes)))) + ".</p>")
        if case.memory:
            out.append(f'<div class="chart memory" data-series="{index}" data-case="{case_index}"></div>')
        else:
            out.append(f'<p class="note">Memory: {escape(case.memory_note or "n/a")}</p>')
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


# The drawing, in the page: one latency chart per case (the gate's allowance over the run before,
# a mark per run that did not measure the case), one memory chart where memory was measured.
_DRAW = r"""
const OUTCOME_SYMBOL = {skipped: "circle-open", failed: "x", oom: "triangle-down", absent: "line-ew-open"};
for (const el of document.querySelectorAll("div.chart")) {
  const series = DATA[+el.dataset.series], c = series.cases[+el.dataset.case], x = series.labels;
  const layout = {height: 280, margin: {t: 30, b: 60, l: 60, r: 10}, legend: {orientation: "h", y: -0.3},
                  xaxis: {type: "category", categoryarray: x, tickangle: 0, tickfont: {size: 10}}};
  let traces;
  if (el.classList.contains("latency")) {
    const top = Math.max(...c.latency_ms.concat(c.allowance_ms).filter(v => v !== null));
    const missing = c.outcomes.map((o, i) => o === "measured" ? null : i).filter(i => i !== null);
    traces = [
      {x, y: c.latency_ms, name: "median latency (ms)", mode: "lines+markers", type: "scatter"},
      {x, y: c.allowance_ms, name: "gate allowance over the run before", mode: "lines",
       line: {dash: "dot", color: "grey"}, type: "scatter"},
      {x: missing.map(i => x[i]), y: missing.map(() => 0), name: "not measured (outcome)", mode: "markers",
       text: missing.map(i => c.outcomes[i] + (c.reasons[i] ? ": " + c.reasons[i] : "")),
       marker: {symbol: missing.map(i => OUTCOME_SYMBOL[c.outcomes[i]] || "x"), size: 11, color: "crimson"},
       type: "scatter"},
    ];
    layout.title = {text: "latency", font: {size: 12}};
    layout.yaxis = {title: "ms", range: [0, top * 1.1]};
  } else {
    traces = Object.entries(c.memory).map(([name, y]) => ({x, y, name: name + " (MiB)", type: "scatter",
      mode: "lines+markers", line: {dash: name.startsWith("predicted") ? "dash" : "solid"}}));
    layout.title = {text: "memory: measured against predicted", font: {size: 12}};
    layout.yaxis = {title: "MiB", rangemode: "tozero"};
  }
  Plotly.newPlot(el, traces, layout, {displaylogo: false, responsive: true});
}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>policyload: the nightly's history</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1100px; }}
.verdict {{ margin: .3em 0; padding: .3em .6em; border-left: 4px solid grey; }}
.exit-0 {{ border-color: seagreen; }} .exit-1 {{ border-color: crimson; }} .exit-2 {{ border-color: orange; }}
table.outcomes {{ border-collapse: collapse; font-size: 12px; }}
table.outcomes td, table.outcomes th {{ border: 1px solid #ddd; padding: 2px 6px; text-align: right; }}
table.outcomes td:first-child {{ text-align: left; }}
td.skipped {{ background: #eee; }} td.failed, td.oom {{ background: #fbb; }} td.absent {{ color: #999; }}
.case {{ border-top: 1px solid #ddd; margin-top: 1em; }} .note {{ color: #555; font-size: 13px; }}
</style>
<script>{plotly}</script>
</head><body>
<h1>The nightly's history</h1>
<p>{runs} run(s), oldest first, grouped by device and settings (the runs the gate compares with
each other). The gate's allowances: {thresholds} (benchmarks/thresholds.toml).</p>
{body}
<script>
const DATA = {data};
{draw}
</script>
</body></html>
"""


def write_history(paths: list, html_path, thresholds: dict) -> Path:
    """Read the runs at `paths`, write the page to `html_path` (its folder made first)."""
    text = page([load_run(path) for path in paths], thresholds)
    path = Path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path

