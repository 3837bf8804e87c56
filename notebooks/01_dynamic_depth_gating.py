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
# # Dynamic depth: scaling factors, gates and what a depth costs
#
# The paper trains one network whose depth is chosen when it runs {cite}`fang2023cooperative`.
# This chapter builds that idea from the bottom: what a *scaling factor* keeps of a residual
# network, how a gate learns *which* blocks to keep with Gumbel-Softmax
# {cite}`jang2017gumbel`, how a gradient passes through a hard 0/1 mask, and what a shallower
# depth saves in FLOPs and in measured time.
#
# **Needs:** a CPU. It trains nothing; it runs in well under a minute at every profile.

# %%
import pandas as pd
import torch
from IPython.display import Markdown, display

from coop_utils import chapters, engineering, listings, plots
from coop_utils.config import load_config
from coop_utils.evaluate import depth_costs
from coop_utils.gating import BlockGate, add_gate, relaxed_topk, sample_gumbel
from coop_utils.models import (
    ARCHITECTURES,
    SCALING_FACTORS,
    build_model,
    depth_plan,
)

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True
cost_arch = "resnet56"
latency_batch_sizes = [1]
latency_repeats = 5
gumbel_samples = 1000

# %% tags=["remove-input"]
chapter = chapters.start_chapter(
    profile, device, seed, data_root, run_root, results_root, train
)

# %% [markdown]
# ## What a scaling factor keeps
#
# A residual network {cite}`he2016deep` is a stem, stages of residual blocks, and a
# classifier. Stage $j$ has $n_j$ blocks; its first block changes the shape of the features and
# always runs. A scaling factor $s \in (0, 1]$ keeps
#
# $$k_j = \max\bigl(1,\ \operatorname{round}(s \cdot n_j)\bigr)$$
#
# blocks of stage $j$. This is the library's `depth_plan`:

# %%
listings.show_source(depth_plan)

# %% [markdown]
# The paper's backbone, ResNet-152, has bottleneck stages of $[3, 8, 36, 3]$ blocks. Its plan
# at every scaling factor of the grid, in blocks kept per stage:

# %%
stage_sizes = ARCHITECTURES["resnet152"].stage_sizes
plans = {f"s = {s:g}": depth_plan(stage_sizes, s) for s in SCALING_FACTORS}
pd.DataFrame(
    plans,
    index=[f"stage {j + 1} (n = {n})" for j, n in enumerate(stage_sizes)],
)

# %% [markdown]
# Which blocks are kept is a separate question. Without a learned gate, a network keeps the
# first $k_j$ blocks of each stage. The figure draws these plans for the paper's ResNet-152,
# for the network whose cost this chapter measures below (`cost_arch`), and for the backbone
# this build's profile trains (`arch` in `params/<profile>.yaml`).

# %%
roles = {"resnet152": ["the paper's backbone"]}
roles.setdefault(cost_arch, []).append("measured below")
roles.setdefault(load_config(profile).arch, []).append(
    f"trained by the {profile} profile"
)
networks = {
    arch: build_model(arch, num_classes=100, image_size=32) for arch in roles
}
plan_figure = plots.block_plan_figure(
    plots.block_plan_frame(networks),
    "Depth plans: which residual blocks run at each s",
)

# %% tags=["remove-input"]
distinct = {
    arch: len(
        {
            tuple(depth_plan(ARCHITECTURES[arch].stage_sizes, s))
            for s in SCALING_FACTORS
        }
    )
    for arch in roles
}
display(
    Markdown(
        "; ".join(
            f"{arch} ({', '.join(roles[arch])}): stages of "
            f"{list(ARCHITECTURES[arch].stage_sizes)} blocks, {distinct[arch]} distinct plans "
            "over the grid"
            for arch in roles
        )
        + "."
    )
)

# %% [markdown]
# Every stage keeps at least its first block, so even at $s = 0.2$ the network still has one
# block per stage and the features reach the classifier at the right shape.

# %% [markdown]
# ## Which blocks: Gumbel-Softmax top-k
#
# A Teammate learns one logit $\ell_i$ per gateable block. In training, a plan of $s$ keeps the
# $k_j - 1$ gateable blocks of stage $j$ with the largest *perturbed* logits
# $\tilde\ell_i = \ell_i + g_i$, with Gumbel noise
#
# $$g_i = -\log(-\log u_i), \qquad u_i \sim \mathcal{U}(0, 1).$$
#
# Taking the top of Gumbel-perturbed logits samples blocks in proportion to
# $\operatorname{softmax}(\ell)$, without replacement.

