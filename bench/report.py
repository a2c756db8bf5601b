"""Benchmark results as the issue's targets, a Markdown table, and plots per model."""

from __future__ import annotations

from pathlib import Path


def _row(results: dict, system: str, workload: str, concurrency: int) -> dict | None:
    for row in results["results"]:
        if (row["system"], row["workload"], row["concurrency"]) == (system, workload, concurrency):
            return row
    return None


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
    if ours_image:
        add(
            "image, 1 per request, c=64: items/s over in-process ORT at its best batch",
            ours_image["items_per_s"] / limits["image"]["best_items_per_s"],
            0.9,
            True,
        )
    ours_fraud, noop = (
        _row(results, "deepserve", "fraud-1", 64),
        _row(results, "fastapi-noop", "fraud-1", 64),
    )
    if ours_fraud and noop:
        add(
            "fraud, 1 per request, c=64: req/s over the FastAPI no-op",
            ours_fraud["rps"] / noop["rps"],
            1.2,
            True,
        )
    ours_fraud_100 = _row(results, "deepserve", "fraud-100", 64)
    if ours_fraud_100:
        add(
            "fraud, 100 per request, c=64: rows/s over in-process ORT at its best batch",
            ours_fraud_100["items_per_s"] / limits["fraud"]["best_items_per_s"],
            0.5,
            True,
        )
    for peer in ("ray-serve", "bentoml"):
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
        if ours:
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
    return out


def markdown(results: dict) -> str:
    machine, settings = results["machine"], results["settings"]
    lines = [
        f"# Benchmark {results['date']}"
        + (" (quick mode: not a measurement)" if results["quick"] else ""),
        "",
        f"{machine['cpus']} x {machine['cpu']}; Python {machine['python']}, "
        f"ONNX Runtime {machine['onnxruntime']}, {machine['wrk']}. "
        f"Windows of {settings['window_s']} s (longer when "
        f"{settings.get('latencies_per_window', '-')} median latencies"
        + (
            f" or {settings['slowest_per_window']} p99 latencies"
            if "slowest_per_window" in settings
            else ""
        )
        + f" do not fit, up to {settings.get('max_window_s', '-')} s) until three agree on "
        f"successful req/s within {settings['stable_within']:.0%} "
        f"(at most {settings['max_windows']}). "
        f"Images: {results['data']['images']}; transactions: {results['data']['transactions']}.",
        "",
        "In-process ONNX Runtime (no HTTP), measured at the start of the run and at its end; "
        "per batch size, the median of the rounds of both (the ratios above use these):",
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
        "| server cores | wrk cores | peak RSS MB | stable |",
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
    lines += ["", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for t in results["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['value']} | {t['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def plots(results: dict, stem: Path) -> None:
    """Per model: throughput against concurrency, and p99 against throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            label = f"{system}, {workload}"
            style = "-o" if system.startswith("deepserve") else "--s"
            left.plot(
                [p["concurrency"] for p in points],
                [p["items_per_s"] for p in points],
                style,
                label=label,
            )
            right.plot(
                [p["items_per_s"] for p in points],
                [p["p99_ms"] for p in points],
                style,
                label=label,
            )
        limit = results["limits"][model]["best_items_per_s"]
        left.axhline(limit, color="black", linestyle=":", label="in-process ORT, best batch")
        left.set(xscale="log", xlabel="concurrency", ylabel="items/s", title=f"{model}: throughput")
        right.set(
            yscale="log", xlabel="items/s", ylabel="p99 ms", title=f"{model}: p99 vs throughput"
        )
        left.legend(fontsize=7)
        right.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(f"{stem}-{model}.png", dpi=100)
        plt.close(fig)
