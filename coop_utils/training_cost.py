"""What training cost: the computational requirements of every recorded run
(:func:`compute_table`), how much more a cooperative run trains than the baselines it is
compared with (:func:`training_compute_note`, :func:`flops_ratios`), and the rule that chose
the converged regime's learning budget (:func:`learning_budget`, chapter 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from coop_utils import chapters, engineering, result_plots, results
from coop_utils.chapters import CAMPAIGN_PROFILE

# --- computational requirements ---------------------------------------------------------------


#: the folders of ``results/`` as the computational requirements name them
FOLDERS = {
    "preview": "short regime (the campaign)",
    "compute-matched": "short regime, control at equal compute",
    "converged": "converged regime",
    "pilot": "pilots (read on validation data)",
}


def compute_table(frame: pd.DataFrame) -> pd.DataFrame:
    """What every recorded run cost, by folder of ``results/`` and run: epochs, seeds, hours of
    training (wall time) in all and per trained seed, and training PFLOPs (the recorded
    ``training_flops``) in all and per trained seed, and the hardware; a re-evaluation of
    another run's networks (the ``shared-bn`` ablation) trains nothing and counts none."""
    evaluated = results.evaluation_only(frame)
    rows = []
    for (root, name), runs in results.summaries(frame).groupby(["root", "run"], sort=False):
        trained = runs[~runs["path"].map(evaluated)]
        hours, flops = trained["wall_time_s"].sum() / 3600, trained["training_flops"].sum() / 1e15
        rows.append(
            {
                "results": FOLDERS.get(root, root),
                "run": name,
                "epochs": results.span(sorted({int(e) for e in runs["epochs"]})),
                "seeds": len(runs),
                "training (h)": hours,
                "per seed (h)": hours / len(trained) if len(trained) else 0.0,
                "training PFLOPs": flops,
                "PFLOPs per seed": flops / len(trained) if len(trained) else 0.0,
                "hardware": ", ".join(sorted({str(d or "unknown") for d in runs["device"]})),
            }
        )
    return pd.DataFrame(rows).set_index(["results", "run"])


# --- the learning budget (chapter 5) ----------------------------------------------------------


#: the rule that chose the converged budget E_c (``params/preview.yaml``, ``budget-pilot``):
#: the smallest budget at which doubling the epochs gains less than ``BUDGET_GAIN_PTS``
#: validation points for the plain network, unless a cooperative run at it would take more than
#: ``QUIET_HOURS`` on a quiet machine of the kind that records the campaign: then the largest
#: budget that fits
BUDGET_GAIN_PTS = 1.5
QUIET_HOURS = 2.0


def learning_budget(
    validation: Mapping[int, float], budgets: Sequence[int], epoch_seconds: float
) -> tuple[int | None, str]:
    """E_c by the rule from the plain network's validation top-1 at each recorded budget, the
    pilot's ``budgets`` (recorded or not) and a cooperative epoch's seconds on a quiet
    machine: ``(E_c, why)``, or ``(None, what is missing)`` while the recorded budgets cannot
    decide it."""
    budgets = sorted(budgets)
    fits = [b for b in budgets if b * epoch_seconds <= QUIET_HOURS * 3600]
    if not fits:
        return None, f"no budget of the pilot fits {QUIET_HOURS:g} h"
    for budget in fits:
        gain = validation.get(2 * budget, math.nan) - validation.get(budget, math.nan)
        if gain < BUDGET_GAIN_PTS:
            return budget, (
                f"doubling {budget} to {2 * budget} epochs gains {gain:+.1f} points, less than "
                f"{BUDGET_GAIN_PTS:g}"
            )
        if budget == fits[-1] and budget != budgets[-1]:
            over = budgets[budgets.index(budget) + 1]
            return budget, (
                f"every doubling up to {budget} epochs gained at least {BUDGET_GAIN_PTS:g} points, "
                f"and {budget} is the largest budget whose cooperative run fits in "
                f"{QUIET_HOURS:g} h ({budget * epoch_seconds / 3600:.1f} h; {over} epochs: "
                f"{over * epoch_seconds / 3600:.1f} h)"
            )
        if gain != gain:  # not recorded
            missing = next(b for b in (budget, 2 * budget) if b not in validation)
            return None, f"the pilot's {missing}-epoch run is not recorded yet"
    return fits[-1], f"the largest budget of the pilot, {fits[-1]} epochs"


