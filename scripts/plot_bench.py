"""Renders the soak's samples (a `switchboard-bench soak --json` file) as a PNG.

Usage: scripts/plot-bench SOAK.json OUT.png   (the wrapper installs matplotlib into .venv-plot)
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