# %%
listings.show_source(sample_gumbel)

# %% [markdown]
# The hard top-$k$ has no gradient. Its relaxation {cite}`xie2019reparameterizable` sums $k$
# tempered softmaxes, each damping what the previous one chose:
#
# $$a^{(t)} = \operatorname{softmax}\Bigl(\bigl(\tilde\ell + \textstyle\sum_{t' < t}
# \log(1 - a^{(t')})\bigr) / \tau\Bigr), \qquad m^{\text{soft}} = \sum_{t=1}^{k} a^{(t)}.$$

# %%
listings.show_source(relaxed_topk)

# %% [markdown]
# One draw of noise, keeping $k = 2$ of five blocks. The table gives each block's perturbed
# logit, the hard mask the forward pass uses, and the relaxed mask $m^{\text{soft}}$ at several
# temperatures $\tau$. Each relaxed column sums to $k$. At high $\tau$ it spreads the $k$ picks
# over every block. At low $\tau$ it puts its mass on the blocks the hard mask keeps, but not
# necessarily 1 on each: when two perturbed logits nearly tie, the first softmax splits between
# them and the damping can over-correct, so that one block gets more than 1 and the other less.

# %%
logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
keep = 2
temperatures = (0.1, 0.5, 1.0, 5.0)
noisy = logits + sample_gumbel(
    logits.shape, generator=torch.Generator().manual_seed(seed)
)
hard = torch.zeros_like(noisy).scatter_(0, noisy.topk(keep).indices, 1.0)
relaxed = {tau: relaxed_topk(noisy, keep, tau) for tau in temperatures}
pd.DataFrame(
    {"perturbed logit": noisy.numpy(), "hard mask": hard.numpy()}
    | {f"tau = {tau:g}": mask.numpy() for tau, mask in relaxed.items()},
    index=[f"block {i} (logit {v:g})" for i, v in enumerate(logits.tolist())],
).round(3)

# %% tags=["remove-input"]
kept = hard.bool()
gap = noisy[kept].max() - noisy[kept].min()
distance = {
    tau: float((mask - hard).abs().max()) for tau, mask in relaxed.items()
}
closest = min(distance, key=distance.get)
low, high = min(temperatures), max(temperatures)
display(
    Markdown(
        f"In this draw the kept blocks' perturbed logits are {gap:.3f} apart. On the kept "
        f"blocks the relaxed mask puts {100 * float(relaxed[low][kept].sum()) / keep:.0f} % of "
        f"its mass at τ = {low:g} and "
        f"{100 * float(relaxed[high][kept].sum()) / keep:.0f} % at τ = {high:g}; "
        f"it is closest to the hard mask at τ = {closest:g} (no value off by more than "
        f"{distance[closest]:.3f}), and at τ = {low:g} a value is off by up to "
        f"{distance[low]:.3f}."
    )
)

# %%
gumbel_figure = plots.gumbel_temperature_figure(
    logits.tolist(),
    keep=keep,
    temperatures=list(temperatures),
    samples=gumbel_samples,
    seed=seed,
)

# %% [markdown]
# The temperature does not change which blocks the forward pass keeps (the stars): it changes
# how sharp, and so how biased and how noisy, the gradient's relaxation is.

# %% [markdown]
# ## The straight-through gradient
#
# The forward pass must use the hard mask, so that a skipped block really is skipped; the
# backward pass uses the relaxed one. The straight-through estimator
# {cite}`bengio2013estimating` does both at once:
#
# $$m = m^{\text{hard}} - \operatorname{sg}\bigl(m^{\text{soft}}\bigr) + m^{\text{soft}},$$
#
# where $\operatorname{sg}$ stops the gradient: the value of $m$ is $m^{\text{hard}}$, its
# gradient is that of $m^{\text{soft}}$. A gated block computes $x + m_i F_i(x)$, so
# $\partial \mathcal{L} / \partial m_i = \langle \nabla_{\text{out}} \mathcal{L}, F_i(x) \rangle$,
# which exists for skipped blocks too, but only if $F_i(x)$ is computed, and computing it
# costs what running the block costs. Which blocks a training pass computes is a choice
# (`gate_gradient`):
#
# - `all` runs every block, the dropped ones included, so each logit gets its exact
#   straight-through gradient, and a sub-network at $s = 0.2$ costs a full pass; a dropped
#   block then normalises with its batch's statistics and never updates its running ones;
# - `kept` (the default) runs only the kept blocks, so a sub-network costs what its plan costs.
#   The gradient reaches the kept blocks' $m_i$, and through the relaxed top-k, whose every
#   output depends on every logit of the stage, all the stage's logits.