def learning_budget_points(frame: pd.DataFrame, profile: str = CAMPAIGN_PROFILE) -> pd.DataFrame:
    """Validation top-1 at full depth against epochs: the budget pilot's plain network at each
    recorded budget, and the deployed Teammate of each cooperative run at a budget (seed 0 of
    the short and the converged campaigns, and any cooperative run of the pilot)."""
    pilot = results.budget_rows(frame, profile)
    ours = frame[(frame["run"] == "cooperative") & (frame["seed"] == 0)]
    ours = ours[(ours["root"] == ours["profile"]) | (ours["root"] == "converged")]
    ours = ours[ours["profile"] == profile]
    points = []
    for rows, source in ((pilot, "pilot"), (ours, "campaign")):
        for _, summary in results.shown_rows(rows).groupby("path", sort=False):
            row = summary.loc[summary["flops"].idxmax()]
            plain = row["method"] == "independent"
            label = (
                "full-depth network alone (budget pilot, seed 0)"
                if plain
                else f"{result_plots.COOPERATIVE_LABEL} (seed 0)"
            )
            colour = result_plots.ALONE[1] if plain else result_plots.method_colour("cooperative")
            points.append(
                (label, int(row["epochs"]), float(row["val_top1"]), source, plain, colour)
            )
    columns = ["label", "epochs", "val_top1", "source", "pilot", "colour"]
    return pd.DataFrame(points, columns=columns)


def doubling_gain(
    frame: pd.DataFrame, epochs: int, profile: str = CAMPAIGN_PROFILE
) -> float | None:
    """What doubling ``epochs`` gains the budget pilot's plain network in validation top-1 at
    full depth (points), or ``None`` while either budget is not recorded."""
    budget = learning_budget_points(frame, profile)
    plain = budget[budget["pilot"].astype(bool)].set_index("epochs")["val_top1"]
    if epochs not in plain.index or 2 * epochs not in plain.index:
        return None
    return float(plain[2 * epochs] - plain[epochs])


def show_learning_budget(recorded: results.Results, dataset: str) -> None:
    """Chapter 5's learning budget: the rule, the plain network's gain from each doubling of
    its epochs, E_c as the rule decides it from the recorded files and the quiet-machine step
    benchmark, and the figure of validation top-1 against epochs."""
    budget = learning_budget_points(recorded.frame)
    plain = budget[budget["label"].str.startswith("full-depth")].set_index("epochs")["val_top1"]
    planned = [
        int(c.epochs) for c in results.planned_configs(CAMPAIGN_PROFILE, results.BUDGET_CAMPAIGN)
    ]
    converged = [int(c.epochs) for c in results.planned_configs(CAMPAIGN_PROFILE, "converged")[:1]]
    step_record = engineering.benchmark_records(recorded).get("train_step")
    ours = results.campaign_rows(recorded.frame, CAMPAIGN_PROFILE, dataset).query(
        "file == 'cooperative'"
    )
    logs = recorded.logs_of(ours)
    if budget.empty:
        chapters.show("**No run of the budget pilot is recorded yet.**")
        return
    if step_record is None or not logs:
        chapters.show("**No quiet-machine step benchmark or cooperative log to time an epoch.**")
        return
    step_ms = results.step_costs(step_record)["ours"]
    steps = int(next(iter(logs.values()))[0]["global_step"])  # one epoch's steps
    epoch_s = step_ms * steps / 1000
    chosen, why = learning_budget(plain.to_dict(), planned, epoch_s)
    gains = [
        f"{e} → {2 * e} epochs: {plain[2 * e] - plain[e]:+.1f} points "
        f"({plain[e]:.1f} → {plain[2 * e]:.1f} %)"
        if 2 * e in plain.index
        else f"{e} → {2 * e} epochs: not recorded yet"
        for e in planned
        if e in plain.index and 2 * e in planned
    ]
    hours = ", ".join(f"{e} epochs take {e * epoch_s / 3600:.1f} h" for e in planned)
    decided = f"{chosen} epochs: {why}." if chosen else f"not yet decided: {why}."
    text = (
        "**The rule.** E_c is the smallest budget at which doubling the epochs gains less than "
        f"{BUDGET_GAIN_PTS:g} validation points for the plain network; if a cooperative run at "
        f"that budget would take more than {QUIET_HOURS:g} h on a quiet machine of the kind "
        "that records the campaign, the largest budget that fits. There a cooperative epoch "
        f"takes about {epoch_s:.0f} s (the `train_step` benchmark's {step_ms:.0f} ms a step, "
        f"timed on a quiet {step_record['device']}, × the {steps} steps of an epoch; "
        f"evaluation and data loading come on top), so {hours}.\n\n"
        "**The plain network's gains** (validation top-1 at full depth, seed 0):\n"
        + "\n".join(f"- {gain}" for gain in gains)
        + f"\n\n**E_c by the rule:** {decided}"
        + (f" The converged campaign trains {converged[0]} epochs." if converged else "")
    )
    figure = result_plots.learning_budget_figure(
        budget,
        chosen,
        converged[0] if converged else None,
        f"Validation top-1 at full depth against the training budget ({dataset}, seed 0)",
    )
    chapters.show(text, figure)


