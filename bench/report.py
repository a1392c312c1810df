"""Turns bench/results/results.tsv into a Markdown table and an SVG chart.

Each workload shows min / median / max over the runs for every tool, and the
ratio of portier's median to the best peer's median (nc, ncat, socat).

Usage: python3 bench/report.py RESULTS.tsv OUT.md OUT.svg
"""
import csv
import statistics
import sys
from collections import OrderedDict

LOWER_IS_BETTER = ("ns", "KiB", "us", "s", "ports")
PEERS = ("nc", "ncat", "socat", "socat -b 131072")

tsv, markdown_path, svg_path = sys.argv[1], sys.argv[2], sys.argv[3]
workloads = OrderedDict()
metric_of = {}
with open(tsv) as f:
    for row in csv.DictReader(f, delimiter="\t"):
        try:
            value = float(row["value"])
        except ValueError:
            continue
        workloads.setdefault(row["workload"], OrderedDict()).setdefault(row["tool"], []).append(value)
        metric_of[row["workload"]] = row["metric"]

lines = []
bars = []
for workload, tools in workloads.items():
    lower = metric_of[workload] in LOWER_IS_BETTER
    medians = {tool: statistics.median(values) for tool, values in tools.items()}
    peers = [medians[t] for t in medians if t in PEERS and medians[t] > 0]
    best_peer = (min(peers) if lower else max(peers)) if peers else None
    lines.append(f"### {workload}\n")
    lines.append("| tool | min | median | max | runs |")
    lines.append("|---|---:|---:|---:|---:|")
    for tool, values in tools.items():
        lines.append(
            f"| {tool} | {min(values):g} | {medians[tool]:g} | {max(values):g} | {len(values)} |"
        )
    if best_peer and "portier" in medians:
        ratio = medians["portier"] / best_peer
        word = "lower is better" if lower else "higher is better"
        lines.append(f"\nportier / best peer (median): **{ratio:.2f}×** ({word})\n")
    else:
        lines.append("")
    bars.append((workload, medians))

with open(markdown_path, "w") as f:
    f.write("\n".join(lines) + "\n")

# A bar chart: one group per workload, bars scaled to the group's largest median.
row_height, width, label_width = 16, 760, 230
height = sum((len(m) + 2) * row_height for _, m in bars) + 20
svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
    'font-family="sans-serif" font-size="11">'
]
y = 10
for workload, medians in bars:
    svg.append(f'<text x="4" y="{y + 11}" font-weight="bold">{workload}</text>')
    y += row_height
    top = max(medians.values()) or 1
    for tool, value in medians.items():
        length = (width - label_width - 80) * value / top
        colour = "#d9480f" if tool == "portier" else "#868e96"
        svg.append(f'<text x="12" y="{y + 11}">{tool}</text>')
        svg.append(
            f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" height="{row_height - 4}" fill="{colour}"/>'
        )
        svg.append(f'<text x="{label_width + length + 4:.1f}" y="{y + 11}">{value:g}</text>')
        y += row_height
    y += row_height
svg.append("</svg>")
with open(svg_path, "w") as f:
    f.write("\n".join(svg) + "\n")