# %%
listings.show_source(BlockGate.sample)

# %% [markdown]
# A fresh network starts every block as the identity ($F_i(x) = 0$: its last batch-norm scale
# is zero), which would make every gate gradient zero. We give the blocks a non-zero scale, as
# training does, then take one gradient step's worth of gradient through a sampled mask.

# %%
net = build_model("resnet20", num_classes=10, image_size=32)
for block in net.blocks:
    torch.nn.init.ones_(block.residual[-1].weight)
gate = add_gate(net)
mask = gate.sample(
    0.5, tau=1.0, generator=torch.Generator().manual_seed(seed)
)
images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
gradients = {}
for estimator, run_dropped in (("kept", False), ("all", True)):
    gate.logits.grad = None
    logits = net(images, mask=mask, run_dropped=run_dropped)
    torch.nn.functional.cross_entropy(logits, labels).backward(
        retain_graph=True
    )
    gradients[f"gradient of its logit ({estimator})"] = (
        gate.logits.grad.numpy().copy()
    )
pd.DataFrame(
    {
        "block": net.gateable_blocks,
        "mask value (forward)": mask.detach().numpy(),
    }
    | gradients
).set_index("block").T.round(4)

# %% [markdown]
# The mask is exactly 0 or 1 in the forward pass, and under either estimator every logit,
# kept or skipped, gets a gradient; the two gradients differ, since `kept` never sees what a
# skipped block would have added. Which one trains better is measured, not assumed: see the
# estimator pilot in {doc}`../open-decisions`.

# %% [markdown]
# ## What a depth costs
#
# A depth is only worth choosing if a skipped block costs nothing. FLOPs are counted with
# PyTorch's `FlopCounterMode`; latency is the median of timed forward passes after warm-up.
# If skipped blocks are not computed, the ideal is
#
# $$\frac{\text{latency}(s)}{\text{latency}(1)} \approx \frac{\text{FLOPs}(s)}{\text{FLOPs}(1)};$$
#
# how close a measurement comes to it depends on the device and the batch, since a forward
# pass also has costs that do not shrink with the plan. The times below are those the
# depth-cost benchmark recorded on a quiet machine, every depth timed side by side
# (`results/benchmarks/depth_cost.json`, the numbers the summary page judges); only where
# that record lacks `cost_arch` are they measured while this page is built, on a shared
# machine and so more noisily. The label under the table says which.

# %%
listings.show_source(depth_costs)

# %%
cost_net = build_model(cost_arch, num_classes=100, image_size=32)
costs, timed = engineering.depth_costs_shown(
    chapter, cost_net, cost_arch, latency_batch_sizes, latency_repeats
)
display(costs.round(5))
display(Markdown(f"*Latency (seconds per batch) {timed}.*"))

# %%
cost_plot = plots.cost_figure(
    costs, f"Cost of each depth plan relative to full depth ({cost_arch})"
)

# %% tags=["remove-input"]
display(Markdown(engineering.depth_cost_summary(costs, timed)))

# %% [markdown]
# The direct check: count the residual branches that actually run in a forward pass.

# %%
computed = []
hooks = [
    block.residual.register_forward_hook(
        lambda *_, index=index: computed.append(index)
    )
    for index, block in enumerate(cost_net.blocks)
]
rows = []
with torch.no_grad():
    for s in SCALING_FACTORS:
        computed.clear()
        cost_net(torch.zeros(1, 3, 32, 32), s=s)
        rows.append(
            {
                "s": s,
                "plan": len(cost_net.active_blocks(s)),
                "computed": len(computed),
            }
        )
for hook in hooks:
    hook.remove()
branches = pd.DataFrame(rows).set_index("s")
assert (branches["plan"] == branches["computed"]).all()
branches.transpose()

# %% [markdown]
# Every residual branch outside the plan is skipped outright: the network computes exactly the
# blocks of the plan, and nothing else.
