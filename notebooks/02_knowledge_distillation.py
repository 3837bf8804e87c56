# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Knowledge distillation: soft targets, the KD loss, and learning from a peer
#
# Everything in the cooperative system teaches something else: the Leader teaches the
# Teammates, the Teammates teach each other, and each Teammate teaches its own shallower
# sub-networks. The tool is knowledge distillation {cite}`hinton2015distilling`; the
# Teammates' exchange is *mutual* distillation {cite}`zhang2018deep`. This chapter shows the
# loss, why it carries a factor $T^2$, and two small networks trained briefly with and without
# learning from each other.
#
# **Needs:** a CPU. It trains only when asked: two short runs (seconds on the test profile,
# minutes at preview).

# %%
import pandas as pd
import torch

from coop_utils import chapters, listings, plots, result_plots
from coop_utils.losses import kd_loss, teammate_loss

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True
dataset = "cifar100"
epochs = None

# %% tags=["remove-input"]
chapter = chapters.start_chapter(
    profile, device, seed, data_root, run_root, results_root, train
)

# %% [markdown]
# ## Soft targets and temperature
#
# A network's logits $z$ become probabilities through a softmax. Dividing the logits by a
# temperature $T > 1$ before the softmax softens them:
#
# $$p_i^{T} = \frac{\exp(z_i / T)}{\sum_j \exp(z_j / T)}.$$
#
# At $T = 1$ the teacher's answer is nearly one-hot; at higher $T$ the small probabilities it
# gives the *wrong* classes, which say which classes it finds alike, become visible.

# %%
temperature_plot = plots.softmax_temperature_figure(
    [4.0, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0], temperatures=[1, 2, 4, 8]
)

# %% [markdown]
# At $T = 4$, the replication's default, the top class keeps under a third of the probability
# (80 % at $T = 1$); the rest, spread over the other classes, is the "dark knowledge" a student
# learns from.

# %% [markdown]
# ## The distillation loss
#
# A student $u$ learns from a teacher $t$ by matching its softened distribution, the teacher
# held fixed:
#
# $$\mathrm{KD}(t \to u) = T^2 \,\mathrm{KL}\bigl(\operatorname{softmax}(t / T) \,\big\|\,
# \operatorname{softmax}(u / T)\bigr).$$

# %%
listings.show_source(kd_loss)

# %% [markdown]
# The same number from the definition, on random logits:

# %%
generator = torch.Generator().manual_seed(seed)
student, teacher = (
    torch.randn(4, 10, generator=generator),
    torch.randn(4, 10, generator=generator),
)
T = 4.0
p_teacher, p_student = (
    torch.softmax(teacher / T, 1),
    torch.softmax(student / T, 1),
)
by_definition = (
    T**2 * (p_teacher * (p_teacher.log() - p_student.log())).sum(1).mean()
)
pd.Series(
    {
        "kd_loss": kd_loss(student, teacher, T).item(),
        "by the definition": by_definition.item(),
    },
    name="distillation loss",
).round(6)

# %% [markdown]
# Why $T^2$: the gradient of the softened KL with respect to the student's logits shrinks
# like $1 / T^2$. The factor keeps the distillation term's gradient on the scale of the
# cross-entropy's whatever the temperature:

# %%
rows = []
for temperature in (1.0, 2.0, 4.0, 8.0):
    logits = student.clone().requires_grad_()
    kd_loss(logits, teacher, temperature).backward()
    norm = logits.grad.norm().item()
    rows.append(
        {
            "T": temperature,
            "with T^2": norm,
            "without T^2": norm / temperature**2,
        }
    )
pd.DataFrame(rows).set_index("T").round(4)

# %% [markdown]
# ## Mutual distillation
#
# Two Teammates $i$ and $j$ learn from the labels and from each other, each one's logits a
# (detached) teacher for the other:
#
# $$\mathcal{L}_i = \mathrm{CE}(z_i, y) + \mathrm{KD}(z_j \to z_i).$$
#
# In the full system a Leader term $\mathrm{KD}(z_L \to z_i)$ joins it (chapter 4). The
# library's Teammate loss, with its switches:

# %%
listings.show_source(teammate_loss)

# %% [markdown]
# ## Run it yourself: two Teammates, with and without mutual distillation
#
# Two runs of the cooperative trainer with its other parts switched off (no Leader, no
# sub-networks), so that only mutual distillation differs: two Teammates that learn from each
# other, and two that train side by side, each alone. They are a demonstration, not part of the
# recorded campaign: the book trains them only when asked (a finished run is reused).

# %% tags=["hide-input"]
schedule = {} if epochs is None else {"epochs": epochs}
common = {"use_leader": False, "factors_per_teammate": 0, **schedule}
configs = {
    "mutual": chapter.config(dataset, variant="kd-mutual", **common),
    "alone": chapter.config(
        dataset, variant="kd-alone", mutual=False, **common
    ),
}
runs = chapter.train(configs)
trained = len(runs) == len(configs)

# %% tags=["hide-input"]
if trained:
    chapters.show(
        result_plots.training_curves_figure(
            {label: run.log for label, run in runs.items()},
            f"Two Teammates, with and without mutual distillation "
            f"({dataset}, {profile})",
        ),
        "The mutual run's loss carries the extra distillation terms, so its "
        "curve sits higher; what matters is the accuracy each network "
        "reaches.",
    )

# %% tags=["hide-input"]
if trained:
    full_depth = pd.concat(
        result_plots.metrics_frame(run.metrics, run=label).query("s == 1.0")
        for label, run in runs.items()
    )
    full_depth = full_depth[full_depth["network"] != "teammate_mean"]
    gain = full_depth.groupby("run")["top1"].mean()
    chapters.show(
        result_plots.full_depth_accuracy_figure(
            full_depth,
            f"Full-depth test top-1 after {configs['mutual'].epochs} epochs "
            f"({profile})",
        ),
        "Each bar is one network at full depth; the two colours differ only "
        "in whether the pair learned from each other. The Teammates' mean at "
        f"full depth: {gain['mutual']:.1f} % with mutual distillation, "
        f"{gain['alone']:.1f} % alone ({gain['mutual'] - gain['alone']:+.1f} "
        "points).",
    )