# --- training compute -------------------------------------------------------------------------


#: the baselines whose training compute is set beside the cooperative run's
BASELINES = {
    "independent": "the independent networks of every depth",
    "byot": "BYOT",
    "branchynet": "BranchyNet",
}


def flops_per_seed(frame: pd.DataFrame) -> pd.Series:
    """Each run of ``frame`` (one regime: its names are unique across its folders) by its
    training PFLOPs per trained seed (:func:`compute_table`; 0 where none is recorded)."""
    return compute_table(frame).droplevel("results")["PFLOPs per seed"]


def flops_multiples(frame: pd.DataFrame) -> list[float]:
    """How many times each recorded baseline's training FLOPs per seed (:data:`BASELINES`) a
    cooperative run of ``frame`` (one regime) trains with, sorted; none where either is not
    recorded."""
    flops = flops_per_seed(frame)
    if flops.get("cooperative", 0.0) <= 0:
        return []
    return sorted(
        flops["cooperative"] / flops[name]
        for name in BASELINES
        if name in flops.index and flops[name] > 0
    )


def training_compute_note(frame: pd.DataFrame, step_record: Mapping[str, Any] | None = None) -> str:
    """Markdown: how much more training compute a cooperative run of a results frame (one
    dataset) takes than each recorded baseline, by the recorded training FLOPs per seed, or ""
    without both: the claims compare methods at equal epochs, not at equal training compute.
    ``step_record`` (the ``train_step`` benchmark's record), when given, says what a step
    costs, timed side by side. Controls trained for a cooperative run's compute follow, each
    with its FLOPs ratio and its full-depth top-1 beside the deployed Teammate's."""
    flops = flops_per_seed(frame)
    if "cooperative" not in flops.index or not set(BASELINES) & set(flops.index):
        return ""
    ours = flops["cooperative"]
    ratios = [
        f"{ours / flops[name]:.1f}× the {flops[name]:.2g} of {text}"
        if ours > 0 and flops[name] > 0
        else f"training FLOPs not recorded for {text}"
        for name, text in BASELINES.items()
        if name in flops.index
    ]
    runs = results.summaries(frame)
    controls = [name for name in flops.index if name.endswith(results.CONTROL_SUFFIXES)]
    campaign_runs = runs[~runs["run"].isin(controls)]
    epochs = sorted({config.get("epochs") for config in campaign_runs["config"]} - {None})
    spent = (
        f"trains with {ours:.2g} PFLOPs per seed (its recorded training FLOPs): "
        if ours > 0
        else "has no recorded training FLOPs: "
    )
    text = (
        f"**Training compute is not matched.** Every method trains for the same "
        f"{', '.join(map(str, epochs))} epochs, and the claims compare them at equal "
        f"inference cost. A cooperative run (two Teammates with their sub-networks, and a "
        f"Leader) {spent}{chapters.listed(ratios)}.{_step_cost(step_record)} On a schedule this "
        "short every network is still learning, so part of the cooperative method's lead over "
        "the baselines may be that extra compute rather than the method. The requirements "
        "table at the foot of the page gives every run's wall time."
    )
    if not controls:
        return text
    full = results.campaign_table(results.shown_rows(frame), decimals={})
    full, described = full["top-1 at full depth (%)"], []
    for name in controls:
        ratios_ = [f"{r:.2f}" for r in flops_ratios(frame, name)]
        spent_ = f"training FLOPs {results.span(ratios_)}× the cooperative run's" if ratios_ else ""
        epochs_ = results.span(sorted(_epochs(runs, name)))
        described.append(
            f"{CONTROLLED.get(name.split('-')[0], name)} for {epochs_} epochs"
            + (f" ({spent_})" if spent_ else "")
            + f": at full depth they reach {full[name]:.1f} %, against "
            f"{full['cooperative']:.1f} % for the deployed Teammate"
        )
    exits = any(not name.startswith("independent") for name in controls)
    return (
        f"{text} The verdict's claims at equal training compute set the cooperative run beside "
        f"controls trained for as much compute: {'; '.join(described)} (means over seeds)"
        f"{'' if exits else '; the exit baselines have no such control here'}."
    )


