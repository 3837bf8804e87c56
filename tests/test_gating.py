"""Gumbel top-k gates: exact k per stage, straight-through gradients, nested inference plans."""

import pytest
import torch

from coop_utils.gating import BlockGate, add_gate, relaxed_topk
from coop_utils.models import SCALING_FACTORS, build_model, depth_plan


def _per_stage_sums(mask, stage_sizes):
    sums, start = [], 0
    for size in stage_sizes:
        sums.append(int(mask[start : start + size - 1].sum()))
        start += size - 1
    return sums


@pytest.mark.parametrize("s", SCALING_FACTORS)
def test_gumbel_sample_keeps_exactly_k_per_stage(s):
    gate = BlockGate((3, 8, 36, 3))
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        mask = gate.sample(s, tau=0.5, generator=generator)
        assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}
        expected = [keep - 1 for keep in depth_plan((3, 8, 36, 3), s)]
        assert _per_stage_sums(mask.detach(), (3, 8, 36, 3)) == expected


def test_samples_vary_with_noise_and_follow_logits():
    gate = BlockGate((9,))
    generator = torch.Generator().manual_seed(0)
    masks = {tuple(gate.sample(0.5, generator=generator).tolist()) for _ in range(20)}
    assert len(masks) > 1  # zero logits: the noise decides
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([0, 0, 0, 0, 10, 10, 10, 10.0]))
    mask = gate.sample(0.5, tau=1.0, generator=generator)
    assert mask.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_straight_through_gradient_reaches_gate_logits():
    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=10, image_size=32)
    for block in net.blocks:  # non-zero residual branches, so every gate matters
        torch.nn.init.normal_(block.residual[-1].weight)
    gate = add_gate(net)
    mask = gate.sample(0.5, tau=1.0, generator=torch.Generator().manual_seed(0))
    loss = torch.nn.functional.cross_entropy(
        net(torch.randn(4, 3, 32, 32), mask=mask), torch.tensor([0, 1, 2, 3])
    )
    loss.backward()
    assert gate.logits.grad is not None
    assert torch.count_nonzero(gate.logits.grad) == net.num_gateable
    assert "gate.logits" in net.state_dict()


def test_relaxed_topk_sums_to_k_and_sharpens_with_temperature():
    scores = torch.tensor([3.0, 1.0, 0.5, -1.0])
    for k in (1, 2, 3):
        assert relaxed_topk(scores, k, tau=1.0).sum().item() == pytest.approx(k, abs=1e-4)
    cold = relaxed_topk(scores, 2, tau=0.05)
    torch.testing.assert_close(cold, torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-3, rtol=0)


def test_inference_plans_are_nested_and_follow_logits():
    net = build_model("resnet56", num_classes=10, image_size=32)
    gate = add_gate(net)
    with torch.no_grad():
        gate.logits.copy_(torch.randn(net.num_gateable, generator=torch.Generator().manual_seed(3)))
    previous: set[int] = set()
    for s in SCALING_FACTORS:
        active = set(net.active_blocks(s))
        assert previous <= active
        previous = active
    # at s=0.2 each 9-block stage keeps its first block and the gateable block with top logit
    top = [int(gate.logits[stage * 8 : stage * 8 + 8].argmax()) for stage in range(3)]
    expected = sorted([0, 9, 18] + [stage * 9 + 1 + top[stage] for stage in range(3)])
    assert net.active_blocks(0.2) == expected


def test_untrained_and_first_gates_keep_the_first_blocks():
    plain = build_model("resnet56", num_classes=10, image_size=32)
    for mode in ("gumbel", "first"):
        net = build_model("resnet56", num_classes=10, image_size=32)
        add_gate(net, mode=mode)
        for s in SCALING_FACTORS:
            assert net.active_blocks(s) == plain.active_blocks(s)
    first = BlockGate((9, 9, 9), mode="first")
    assert not first.logits.requires_grad
    assert not first.sample(0.5).requires_grad


def test_bad_gate_arguments_raise():
    with pytest.raises(ValueError, match="gumbel, first"):
        BlockGate((3, 3), mode="random")
    with pytest.raises(ValueError, match="tau"):
        BlockGate((3, 3)).sample(0.5, tau=0.0)
    with pytest.raises(ValueError, match="scaling factor"):
        BlockGate((3, 3)).sample(1.5)


def test_no_seeded_draw_of_a_training_step_names_a_device(monkeypatch):
    """Every seeded draw happens on its generator's device (the CPU) and is moved afterwards:
    ``torch.rand(..., generator=<CPU>, device="cuda")`` raises on a GPU, and drawing on the CPU
    makes a CPU run and a GPU run of one seed draw the same numbers. On this CPU-only machine the
    check is that no draw given a generator names a device at all: a CPU run cannot tell
    ``device="cpu"`` from the device of the network that a GPU run would name."""
    from coop_utils.config import load_config
    from coop_utils.systems import StepRandomness, build_system

    seen = []

    def checked(draw):
        def wrapper(*args, generator=None, device=None, **kwargs):
            if generator is not None:
                seen.append(draw.__name__)
                assert device is None, f"torch.{draw.__name__}(generator=..., device={device})"
            return draw(*args, generator=generator, device=device, **kwargs)

        return wrapper

    for name in ("rand", "randn", "randint", "randperm", "rand_like", "bernoulli"):
        monkeypatch.setattr(torch, name, checked(getattr(torch, name)))
    config = load_config("smoke", gate_gradient="all")
    system = build_system(config, num_classes=10, image_size=32)
    randomness = StepRandomness(torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    system.start_epoch(randomness)
    system.backward_step(torch.randn(4, 3, 32, 32), torch.arange(4), randomness)
    assert "rand" in seen and "randperm" in seen  # the Gumbel noise and the drawn factors
