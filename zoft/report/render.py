"""An aggregated comparison (zoft.report.select.beside_paper) as markdown, csv and LaTeX, and the
one markdown table writer of every report."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from zoft.run.rundir import atomic_write

# zoft task names -> the papers' names (also the `task` column of results/paper/*.csv)
PAPER_TASK_NAMES = {
    "sst2": "SST-2", "rte": "RTE", "cb": "CB", "boolq": "BoolQ", "wsc": "WSC", "wic": "WiC",
    "multirc": "MultiRC", "copa": "COPA", "record": "ReCoRD", "squad": "SQuAD", "drop": "DROP",
    "snli": "SNLI", "mnli": "MNLI", "sst5": "SST-5", "trec": "TREC",
}  # fmt: skip
TASK_COLUMNS = tuple(PAPER_TASK_NAMES.values())
MISSING = "missing"


def in_papers_order(values: Iterable[str], known: tuple[str, ...]) -> list[str]:
    """The distinct values, those in `known` first in its order, then the rest sorted."""
    present = [v for v in dict.fromkeys(values) if not pd.isna(v)]
    return sorted(present, key=lambda v: (known.index(v) if v in known else len(known), v))


def methods_in_order(table: pd.DataFrame) -> list[str]:
    """The table's methods as rows go: by `method_rank` (evaluation modes, then the runs' methods by
    their recorded paper_order, then rows only the paper has), then by name."""
    if "method_rank" not in table:
        return sorted(m for m in dict.fromkeys(table["method"]) if not pd.isna(m))
    ranks = table.groupby("method")["method_rank"].min()
    return sorted(ranks.index, key=lambda m: (ranks[m], m))


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub markdown table, one line per row, cells as given (unpadded, so the committed
    tables stay readable as diffs)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _number(value: float, digits: int = 1) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _ours(row: pd.Series) -> str:
    if not row["n"]:
        return MISSING
    spread = f" ± {row['std']:.1f}" if row["n"] > 1 else ""
    return f"{row['mean']:.1f}{spread} (n={row['n']})"


def _pivot(table: pd.DataFrame, cell, empty: str = "") -> tuple[list[str], list[list[str]]]:
    """Methods (per model when there are several) × tasks; `empty` where a pair has no row."""
    tasks = in_papers_order(table["task"], TASK_COLUMNS)
    methods = methods_in_order(table)
    models = sorted(table["model"].dropna().unique()) if "model" in table else []
    several = len(models) > 1
    rows = []
    for model in models if several else [None]:
        for method in methods:
            chosen = table[table["method"] == method]
            if several:
                chosen = chosen[chosen["model"] == model]
            if chosen.empty:
                continue
            cells = []
            for task in tasks:
                match = chosen[chosen["task"] == task]
                cells.append(cell(match.iloc[0]) if len(match) else empty)
            rows.append([f"{model} {method}" if several else method, *cells])
    return ["method", *tasks], rows


def long_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, method) in the papers' order, the columns that go into the csv."""
    order = {m: i for i, m in enumerate(methods_in_order(table))}
    tasks = {t: i for i, t in enumerate(TASK_COLUMNS)}
    keyed = table.assign(
        _t=table["task"].map(tasks).fillna(len(tasks)),
        _m=table["method"].map(order).fillna(len(order)),
    )
    keys = (
        ["_t", "task", "model", "_m", "method"]
        if "model" in keyed
        else ["_t", "task", "_m", "method"]
    )
    keyed = keyed.sort_values(keys).drop(columns=["_t", "_m", "method_rank"], errors="ignore")
    return keyed.reset_index(drop=True)


def markdown_report(
    table: pd.DataFrame,
    title: str,
    provenance: str,
    paper: str,
    notes: dict[str, list[str]] | None = None,
) -> str:
    """Ours (mean ± std, n) per method × task, the paper's numbers, the difference, the long
    table with 95% intervals and costs, and the data notes of the runs (e.g. a short split)."""
    lines = [f"## {title}", "", provenance, ""]
    lines += ["### Ours: test metric × 100 at the best-dev grid point, mean ± std over seeds", ""]
    lines += markdown_table(*_pivot(table, _ours, MISSING))
    if table["paper"].notna().any():
        lines += ["", f"### {paper}", ""]
        lines += markdown_table(*_pivot(table, lambda r: _number(r["paper"])))
        lines += ["", "### Ours − paper (mean difference, points)", ""]
        lines += markdown_table(*_pivot(table, lambda r: _number(r["diff"])))
    lines += ["", "### Every cell", ""]
    header = [
        "task", "model", "method", "metric", "n", "mean", "std", "95% CI", "paper", "ours − paper",
        "forwards", "train s", "peak train MiB", "peak eval MiB",
    ]  # fmt: skip
    rows = []
    for _, r in long_table(table).iterrows():
        ci = f"[{r['ci95_low']:.1f}, {r['ci95_high']:.1f}]" if r["n"] > 1 else ""
        rows.append(
            [
                r["task"], str(r.get("model") or ""), r["method"], "" if pd.isna(r.get("metric")) else str(r["metric"]),
                str(r["n"]),
                _number(r["mean"]) if r["n"] else MISSING, _number(r["std"]), ci,
                _number(r["paper"]), _number(r["diff"]), _number(r["forward_passes"], 0),
                _number(r["train_time_s"], 0), _number(r["peak_train_mib"], 0),
                _number(r["peak_eval_mib"], 0),
            ]
        )  # fmt: skip
    lines += markdown_table(header, rows)
    lines += [
        "",
        "Selection: per task, method and seed, the grid point with the best dev metric (ties to "
        "the first in sorted order), reporting its test metric at its best dev step; then mean, "
        "sample std and a 95% Student-t interval over seeds. `missing`: no complete run; "
        "nothing is imputed. Costs are means over the selected runs.",
    ]
    noted = {task: lines_ for task, lines_ in (notes or {}).items() if lines_}
    if noted:
        lines += ["", "Data notes (from the runs' `data_notes`):", ""]
        lines += [f"- **{task}**: " + "; ".join(items) for task, items in noted.items()]
    return "\n".join(lines) + "\n"


def latex_report(table: pd.DataFrame, caption: str) -> str:
    """The method × task pivot as a LaTeX tabular: ours mean (std), the paper's in brackets."""

    def cell(r: pd.Series) -> str:
        if not r["n"]:
            return "--"
        text = f"{r['mean']:.1f}" + (f" ({r['std']:.1f})" if r["n"] > 1 else "")
        return text + (f" [{r['paper']:.1f}]" if not math.isnan(r["paper"]) else "")

    header, rows = _pivot(table, cell)
    escape = str.maketrans({"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#"})
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(h.translate(escape) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(c.translate(escape) for c in row) + r" \\" for row in rows]
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{caption.translate(escape)}}}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def write_reports(
    table: pd.DataFrame,
    out: Path,
    title: str,
    provenance: str,
    paper: str,
    notes: dict[str, list[str]] | None = None,
) -> list[Path]:
    """<out>.md, <out>.csv and <out>.tex side by side."""
    out = Path(out)
    paths = [out.with_suffix(".md"), out.with_suffix(".csv"), out.with_suffix(".tex")]
    atomic_write(paths[0], markdown_report(table, title, provenance, paper, notes))
    atomic_write(paths[1], long_table(table).to_csv(index=False))
    caption = f"{title}. Ours: mean (std) over seeds; [paper]."
    atomic_write(paths[2], latex_report(table, caption))
    return paths
