#!/usr/bin/env python3
"""Draws docs/BENCHMARKS.md's charts from crashfleet-load's JSON reports (no dependencies: SVG).

    python3 tests/bench/chart.py docs/bench/results docs/bench

Reads every `<label>-rate<R>-run<K>.json`, `<label>-fanout-conn<N>-run<K>.json` and `ws-conn<N>.json`
in the results folder and writes:
  latency-<label>.svg   bet and cash-out p50/p99 (median over runs) against the offered rate;
  <label>-fanout.svg    per core: node CPU per delivered message and tick spread against sockets;
  ws-ceiling.svg        tick delivery p99 and memory per connection against connections;
and prints the medians as Markdown tables for the doc. A `soak.csv` there (the soak test's samples,
tests/soak/run.sh) gives soak-memory.svg (each node's RSS, Redis memory) and soak-storage.svg
(PostgreSQL size and bets kept, WebSocket connections).
"""

import json
import re
import statistics
import sys
from pathlib import Path

W, H, PAD = 640, 360, 56
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def load(results: Path):
    rates, ws, fanout = {}, {}, {}
    for f in sorted(results.glob("*.json")):
        data = json.loads(f.read_text())
        m = re.match(r"(.+)-fanout-conn(\d+)-run(\d+)\.json$", f.name)
        if m:
            fanout.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(data)
            continue
        m = re.match(r"(.+)-rate(\d+)-run(\d+)\.json$", f.name)
        if m:
            rates.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(data)
            continue
        m = re.match(r"ws-conn(\d+)\.json$", f.name)
        if m:
            ws[int(m.group(1))] = data
    return rates, ws, fanout


