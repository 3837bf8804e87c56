"""Distillation, SFSL weights and the cooperative objective, checked against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from coop_utils.losses import (
    byot_loss,
    cooperative_objective,
    kd_loss,
    leader_loss,
    sfsl_weight,
    subnetwork_loss,
    teammate_loss,
)


def _hand_kd(student, teacher, temperature):
    """T^2 * mean over the batch of sum_c p_c (log p_c - log q_c), written out."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        p = [math.exp(v / temperature) for v in t_row]
        q = [math.exp(v / temperature) for v in s_row]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        total += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q, strict=True))
    return temperature**2 * total / len(student)


def test_kd_loss_matches_hand_computation():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 4, 5, generator=generator)
    for temperature in (1.0, 4.0):
        assert kd_loss(student, teacher, temperature).item() == pytest.approx(
            _hand_kd(student, teacher, temperature), rel=1e-5
        )


def test_kd_loss_is_zero_for_identical_logits_and_detaches_teacher():
    logits = torch.randn(3, 6, requires_grad=True)
    assert kd_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    teacher = torch.randn(3, 6, requires_grad=True)
    kd_loss(logits, teacher, 2.0).backward()
    assert teacher.grad is None
    assert logits.grad is not None


def test_kd_loss_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), 0.0)
    with pytest.raises(ValueError, match="shape"):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 3))


def test_sfsl_weights():
    assert sfsl_weight(0.2) == pytest.approx(5.0)
    assert sfsl_weight(0.5) == pytest.approx(2.0)
    assert sfsl_weight(1.0) == 1.0
    assert sfsl_weight(0.2, sfsl=False) == 1.0
    with pytest.raises(ValueError, match="scaling factor"):
        sfsl_weight(0.0)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(1)
    logits = {name: torch.randn(4, 5, generator=generator) for name in ("L", "A", "B", "a", "b")}
    return logits, torch.tensor([0, 1, 2, 3])


def _terms(batch, temperature=4.0):
    logits, targets = batch
    ce = {name: F.cross_entropy(value, targets) for name, value in logits.items()}
    kd = lambda student, teacher: kd_loss(logits[student], logits[teacher], temperature)  # noqa: E731
    return ce, kd


@pytest.mark.parametrize("use_leader", [True, False])
@pytest.mark.parametrize("mutual", [True, False])
@pytest.mark.parametrize("sfsl", [True, False])
def test_cooperative_objective_equals_hand_assembly(batch, use_leader, mutual, sfsl):
    logits, targets = batch
    ce, kd = _terms(batch)
    w_a, w_b = (1 / 0.3, 1 / 0.7) if sfsl else (1.0, 1.0)
    expected = (
        (ce["L"] if use_leader else 0)
        + ce["A"] + (kd("A", "B") if mutual else 0) + (kd("A", "L") if use_leader else 0)
        + ce["B"] + (kd("B", "A") if mutual else 0) + (kd("B", "L") if use_leader else 0)
        + w_a * (ce["a"] + kd("a", "A"))
        + w_b * (ce["b"] + kd("b", "B"))
    )  # fmt: skip
    total, terms = cooperative_objective(
        [logits["A"], logits["B"]],
        [[(0.3, logits["a"])], [(0.7, logits["b"])]],
        targets,
        leader_logits=logits["L"],
        use_leader=use_leader,
        mutual=mutual,
        sfsl=sfsl,
    )
    assert total.item() == pytest.approx(float(expected), rel=1e-6)
    assert ("leader" in terms) == use_leader
    assert sum(value.item() for value in terms.values()) == pytest.approx(total.item(), rel=1e-6)


def test_each_switch_removes_exactly_its_term(batch):
    logits, targets = batch
    _, kd = _terms(batch)
    args = ([logits["A"], logits["B"]], [[(0.5, logits["a"])], []], targets)

    def total(**switches):
        return cooperative_objective(*args, leader_logits=logits["L"], **switches)[0].item()

    full = total()
    assert full - total(mutual=False) == pytest.approx(
        (kd("A", "B") + kd("B", "A")).item(), rel=1e-5
    )
    assert full - total(sfsl=False) == pytest.approx(
        (1 / 0.5 - 1) * subnetwork_loss(logits["a"], logits["A"], targets, 0.5, sfsl=False).item(),
        rel=1e-5,
    )
    leader_part = leader_loss(logits["L"], targets) + kd("A", "L") + kd("B", "L")
    assert full - total(use_leader=False) == pytest.approx(leader_part.item(), rel=1e-5)


def test_teammate_loss_averages_over_other_teammates(batch):
    logits, targets = batch
    _, kd = _terms(batch)
    loss = teammate_loss(logits["A"], targets, [logits["B"], logits["L"]], use_leader=False)
    expected = F.cross_entropy(logits["A"], targets) + (kd("A", "B") + kd("A", "L")) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_objective_bad_input(batch):
    logits, targets = batch
    with pytest.raises(ValueError, match="Leader"):
        cooperative_objective([logits["A"]], [[]], targets, leader_logits=None)
    with pytest.raises(ValueError, match="sub-networks for 2 Teammates"):
        cooperative_objective([logits["A"]], [[], []], targets, use_leader=False)


def test_byot_loss_equals_the_reference_formula_by_hand():
    """One image, two classes, label 1; a shallow exit and the deepest exit.

    Shallow logits (0, 0): CE = ln 2. Deepest logits (0, 3 ln 3): CE = ln(1 + 3^-3) = ln(28/27).
    At T = 3 the teacher is softmax(0, ln 3) = (1/4, 3/4) and the student softmax(0, 0), so the
    soft-target cross-entropy is ln 2, times T^2 = 9. Features (1, -1, 2) against (0, 0, 1):
    the middle one is counted nowhere (neither is > 0), the others give 1 + 1 = 2.
    """
    shallow = torch.tensor([[0.0, 0.0]], requires_grad=True)
    deepest = torch.tensor([[0.0, 3 * math.log(3)]], requires_grad=True)
    features = [torch.tensor([[1.0, -1.0, 2.0]]), torch.tensor([[0.0, 0.0, 1.0]])]
    labels = torch.tensor([1])
    total, terms = byot_loss([shallow, deepest], features, labels)
    ce = math.log(2) + math.log(28 / 27)
    expected = 0.9 * ce + 0.1 * 9 * math.log(2) + 1e-6 * 2
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert terms["exit0_kd"].item() == pytest.approx(0.9 * math.log(2), rel=1e-6)
    assert terms["exit0_feature"].item() == pytest.approx(2e-6, rel=1e-6)
    # the feature loss sums over the batch, the cross-entropies and KD average over it
    doubled, terms2 = byot_loss(
        [shallow.repeat(2, 1), deepest.repeat(2, 1)],
        [f.repeat(2, 1) for f in features],
        labels.repeat(2),
    )
    assert terms2["exit0_feature"].item() == pytest.approx(4e-6, rel=1e-6)
    assert doubled.item() == pytest.approx(expected + 2e-6, rel=1e-6)
    # the deepest exit teaches but is not taught: its gradient comes from its CE alone
    total.backward()
    p = torch.softmax(deepest.detach(), -1)
    torch.testing.assert_close(deepest.grad, 0.9 * (p - torch.tensor([[0.0, 1.0]])))


def test_byot_loss_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        byot_loss([torch.zeros(1, 2)], [torch.zeros(1, 3)], torch.tensor([0]))