#: the controls at equal training compute, as a sentence names them
CONTROLLED = {"independent": "the independent networks", "byot": "BYOT", "branchynet": "BranchyNet"}


def _epochs(runs: pd.DataFrame, name: str) -> set[int]:
    return {int(config["epochs"]) for config in runs.loc[runs["run"] == name, "config"]}


def flops_ratios(frame: pd.DataFrame, name: str, reference: str = "cooperative") -> list[float]:
    """The recorded training FLOPs of each seed of run ``name`` over those of the seed of
    ``reference`` it shares, sorted (none where either is not recorded)."""
    runs = results.summaries(frame).set_index(["run", "seed"])["training_flops"]
    found = [
        float(runs[name, seed] / runs[reference, seed])
        for run, seed in runs.index
        if run == name and (reference, seed) in runs.index
    ]
    return sorted(r for r in found if np.isfinite(r))


def _step_cost(record: Mapping[str, Any] | None) -> str:
    """What the ``train_step`` benchmark measured (:func:`results.step_costs`), in a sentence."""
    if not record:
        return ""
    cost = results.step_costs(record)
    ours, single, theirs = cost["ours"], cost["single"], cost["theirs"]
    independent = ""
    if theirs is not None:
        independent = (
            f" and {ours / theirs:.1f}× a step of each of the {cost['plans']} independent "
            f"networks ({theirs:.0f} ms, estimated by the Teammates' passes at each plan)"
        )
    return (
        f" Timed side by side (the `train_step` benchmark, {record['results']['arch']}, "
        f"batch {record['results']['batch_size']}, {record['device']}), a cooperative step "
        f"takes {ours:.0f} ms: {ours / single:.1f}× one full-depth network's step "
        f"({single:.0f} ms){independent}."
    )


def show_requirements(recorded: results.Results) -> None:
    """Every recorded run's cost (:func:`compute_table`), under one line of totals: result
    files, hours of training, PFLOPs and the hardware."""
    if recorded.frame.empty:
        return
    needs = compute_table(recorded.frame)
    files = results.summaries(recorded.frame)
    devices = sorted({str(device or "unknown hardware") for device in files["device"]})
    hours, flops = needs["training (h)"].sum(), needs["training PFLOPs"].sum()
    chapters.show(
        f"**{len(files)} result files, {hours:.0f} hours of training and "
        f"{flops:.1f} PFLOPs in all, on {', '.join(devices)}**; no GPU.",
        chapters.dashes(
            needs.drop(columns="training PFLOPs"),
            {"training (h)": 1, "per seed (h)": 2, "PFLOPs per seed": 3},
        ),
    )
