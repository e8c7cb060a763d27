"""Renders bench results (`switchboard-bench ... --json` files) as PNGs for docs/.

Usage (the wrapper installs matplotlib into .venv-plot):
  scripts/plot-bench SOAK.json OUT.png
      the soak's samples: RSS, open fds and rate over time.
  scripts/plot-bench compare OUT.png LABEL=ALL.json [LABEL=ALL.json ...]
      `all` runs side by side against the issue's targets and the anchor's figures:
      lifecycles/s at 32 clients, worst p99, memory per held session, DELETE -> 404.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, out: str) -> None:
    report = json.load(open(source))
    soak = report["soak"]
    samples = soak["samples"]
    minutes = [s["t_seconds"] / 60 for s in samples]
    rss = [s["rss_bytes"] / 1048576 for s in samples]
    fds = [s["open_fds"] for s in samples]
    done = [s["lifecycles"] for s in samples]
    rates = [0.0] + [
        (b - a) / ((tb - ta) * 60) if tb > ta else 0.0
        for a, b, ta, tb in zip(done, done[1:], minutes, minutes[1:])
    ]

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(minutes, rss, color="tab:blue")
    axes[0].set_ylabel("server RSS (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(minutes, fds, color="tab:orange")
    axes[1].set_ylabel("open file descriptors")
    axes[1].set_ylim(bottom=0)
    axes[2].plot(minutes, rates, color="tab:green")
    axes[2].set_ylabel("lifecycles/s")
    axes[2].set_ylim(bottom=0)
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.axvline(soak["warmup_minutes"], color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Soak: local serve, {soak['rate_per_second']:g} lifecycles/s for {soak['minutes']:g} min "
        f"({soak['lifecycles']} done, {soak['failed']} failed); warm-up to the dashed line"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)


# The anchor's figures and the targets (issue #9); the anchor is not re-measured here.
ANCHOR = {"lifecycles": 310, "p99": None, "kb": 10.0, "close": 5000.0}
TARGET = {"lifecycles": 20 * 310, "p99": 10.0, "kb": 2.0, "close": 100.0}


def compare(out: str, runs: list[str]) -> None:
    labels, figures = [], []
    for run in runs:
        label, _, path = run.partition("=")
        report = json.load(open(path))
        lc = report["lifecycles"]
        labels.append(label)
        figures.append(
            {
                "lifecycles": lc["lifecycles_per_second"],
                "p99": max(e["p99_ms"] for e in lc["endpoints"]),
                "kb": report["held"]["bytes_per_session"] / 1000,
                "close": report["close"]["p50_ms"],
            }
        )
    panels = [
        ("lifecycles", "lifecycles/s at 32 clients (higher is better)", False),
        ("p99", "worst endpoint p99 at 32 clients, ms", False),
        ("kb", "server memory per held session, KB (10,000 held)", False),
        ("close", "DELETE -> 404, p50 ms (log scale)", True),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, title, log) in zip(axes.flat, panels):
        names = list(labels)
        values = [f[key] for f in figures]
        colors = ["tab:blue"] * len(values)
        if ANCHOR[key] is not None:
            names.insert(0, "anchor (issue's figure)")
            values.insert(0, ANCHOR[key])
            colors.insert(0, "tab:grey")
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, fmt=lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.3g}", fontsize=8)
        ax.axhline(TARGET[key], color="tab:red", linestyle="--", linewidth=1, label="target")
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.tick_params(axis="x", labelsize=8, rotation=15)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Local serve on the 2-core build machine (client and server share it)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1], sys.argv[2])
