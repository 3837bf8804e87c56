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
# # Engineering checks
#
# Four benchmarks check that the code is as fast as the method allows. They replicate nothing
# of the paper: they test this implementation, each measuring its ratios side by side in one
# run on a quiet machine (nothing else training). Whether a shallow plan really costs less
# time, not only fewer FLOPs; what a cooperative training step costs against its passes timed
# alone; how fast the data pipeline feeds training against torchvision's; and whether a
# shipped depth runs as fast as the network that chooses it. Each has targets, and under each
# target this page says whether a miss matters to someone who uses the code. The records live
# in `results/benchmarks/`; `make benchmarks` measures them again on your machine.
#
# **Needs:** nothing: it reads the records.

# %%
from IPython.display import Markdown, display

from coop_utils import chapters, engineering

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True

# %% tags=["remove-input"]
chapter = chapters.start_chapter(
    profile, device, seed, data_root, run_root, results_root, train
)
records = engineering.benchmark_records(chapter.results)
missing = [name for name in engineering.BENCHMARKS if name not in records]
if missing:
    display(Markdown(engineering.missing_benchmarks(missing)))

# %% [markdown]
# ## Does a shallower plan save time?
#
# The depth-cost benchmark times every plan of three backbones, the scaling factors
# interleaved round by round so that drift in the machine's speed hits every depth alike. For
# each factor, latency and FLOPs relative to full depth: a point on the diagonal saves as much
# time as FLOPs; a point above it loses part of the saving to costs every depth pays (the
# stem, the head, per-layer dispatch), most at batch 1. The summary page's claim "depth cuts
# the cost" reads this record.

# %%
if "depth_cost" in records:
    engineering.show_depth_cost(records["depth_cost"])

# %% [markdown]
# ## The cooperative step against its parts
#
# One cooperative training step runs the Leader, the two Teammates and four sub-networks. The
# train-step benchmark times the whole step and each of its passes alone: the step should
# cost little more than the sum of its parts.

# %%
if "train_step" in records:
    engineering.show_train_step(records["train_step"])

# %% [markdown]
# ## Data throughput against torchvision
#
# The data pipeline decodes Tiny ImageNet once into a cache and feeds batches from memory;
# the benchmark times it against torchvision's `ImageFolder` and `DataLoader` on the same
# images.

# %%
if "data_throughput" in records:
    engineering.show_data_throughput(
        records["data_throughput"], records.get("train_step")
    )

# %% [markdown]
# ## A shipped depth against the gated network
#
# The export-latency benchmark times each exported form of a plan (the plain network in
# eager PyTorch, TorchScript, ONNX Runtime) beside the gated network at that plan,
# interleaved, at batch 1 and 64; the ratio is the median of the per-round ratios.

# %%
if "export_latency" in records:
    engineering.show_export_latency(records["export_latency"])
