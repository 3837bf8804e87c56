"""Draw the cooperative training step: the Leader, the Teammates, their sub-networks, and every
loss term with the arrow that carries it. Writes ``book/_static/cooperative-step.svg``
(committed; the book shows it offline):

    python book/diagrams/cooperative_step.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "_static" / "cooperative-step.svg"
BLUE, ORANGE, GREEN, GREY = "#4C72B0", "#DD8452", "#55A868", "#555555"


def box(ax, x, y, w, h, text, color, size=10):
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=color,
            alpha=0.18,
            edgecolor=color,
            linewidth=1.5,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def arrow(ax, start, end, label, color, offset=(0, 0), rad=0.0, size=9, both=False):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="<|-|>" if both else "-|>",
            mutation_scale=12,
            color=color,
            linewidth=1.4,
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    mid = ((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1])
    ax.text(
        *mid,
        label,
        ha="center",
        va="center",
        fontsize=size,
        color=color,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
    )


def main() -> None:
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=100)
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.45, 6.6)
    ax.axis("off")
    box(ax, 5, 5.9, 2.4, 0.7, "labels $y$", GREY)
    box(ax, 5, 4.3, 2.6, 0.8, "Leader $z_L$\n(full depth)", BLUE)
    teammates = {1.9: "1", 8.1: "2"}
    for x, i in teammates.items():
        box(ax, x, 2.6, 2.6, 0.8, f"Teammate {i}  $z_{i}$\n(full depth, gated)", ORANGE)
        for dx, s in ((-0.75, "a"), (0.75, "b")):
            box(ax, x + dx, 0.5, 1.4, 0.7, f"sub-network\nat $s_{s}$", GREEN, size=9)
            arrow(ax, (x + dx * 0.5, 2.18), (x + dx, 0.95), "", GREEN)
        ax.text(
            x,
            1.55,
            f"$w(s)\\,[\\mathrm{{CE}} + \\mathrm{{KD}}(z_{i} \\to z_{i}^{{s}})]$",
            ha="center",
            va="center",
            fontsize=9,
            color=GREEN,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
        )
    arrow(ax, (5, 5.53), (5, 4.72), r"$\mathrm{CE}(z_L, y)$", GREY, offset=(0.95, 0))
    arrow(ax, (4.0, 3.9), (2.5, 3.02), r"$\mathrm{KD}(z_L \to z_1)$", BLUE, offset=(-0.2, 0.25))
    arrow(ax, (6.0, 3.9), (7.5, 3.02), r"$\mathrm{KD}(z_L \to z_2)$", BLUE, offset=(0.2, 0.25))
    arrow(
        ax,
        (3.25, 2.6),
        (6.75, 2.6),
        r"$\mathrm{KD}(z_2 \to z_1)$, $\mathrm{KD}(z_1 \to z_2)$",
        ORANGE,
        both=True,
        offset=(0, -0.3),
    )
    arrow(
        ax, (3.8, 5.9), (1.9, 3.02), r"$\mathrm{CE}(z_1, y)$", GREY, rad=0.25, offset=(-0.9, 0.55)
    )
    arrow(
        ax, (6.2, 5.9), (8.1, 3.02), r"$\mathrm{CE}(z_2, y)$", GREY, rad=-0.25, offset=(0.9, 0.55)
    )
    ax.text(
        5,
        -0.3,
        "sub-networks: the Teammate's blocks at drawn scaling factors $s_a, s_b$; "
        "every teacher's logits are detached",
        ha="center",
        fontsize=8,
        color=GREY,
    )
    fig.tight_layout(pad=0.2)
    fig.savefig(OUT, format="svg", metadata={"Date": None})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
