"""Benchmark results as the issue's targets, Markdown tables, and plots."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.systems import PEERS

V1_SYSTEM = "deepserve /v1 (HTTP, wrk)"  # bench/open_inference.py's rows, by name
V2_HTTP_WRK = "deepserve v2 (HTTP, wrk)"
V2_HTTP_PA = "deepserve v2 (HTTP, perf_analyzer)"
# Triton's documentation measures Triton with perf_analyzer: the systems table has those rows
# beside wrk's (bench/harness.py).
TRITON_BY_PERF_ANALYZER = "triton (perf_analyzer)"


def _row(results: dict, system: str, workload: str, concurrency: int) -> dict | None:
    for row in results["results"]:
        if (row["system"], row["workload"], row["concurrency"]) == (system, workload, concurrency):
            return row
    return None


def paired_ratio(row: dict, base: dict) -> tuple[float, float, float] | None:
    """`row` over `base` in throughput: the median, lowest and highest over the rounds in
    which both were measured (side by side, so a round's ratio is free of the drift)."""
    ratios = [
        a / b
        for a, b in zip(row["rps_rounds"], base["rps_rounds"], strict=True)
        if a is not None and b
    ]
    if not ratios:
        return None
    return statistics.median(ratios), min(ratios), max(ratios)


def _v2_rows(results: dict) -> list[tuple[dict, dict]]:
    """Each open-inference row with the /v1 row of its workload and concurrency."""
    rows = results.get("open_inference", {}).get("rows", [])
    base = {(r["workload"], r["concurrency"]): r for r in rows if r["system"] == V1_SYSTEM}
    return [
        (r, base[(r["workload"], r["concurrency"])])
        for r in rows
        if r["system"] != V1_SYSTEM and (r["workload"], r["concurrency"]) in base
    ]


def targets(results: dict) -> list[dict]:
    """Each target: what it compares, the measured ratio or value, the goal, met or not."""
    out: list[dict] = []
    limits = results["limits"]

    def add(name: str, value: float | None, goal: float, at_least: bool, unit: str = "") -> None:
        if value is None:
            return
        met = value >= goal if at_least else value <= goal
        out.append(
            {
                "target": name,
                "value": round(value, 3),
                "goal": f"{'>=' if at_least else '<='} {goal}{unit}",
                "met": met,
            }
        )

    ours_image = _row(results, "deepserve", "image-1", 64)
    if ours_image and limits:
        add(
            "image, 1 per request, c=64: items/s over in-process ORT at its best batch",
            ours_image["items_per_s"] / limits["image"]["best_items_per_s"],
            0.9,
            True,
        )
    for noop_name, which in (("fastapi-noop", "idiomatic"), ("fastapi-noop-lean", "lean")):
        ours_fraud, noop = (
            _row(results, "deepserve", "fraud-1", 64),
            _row(results, noop_name, "fraud-1", 64),
        )
        if ours_fraud and noop:
            add(
                f"fraud, 1 per request, c=64: req/s over the {which} FastAPI no-op",
                ours_fraud["rps"] / noop["rps"],
                1.2,
                True,
            )
    if "noop_rounds" in results:
        from bench.noop_rounds import ratios

        for noop_name, ratio in ratios(results["noop_rounds"]).items():
            which = "lean" if noop_name.endswith("lean") else "idiomatic"
            add(
                f"fraud, 1 per request, c=64: req/s over the {which} FastAPI no-op (side by side)",
                ratio,
                1.2,
                True,
            )
    ours_fraud_100 = _row(results, "deepserve", "fraud-100", 64)
    if ours_fraud_100 and limits:
        add(
            "fraud, 100 per request, c=64: rows/s over in-process ORT at its best batch",
            ours_fraud_100["items_per_s"] / limits["fraud"]["best_items_per_s"],
            0.5,
            True,
        )
    ours_fraud, triton = (
        _row(results, "deepserve", "fraud-1", 64),
        _row(results, "triton", "fraud-1", 64),
    )
    if ours_fraud and triton and triton["rps"] > 0:
        add("fraud-1, c=64: req/s over triton", ours_fraud["rps"] / triton["rps"], 1.0, True)
    ours_image, triton = (
        _row(results, "deepserve", "image-1", 64),
        _row(results, "triton", "image-1", 64),
    )
    if ours_image and triton and triton["rps"] > 0:
        out.append(
            {
                "target": "image-1, c=64: req/s over triton",
                "value": round(ours_image["rps"] / triton["rps"], 3),
                "goal": "reported",
                "met": None,
            }
        )
    # Both driven by Triton's generator: deepserve's v2 HTTP (the open-inference section) and
    # Triton's, the same items as binary tensors.
    v2_by_perf_analyzer = {
        (r["workload"], r["concurrency"]): r
        for r in results.get("open_inference", {}).get("rows", [])
        if r["system"] == V2_HTTP_PA
    }
    for workload, goal in (("fraud-1", 1.0), ("image-1", None)):
        ours, theirs = (
            v2_by_perf_analyzer.get((workload, 64)),
            _row(results, TRITON_BY_PERF_ANALYZER, workload, 64),
        )
        if ours and theirs and theirs["rps"] > 0:
            name = f"{workload}, c=64, both driven by perf_analyzer: deepserve v2 req/s over triton"
            if goal is None:
                out.append(
                    {
                        "target": name,
                        "value": round(ours["rps"] / theirs["rps"], 3),
                        "goal": "reported",
                        "met": None,
                    }
                )
            else:
                add(name, ours["rps"] / theirs["rps"], goal, True)
    for peer in (p for p in PEERS if p != "triton"):  # Triton's goals are the two above
        for workload in ("image-1", "fraud-1"):
            ours, theirs = (
                _row(results, "deepserve", workload, 64),
                _row(results, peer, workload, 64),
            )
            if ours and theirs and theirs["rps"] > 0:
                add(f"{workload}, c=64: req/s over {peer}", ours["rps"] / theirs["rps"], 2.0, True)
                add(
                    f"{workload}, c=64: p99 over {peer}",
                    ours["p99_ms"] / theirs["p99_ms"],
                    0.5,
                    False,
                )
    for workload, model in (("image-1", "image"), ("fraud-1", "fraud")):
        ours = _row(results, "deepserve", workload, 1)
        if ours and limits:
            add(
                f"{workload}, c=1: p50 minus in-process single inference (ms)",
                ours["p50_ms"] - limits[model]["single_p50_ms"],
                1.0,
                False,
                " ms",
            )
    ours_start = results["systems"].get("deepserve")
    if ours_start:
        add("start to ready (s)", ours_start["start_to_ready_s"], 3.0, False, " s")
        add("peak RSS under load (MB)", ours_start.get("rss_mb_peak", 0.0), 500, False, " MB")
    for workload in ("image-1", "fraud-1"):
        on, off = (
            _row(results, "deepserve", workload, 64),
            _row(results, "deepserve-unbatched", workload, 64),
        )
        if on and off and off["rps"] > 0:
            out.append(
                {
                    "target": f"{workload}, c=64: batching gain (on over off)",
                    "value": round(on["rps"] / off["rps"], 2),
                    "goal": "reported",
                    "met": None,
                }
            )
    # The issue: v2 at least 0.9 of /v1's req/s, image and fraud, c=1 and c=64.
    for row, base in _v2_rows(results):
        ratio = paired_ratio(row, base)
        if ratio is not None:
            add(
                f"{row['workload']}, c={row['concurrency']}: {row['system']} req/s over "
                f"{base['system']} (same process, side by side)",
                ratio[0],
                0.9,
                True,
            )
    if "fraud_history" in results:
        out += _fraud_history_targets(results["fraud_history"])
    if "reasons" in results:
        out += _reasons_targets(results["reasons"])
    return out


def _reasons_targets(section: dict) -> list[dict]:
    from bench.reasons import http_ratios, in_process_ratios

    flagged = http_ratios(section)["flagged"]
    by_size = in_process_ratios(section)
    served = section["in_process"]["served_batch"]
    return [
        {
            "target": "fraud reasons, default (flagged answers only), c=64: req/s over "
            "reasons=never (side by side)",
            "value": round(flagged, 3),
            "goal": ">= 0.9",
            "met": flagged >= 0.9,
        },
        {
            "target": f"fraud reasons for every row, in process at the served batch ({served}): "
            "rows/s over the model alone",
            "value": round(by_size[served], 3),
            "goal": ">= 0.3",
            "met": by_size[served] >= 0.3,
        },
    ]


def _fraud_history_targets(section: dict) -> list[dict]:
    from bench.fraud_history import ratios

    out = []
    for store, goal in (("embedded", 0.7), ("redis", 0.5)):
        ratio = ratios(section).get(store)
        if ratio is not None:
            out.append(
                {
                    "target": f"fraud, 1 per request, c=64: stateful ({store}) req/s over "
                    "stateless /score (side by side)",
                    "value": round(ratio, 3),
                    "goal": f">= {goal}",
                    "met": ratio >= goal,
                }
            )
    for row in section["rows"]:
        if row["items"] == 100 and row["store"] == "embedded":
            out.append(
                {
                    "target": "fraud, 100 per request: transactions/s recorded and scored "
                    "(embedded)",
                    "value": row["items_per_s"],
                    "goal": ">= 20000",
                    "met": row["items_per_s"] >= 20_000,
                }
            )
    return out


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"# Benchmark {results['date']}"
        + (" (quick mode: not a measurement)" if results["quick"] else ""),
        "",
        f"{machine['cpus']} x {machine['cpu']}; Python {machine['python']}, "
        f"ONNX Runtime {machine['onnxruntime']}, {machine['wrk']}"
        + (f", perf_analyzer of {machine['perf_analyzer']}" if "perf_analyzer" in machine else "")
        + (f"; code at {machine['commit']}" if "commit" in machine else "")
        + f". Images: {results['data']['images']}; "
        f"transactions: {results['data']['transactions']}.",
    ]
    if results["results"] or results["limits"]:
        lines += _systems_markdown(results)
    if "noop_rounds" in results:
        lines += _noop_rounds_markdown(results["noop_rounds"])
    if "open_inference" in results:
        lines += _open_inference_markdown(results)
    if "fraud_history" in results:
        lines += _fraud_history_markdown(results["fraud_history"])
    if "reasons" in results:
        lines += _reasons_markdown(results["reasons"])
    if "efficientnet" in results:
        lines += _efficientnet_markdown(results["efficientnet"])
    lines += ["", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for t in results["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['value']} | {t['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def _systems_markdown(results: dict) -> list[str]:
    settings = results["settings"]
    lines = [
        "",
        "## Systems",
        "",
        f"Windows of {settings['window_s']} s (longer when "
        f"{settings.get('latencies_per_window', '-')} median latencies"
        + (
            f" or {settings['slowest_per_window']} p99 latencies"
            if "slowest_per_window" in settings
            else ""
        )
        + f" do not fit, up to {settings.get('max_window_s', '-')} s) until three agree on "
        f"successful req/s within {settings['stable_within']:.0%} "
        f"(at most {settings['max_windows']}). wrk drives every row but those that name "
        "perf_analyzer, which decides stability itself.",
    ]
    if results["limits"]:
        lines += [
            "",
            "In-process ONNX Runtime (no HTTP), measured at the start of the run and at its "
            "end; per batch size, the median of the rounds of both (the targets use these):",
            "",
            "| model | best items/s | at batch | one item p50 ms | at start: best; one item "
            "| at end: best; one item |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
    for model, limit in results["limits"].items():
        ends = [results.get(f"limits_at_{when}", {}).get(model) for when in ("start", "end")]
        lines.append(
            f"| {model} ({limit['model']}/{limit['version']}) | {limit['best_items_per_s']:,.0f} "
            f"| {limit['best_batch']} | {limit['single_p50_ms']:.2f} | "
            + " | ".join(
                f"{max(end['items_per_s'].values()):,.0f}; {end['single_p50_ms']:.2f} ms"
                if end
                else "-"
                for end in ends
            )
            + " |"
        )
    lines += [
        "",
        "| system | workload | concurrency | req/s | items/s | p50 ms | p90 ms | p99 ms | errors "
        "| server cores | generator cores | peak RSS MB | stable |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["results"]:
        lines.append(
            f"| {r['system']} | {r['workload']} | {r['concurrency']} | {r['rps']:,.0f} "
            f"| {r['items_per_s']:,.0f} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} "
            f"| {r['errors']} | {r['server_cpu']} | {r['generator_cpu']} | {r['rss_mb_peak']} "
            f"| {'yes' if r['stable'] else 'no'} |"
        )
    lines += [
        "",
        "| system | start to ready s | idle RSS MB | peak RSS MB |",
        "| --- | --- | --- | --- |",
    ]
    for name, s in results["systems"].items():
        peak = s.get("rss_mb_peak", "")
        lines.append(f"| {name} | {s['start_to_ready_s']} | {s['rss_mb_idle']} | {peak} |")
    return lines


def _open_inference_markdown(results: dict) -> list[str]:
    section = results["open_inference"]
    settings, pa = section["settings"], section["settings"]["perf_analyzer"]
    lines = [
        "",
        "## Open Inference Protocol (v2) beside /v1",
        "",
        f"One deepserve process ({settings['service']}). Per workload and concurrency, "
        f"{settings['rounds']} round(s): {settings['order']}. Each row names its load "
        f"generator. wrk: one window of {settings['wrk_window_s']:g} s per round, the v2 "
        "bodies byte for byte those perf_analyzer sends (binary tensor data extension). "
        f"perf_analyzer ({pa['version']}, {pa['mode']}, HTTP with the {pa['http']}): windows "
        f"of {pa['measurement_interval_ms']} ms until three agree within "
        f"{pa['stability_percentage']:g}% on throughput and mean latency (at most "
        f"{pa['max_trials']}), reporting those three; 'no' under stable when they never did "
        "(then three windows, unchecked). A row shows its median round (latencies too); "
        "'over /v1' is the median over rounds of the row's req/s over the /v1 row's in the "
        "same round, lowest to highest in brackets. /v1 sends the raw JPEG or the "
        "transaction as JSON; v2 the same JPEG as `images` BYTES, or the 15 features /v1 "
        "derives from the transaction as `features` FP32.",
    ]
    if section.get("perf_analyzer_unavailable"):
        lines += ["", f"No perf_analyzer rows: {section['perf_analyzer_unavailable']}"]
    lines += [
        "",
        "| workload | concurrency | system | generator | req/s | p50 ms | p90 ms | p99 ms "
        "| errors | server cores | generator cores | stable | req/s per round | over /v1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = section["rows"]
    by_key = {(r["system"], r["workload"], r["concurrency"]): r for r in rows}
    for r in rows:
        stable = "—" if r["stable"] is None else ("yes" if r["stable"] else "no")
        rounds = ", ".join("-" if x is None else f"{x:,.0f}" for x in r["rps_rounds"])
        over = "—"
        v1 = by_key.get((V1_SYSTEM, r["workload"], r["concurrency"]))
        ratio = paired_ratio(r, v1) if v1 is not None and r is not v1 else None
        if ratio is not None:
            over = f"{ratio[0]:.3f} ({ratio[1]:.3f}-{ratio[2]:.3f})"
        lines.append(
            f"| {r['workload']} | {r['concurrency']} | {r['system']} | {r['generator']} "
            f"| {r['rps']:,.0f} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['errors']} "
            f"| {r['server_cpu']} | {r['generator_cpu']} | {stable} | {rounds} | {over} |"
        )
    # The generator's share: the same v2 HTTP requests from perf_analyzer and from wrk.
    shares = []
    for r in rows:
        wrk_row = by_key.get((V2_HTTP_WRK, r["workload"], r["concurrency"]))
        ratio = paired_ratio(r, wrk_row) if r["system"] == V2_HTTP_PA and wrk_row else None
        if ratio is not None:
            shares.append(
                f"- {r['workload']}, c={r['concurrency']}: the same v2 HTTP requests from "
                f"perf_analyzer over from wrk: {ratio[0]:.3f} ({ratio[1]:.3f}-{ratio[2]:.3f})"
            )
    if shares:
        lines += ["", *shares]
    for failure in section.get("failures", []):
        lines.append(
            f"- failed: {failure['workload']}, c={failure['concurrency']}, "
            f"{failure['system']}, round {failure['round'] + 1}: "
            + failure["error"].strip().splitlines()[-1]
        )
    return lines


def _noop_rounds_markdown(section: dict) -> list[str]:
    from bench.noop_rounds import ratios

    lines = [
        "",
        "## One transaction a request beside the FastAPI no-ops, side by side",
        "",
        f"All three servers running; c={section['concurrency']}, one wrk window of "
        f"{section['window_s']:g} s each per round, the order reversed every other round.",
        "",
        "| system | req/s per round | deepserve over it (median of rounds) |",
        "| --- | --- | --- |",
    ]
    over = ratios(section)
    for name, rates in section["rps_rounds"].items():
        ratio = f"{over[name]:.3f}" if name in over else ""
        lines.append(f"| {name} | {', '.join(f'{r:,.0f}' for r in rates)} | {ratio} |")
    return lines


def _fraud_history_markdown(section: dict) -> list[str]:
    settings = section["settings"]
    lines = [
        "",
        "## Fraud scoring with history beside stateless /score",
        "",
        f"Two deepserve processes (embedded store; Redis: {settings['redis']}); "
        f"{settings['rounds']} round(s) of {settings['window_s']:g} s windows: "
        f"{settings['order']}. Payments: {settings['payments']}. History loaded before: "
        + ", ".join(f"{n:,} payments ({store})" for store, n in settings["history_loaded"].items())
        + ". RSS idle after the load: "
        + ", ".join(f"{mb} MB ({store})" for store, mb in section["rss_mb_idle"].items())
        + ". A row shows its median round.",
        "",
        "| row | concurrency | req/s | transactions/s | p50 ms | p99 ms | errors "
        "| server cores | RSS MB (peak) | req/s per round |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in section["rows"]:
        rounds = ", ".join(f"{x:,.0f}" for x in r["rps_rounds"])
        lines.append(
            f"| {r['system']} | {r['concurrency']} | {r['rps']:,.0f} | {r['items_per_s']:,.0f} "
            f"| {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['server_cpu']} "
            f"| {r['rss_mb_peak']} | {rounds} |"
        )
    in_process = section.get("in_process_rows_per_s")
    if in_process:
        lines += [
            "",
            "In process (ONNX Runtime alone, the card's largest batch of real rows, rounds "
            "interleaved): "
            + ", ".join(f"{version} {rows:,.0f} rows/s" for version, rows in in_process.items())
            + ".",
        ]
    return lines


def _reasons_markdown(section: dict) -> list[str]:
    from bench.reasons import http_ratios, in_process_ratios

    http = section["http_rps_rounds"]
    ratios = http_ratios(section)
    lines = [
        "",
        f"## Reasons ({section['model']})",
        "",
        f"`/v1/fraud/score`, one real transaction per request ({section['bodies']} bodies, "
        f"{section['bodies_flagged']} of them flagged), "
        f"c=64, {section['rounds']} round(s) side by side in one server; ratios are the "
        "median of the rounds' ratios to `reasons=never`.",
        "",
        "| reasons | req/s per round | over never |",
        "| --- | --- | --- |",
    ]
    for mode, rates in http.items():
        ratio = "" if mode == "never" else f"{ratios[mode]:.3f}"
        lines.append(f"| {mode} | {', '.join(f'{r:,.0f}' for r in rates)} | {ratio} |")
    rates = section["in_process"]["rows_per_s_rounds"]
    lines += [
        "",
        "In process (ONNX Runtime through the service's runtime), rows/s per round:",
        "",
        "| batch | model alone | with reasons for every row (as `?reasons=always`) | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for size, ratio in in_process_ratios(section).items():
        alone = ", ".join(f"{r:,}" for r in rates["scored"][str(size)])
        both = ", ".join(f"{r:,}" for r in rates["explained"][str(size)])
        lines.append(f"| {size} | {alone} | {both} | {ratio:.3f} |")
    return lines


def _efficientnet_markdown(section: dict) -> list[str]:
    in_process = section["in_process"]
    lines = [
        "",
        f"## A 224x224 ImageNet network ({section['model']})",
        "",
        f"{section['description']}; input {section['input']}. In process (ONNX Runtime "
        "through the service's runtime), images/s by batch size, median of "
        f"{section['rounds']} round(s):",
        "",
        "| batch | " + " | ".join(in_process["images_per_s"]) + " |",
        "| --- |" + " --- |" * len(in_process["images_per_s"]),
        "| images/s | "
        + " | ".join(f"{r:,.1f}" for r in in_process["images_per_s"].values())
        + " |",
        "",
        f"One image, batch of 1: p50 {in_process['single_p50_ms']} ms. Served through "
        "`/v1/models/cat-vs-dog/classify`, one CIFAR-10 test JPEG per request (resized to "
        "the input by the service), per round:",
        "",
        "| concurrency | images/s | p50 ms | p99 ms | errors | over in process at its best |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    best = in_process["best_images_per_s"]
    for level, windows in section["served"].items():
        rates = [w["images_per_s"] for w in windows]
        lines.append(
            f"| {level} | {', '.join(f'{r:,.1f}' for r in rates)} "
            f"| {', '.join(str(w['p50_ms']) for w in windows)} "
            f"| {', '.join(str(w['p99_ms']) for w in windows)} "
            f"| {sum(w['errors'] for w in windows)} "
            f"| {statistics.median(rates) / best:.2f} |"
        )
    return lines


def plots(results: dict, stem: Path) -> list[Path]:
    """Per model: throughput against concurrency, and p99 against throughput; the open
    inference rows as bars. The paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # One colour per system in every plot; one line style per workload (one item a request
    # solid, many dashed); deepserve's points round, the others' square.
    systems = list(dict.fromkeys(r["system"] for r in results["results"]))
    palette = plt.get_cmap("tab10" if len(systems) <= 10 else "tab20")
    colours = {system: palette(i) for i, system in enumerate(systems)}
    for model in ("image", "fraud"):
        rows = [r for r in results["results"] if r["workload"].startswith(model)]
        if not rows:
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
        series: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            series.setdefault((r["system"], r["workload"]), []).append(r)
        for (system, workload), points in sorted(series.items()):
            points.sort(key=lambda r: r["concurrency"])
            style = {
                "color": colours[system],
                "linestyle": "-" if workload.endswith("-1") else "--",
                "marker": "o" if system.startswith("deepserve") else "s",
                "label": f"{system}, {workload}",
            }
            left.plot(
                [p["concurrency"] for p in points], [p["items_per_s"] for p in points], **style
            )
            right.plot([p["items_per_s"] for p in points], [p["p99_ms"] for p in points], **style)
        limit = results["limits"][model]["best_items_per_s"]
        left.axhline(limit, color="black", linestyle=":", label="in-process ORT, best batch")
        left.set(xscale="log", xlabel="concurrency", ylabel="items/s", title=f"{model}: throughput")
        right.set(
            yscale="log", xlabel="items/s", ylabel="p99 ms", title=f"{model}: p99 vs throughput"
        )
        left.legend(fontsize=7)
        right.legend(fontsize=7)
        fig.tight_layout()
        path = Path(f"{stem}-{model}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if results.get("open_inference", {}).get("rows"):
        written.append(_open_inference_plot(results, Path(f"{stem}-open-inference.png")))
    return written


def _open_inference_plot(results: dict, path: Path) -> Path:
    """One panel per workload and concurrency: each row's req/s (every round a dot on its
    bar of the median), the ratio over /v1 above it."""
    import matplotlib.pyplot as plt

    rows = results["open_inference"]["rows"]
    groups = sorted(
        {(r["workload"], r["concurrency"]) for r in rows},
        key=lambda g: (not g[0].startswith("image"), g[1]),
    )
    systems = list(dict.fromkeys(r["system"] for r in rows))
    columns = max(1, len({c for _, c in groups}))
    lines = -(-len(groups) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(6 * columns, 4.2 * lines), squeeze=False)
    base = {(b["workload"], b["concurrency"]): b for _, b in _v2_rows(results)}
    for ax, (workload, concurrency) in zip(axes.flat, groups, strict=False):
        here = {
            r["system"]: r
            for r in rows
            if (r["workload"], r["concurrency"]) == (workload, concurrency)
        }
        for i, system in enumerate(systems):
            r = here.get(system)
            if r is None:
                continue
            ax.bar(i, r["rps"], color=f"C{i}", label=system)
            rounds = [x for x in r["rps_rounds"] if x is not None]
            ax.plot([i] * len(rounds), rounds, "k.", markersize=4)
            b = base.get((workload, concurrency))
            ratio = paired_ratio(r, b) if b is not None and r is not b else None
            if ratio is not None:
                top = max([r["rps"], *rounds])
                ax.annotate(f"{ratio[0]:.2f}x", (i, top), ha="center", va="bottom", fontsize=8)
        ax.set_xticks([])
        ax.set(ylabel="req/s", title=f"{workload}, concurrency {concurrency}")
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    fig.suptitle("Open Inference Protocol (v2) beside /v1: one process, side by side")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def drift(runs: list[tuple[str, dict]]) -> str:
    """The targets of several runs side by side, the first run's first: (name, results) each.
    Every run's targets are worked out again by today's `targets`, so that the names and the
    formulas agree across runs; a target a run could not measure is a dash."""
    columns = [
        (name, results, {t["target"]: t for t in targets(results)}) for name, results in runs
    ]
    names = list(dict.fromkeys(t for _, _, by_name in columns for t in by_name))
    head = [
        f"{name} ({results['machine'].get('cpu', '?')}, {results['date'][:10]})"
        for name, results, _ in columns
    ]
    lines = [
        "| target | goal | " + " | ".join(head) + " |",
        "| --- | --- |" + " --- |" * len(head),
    ]
    for target in names:
        goal = next(by_name[target]["goal"] for _, _, by_name in columns if target in by_name)
        cells = []
        for _, _, by_name in columns:
            found = by_name.get(target)
            if found is None:
                cells.append("—")
            else:
                flag = "" if found["met"] is None or found["met"] else " (**no**)"
                cells.append(f"{found['value']}{flag}")
        lines.append(f"| {target} | {goal} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="The targets of benchmark runs side by side (Markdown), so that drift "
        "between runs and machines shows.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="results JSON files, newest first")
    args = parser.parse_args(argv)
    runs = [(path.stem, json.loads(path.read_text())) for path in args.runs]
    print(drift(runs), end="")


if __name__ == "__main__":
    main()