def median(runs, path):
    vals = []
    for r in runs:
        v = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def svg_chart(title, xlabel, ylabel, series, log_x=False, y2=None, xticks=None, dots=True):
    """series: [(name, [(x, y)])]; y2: optional (label, [(name, [(x, y)])]) on a right axis;
    xticks: the x values to label (default: every x)."""
    import math

    xs = [x for _, pts in series for x, _ in pts] + (
        [x for _, pts in y2[1] for x, _ in pts] if y2 else []
    )
    ys = [y for _, pts in series for _, y in pts if y is not None]
    if not xs or not ys:
        return None
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x0, x1 = fx(min(xs)), fx(max(xs))
    if x1 == x0:
        x1 = x0 + 1
    y1 = max(ys) * 1.1 or 1

    def px(x):
        return PAD + (fx(x) - x0) / (x1 - x0) * (W - 2 * PAD)

    def py(y, top=y1):
        return H - PAD - y / top * (H - 2 * PAD)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<text x="{W / 2}" y="{H - 14}" text-anchor="middle">{xlabel}</text>',
        f'<text x="14" y="{H / 2}" text-anchor="middle" transform="rotate(-90 14 {H / 2})">{ylabel}</text>',
    ]
    for i in range(5):
        v = y1 * i / 4
        out.append(f'<text x="{PAD - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        out.append(
            f'<line x1="{PAD}" y1="{py(v):.1f}" x2="{W - PAD}" y2="{py(v):.1f}" stroke="#eee"/>'
        )
    for x in xticks if xticks is not None else sorted(set(xs)):
        out.append(f'<text x="{px(x):.1f}" y="{H - PAD + 14}" text-anchor="middle">{x:g}</text>')
    legend = 0

    def draw(name, pts, color, scale_top, dash=""):
        nonlocal legend
        pts = [(x, y) for x, y in pts if y is not None]
        if not pts:
            return
        path = " ".join(f"{px(x):.1f},{py(y, scale_top):.1f}" for x, y in pts)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" {dash}/>'
        )
        for x, y in pts if dots else []:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y, scale_top):.1f}" r="3" fill="{color}"/>')
        out.append(
            f'<text x="{PAD + 10}" y="{PAD + 12 + 14 * legend}" fill="{color}">{name}</text>'
        )
        legend += 1

    for i, (name, pts) in enumerate(series):
        draw(name, pts, COLORS[i % len(COLORS)], y1)
    if y2:
        label, s2 = y2
        top2 = max((y for _, pts in s2 for _, y in pts if y is not None), default=1) * 1.1 or 1
        out.append(f'<line x1="{W - PAD}" y1="{PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>')
        for i in range(5):
            v = top2 * i / 4
            out.append(f'<text x="{W - PAD + 6}" y="{py(v, top2) + 4:.1f}">{v:.3g}</text>')
        out.append(
            f'<text x="{W - 12}" y="{H / 2}" text-anchor="middle" transform="rotate(90 {W - 12} {H / 2})">{label}</text>'
        )
        for i, (name, pts) in enumerate(s2):
            draw(name, pts, COLORS[(i + len(series)) % len(COLORS)], top2, 'stroke-dasharray="5,3"')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    results, out = Path(sys.argv[1]), Path(sys.argv[2])
    rates, ws, fanout = load(results)
    for label, by_rate in sorted(rates.items()):
        rs = sorted(by_rate)
        series = []
        for kind in ("bets", "cashouts"):
            for q in ("p50_ms", "p99_ms"):
                series.append((f"{kind} {q[:-3]}", [(r, median(by_rate[r], [kind, q])) for r in rs]))
        svg = svg_chart(
            f"{label}: latency against offered bet rate (median of runs)",
            "offered bets per second (while betting is open)",
            "ms",
            series,
            log_x=True,
        )
        if svg:
            (out / f"latency-{label}.svg").write_text(svg)
        print(f"\n{label}\n\n| offered bets/s | runs | bets ok/s sent | bet p50 ms | bet p99 ms | bet max ms | cash-out p50 ms | cash-out p99 ms | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            runs = by_rate[r]
            errs = median(runs, ["bets", "errors"])
            print(
                f"| {r} | {len(runs)} | {median(runs, ['bets', 'ok']):.0f}/{median(runs, ['bets', 'sent']):.0f} "
                f"| {median(runs, ['bets', 'p50_ms']):.2f} | {median(runs, ['bets', 'p99_ms']):.2f} "
                f"| {median(runs, ['bets', 'max_ms']):.1f} | {median(runs, ['cashouts', 'p50_ms']):.2f} "
                f"| {median(runs, ['cashouts', 'p99_ms']):.2f} | {errs:.0f} |"
            )
        if any(median(by_rate[r], ["cpu", "node_cpu_s"]) is not None for r in rs):
            print(f"\n{label}: CPU per bet or cash-out answered (medians of runs)\n")
            print("| offered bets/s | answered/s | node cores | node µs per request | generator cores | generator µs per request |")
            print("|---|---|---|---|---|---|")
            for r in rs:
                runs = by_rate[r]
                wall = median(runs, ["cpu", "wall_s"]) or 1
                print(
                    f"| {r} | {(median(runs, ['cpu', 'requests']) or 0) / wall:.0f} "
                    f"| {fmt(median(runs, ['cpu', 'node_cores']))} | {fmt(median(runs, ['cpu', 'node_us_per_request']))} "
                    f"| {fmt(median(runs, ['cpu', 'load_cores']))} | {fmt(median(runs, ['cpu', 'load_us_per_request']))} |"
                )
    for flabel, by_conn in sorted(fanout.items()):
        cs = sorted(by_conn)
        svg = svg_chart(
            f"{flabel}: fan-out on one core, CPU per delivered message and tick spread",
            "open connections",
            "µs of node CPU per delivered message",
            [("node µs per message", [(c, median(by_conn[c], ["cpu", "node_us_per_message"])) for c in cs])],
            log_x=True,
            y2=(
                "tick spread, ms",
                [
                    ("spread p50 ms", [(c, median(by_conn[c], ["ws", "tick_spread_p50_ms"])) for c in cs]),
                    ("spread p99 ms", [(c, median(by_conn[c], ["ws", "tick_spread_p99_ms"])) for c in cs]),
                ],
            ),
        )
        if svg:
            (out / f"{flabel}-fanout.svg").write_text(svg)
        print(f"\n{flabel}: fan-out per core (medians of runs)\n")
        print("| connections | runs | messages/s | node cores | node µs per message | generator µs per message | tick lag p50/p99 ms | spread p50/p99 ms | crashed lag p99 ms | KiB per connection |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for c in cs:
            runs = by_conn[c]
            wall = median(runs, ["cpu", "wall_s"]) or 1
            per = median(runs, ["server", "rss_per_connection_bytes"])
            print(
                f"| {median(runs, ['ws', 'connections']):.0f} | {len(runs)} | {(median(runs, ['cpu', 'messages']) or 0) / wall:.0f} "
                f"| {fmt(median(runs, ['cpu', 'node_cores']))} | {fmt(median(runs, ['cpu', 'node_us_per_message']))} "
                f"| {fmt(median(runs, ['cpu', 'load_us_per_message']))} "
                f"| {fmt(median(runs, ['ws', 'tick_p50_ms']))}/{fmt(median(runs, ['ws', 'tick_p99_ms']))} "
                f"| {fmt(median(runs, ['ws', 'tick_spread_p50_ms']))}/{fmt(median(runs, ['ws', 'tick_spread_p99_ms']))} "
                f"| {fmt(median(runs, ['ws', 'crash_p99_ms']))} | {fmt(per / 1024 if per else None)} |"
            )
    if ws:
        cs = sorted(ws)
        series = [
            ("tick p50 ms", [(c, ws[c]["ws"]["tick_p50_ms"]) for c in cs]),
            ("tick p99 ms", [(c, ws[c]["ws"]["tick_p99_ms"]) for c in cs]),
        ]
        per = [
            (c, (ws[c]["server"].get("rss_per_connection_bytes") or 0) / 1024) for c in cs
        ]
        svg = svg_chart(
            "WebSocket players on one node: tick delivery and memory",
            "open connections",
            "tick delivery lag, ms",
            series,
            log_x=True,
            y2=("KiB per connection", [("KiB per connection", per)]),
        )
        if svg:
            (out / "ws-ceiling.svg").write_text(svg)
        print("\nwebsocket\n\n| connections open | ramp s | tick p50 ms | tick p99 ms | ping p99 ms | KiB per connection | RSS MiB | bets ok/sent (via ws) | bet p99 ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        for c in cs:
            d = ws[c]
            per_c = d["server"].get("rss_per_connection_bytes")
            rss = d["server"].get("rss_bytes")
            print(
                f"| {d['ws']['connections']} | {d['ws']['ramp_s']} | {d['ws']['tick_p50_ms']:.1f} | {d['ws']['tick_p99_ms']:.1f} "
                f"| {d['ws']['ping_p99_ms']:.1f} | {per_c / 1024 if per_c else float('nan'):.1f} "
                f"| {rss / 1048576 if rss else float('nan'):.0f} | {d['bets']['ok']}/{d['bets']['sent']} | {d['bets']['p99_ms']:.1f} |"
            )

    soak = results / "soak.csv"
    if soak.exists():
        draw_soak(soak, out)


def draw_soak(path: Path, out: Path):
    import csv

    rows = list(csv.DictReader(path.read_text().splitlines()))

    def col(name, scale=1.0):
        return [
            (float(r["t_s"]) / 60, float(r[name]) / scale if r[name] else None) for r in rows
        ]

    end = float(rows[-1]["t_s"]) / 60
    # Players move to another node when theirs is killed: the sum is the fleet's footprint.
    total = [
        (float(r["t_s"]) / 60, sum(float(r[f"rss_node{i}"]) for i in (1, 2, 3) if r[f"rss_node{i}"]) / 1048576)
        for r in rows
    ]
    ticks = [round(end * i / 6) for i in range(7)]
    mib = 1048576
    svg = svg_chart(
        "Soak: memory under steady load with a fault a minute",
        "minutes",
        "MiB",
        [(f"RSS node-{i}", col(f"rss_node{i}", mib)) for i in (1, 2, 3)]
        + [("RSS, all nodes", total)]
        + [("Redis used_memory", col("redis_used_memory", mib))],
        xticks=ticks,
        dots=False,
    )
    if svg:
        (out / "soak-memory.svg").write_text(svg)
    svg = svg_chart(
        "Soak: storage and sockets",
        "minutes",
        "PostgreSQL MiB",
        [("PostgreSQL database MiB", col("pg_bytes", mib))],
        y2=(
            "bets kept (thousands), WebSocket connections",
            [("bets kept, thousands", col("pg_bets", 1000)), ("WebSocket connections", col("ws_connections"))],
        ),
        xticks=ticks,
        dots=False,
    )
    if svg:
        (out / "soak-storage.svg").write_text(svg)
    print(f"\nsoak: {len(rows)} samples over {end:.1f} min -> soak-memory.svg, soak-storage.svg")


if __name__ == "__main__":
    main()
