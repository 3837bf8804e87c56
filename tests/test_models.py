"""Skippable residual networks: shapes, depth plans, and skipped blocks never running."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from coop_utils.config import load_config
from coop_utils.gating import add_gate
from coop_utils.models import (
    ARCHITECTURES,
    SCALING_FACTORS,
    EarlyExitNetwork,
    build_model,
    depth_plan,
)
from coop_utils.systems import build_system

FAMILIES = ["resnet20", "resnet18", "resnet50"]  # basic 3-stage, basic 4-stage, bottleneck


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return build_model("resnet20", num_classes=10, image_size=32).eval()


@pytest.mark.parametrize("arch", FAMILIES)
def test_output_shape_at_every_scaling_factor(arch):
    net = build_model(arch, num_classes=7, image_size=16).eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for s in SCALING_FACTORS:
            assert net(images, s=s).shape == (2, 7)
        assert net(images).shape == (2, 7)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_active_blocks_follow_depth_plan_and_are_nested(arch):
    net = build_model(arch, num_classes=10, image_size=32)
    previous: set[int] = set()
    for s in SCALING_FACTORS:
        active = net.active_blocks(s)
        plan = depth_plan(net.stage_sizes, s)
        per_stage = [
            sum(net.stage_of_block[i] == stage for i in active) for stage in range(len(plan))
        ]
        assert per_stage == list(plan)
        # the first block of every stage always runs
        starts = [sum(net.stage_sizes[:j]) for j in range(len(net.stage_sizes))]
        assert set(starts) <= set(active)
        assert previous <= set(active)
        previous = set(active)
    assert net.active_blocks(1.0) == list(range(net.num_blocks))


def test_depth_plan_rounds_half_up_and_keeps_one_block():
    assert depth_plan((3, 8, 36, 3), 0.2) == (1, 2, 7, 1)
    assert depth_plan((5, 5, 5), 0.7) == (4, 4, 4)  # 3.5 rounds up despite 0.7 * 5 = 3.4999...
    assert depth_plan((2, 2), 0.1) == (1, 1)
    assert depth_plan((9, 9, 9), 1.0) == (9, 9, 9)


def test_skipped_block_is_never_called_at_inference(resnet20):
    calls = []
    hooks = [
        block.residual.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
        for i, block in enumerate(resnet20.blocks)
    ]
    try:
        with torch.no_grad():
            resnet20(torch.randn(1, 3, 32, 32), s=0.2)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == resnet20.active_blocks(0.2)
    assert len(calls) < resnet20.num_blocks


def test_hard_mask_without_gradient_skips_blocks_and_matches_s(resnet20):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        by_scaling_factor = resnet20(images, s=0.5)
        by_mask = resnet20(images, mask=resnet20.inference_mask(0.5))
    torch.testing.assert_close(by_scaling_factor, by_mask)


def test_skipped_block_equals_identity():
    """A block with m = 0 passes its input through: the plan is the same network with blocks cut."""
    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=10, image_size=32).eval()
    for block in net.blocks:
        torch.nn.init.normal_(block.residual[-1].weight)  # make every residual branch non-zero
    images = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(net.num_gateable, requires_grad=True)
    skipped = net(images, mask=mask)  # computed then scaled by zero, since it needs a gradient
    with torch.no_grad():
        cut = net(images, s=0.1)  # only the first block of each stage runs
    torch.testing.assert_close(skipped.detach(), cut)
    assert not torch.allclose(cut, net(images).detach())


@pytest.mark.parametrize("bad_s", [0, 0.0, -0.5, 1.01, 2, float("nan"), "0.5", 0.5j, True, [0.5]])
def test_bad_scaling_factor_raises_before_computing(resnet20, bad_s):
    with pytest.raises(ValueError, match="scaling factor"):
        resnet20(torch.randn(1, 3, 32, 32), s=bad_s)
    with pytest.raises(ValueError, match="scaling factor"):
        resnet20.active_blocks(bad_s)


def test_unknown_architecture_lists_known():
    with pytest.raises(ValueError, match="resnet56.*resnet152|resnet152.*resnet56"):
        build_model("resnet7", num_classes=10, image_size=32)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((3, 32, 32), "shape"), ((1, 1, 32, 32), "3 input channels"), ((1, 3, 64, 64), "32x32")],
)
def test_bad_input_raises(resnet20, shape, match):
    with pytest.raises(ValueError, match=match):
        resnet20(torch.randn(*shape))


def test_bad_mask_length_raises(resnet20):
    with pytest.raises(ValueError, match=f"mask of shape \\({resnet20.num_gateable},\\)"):
        resnet20(torch.randn(1, 3, 32, 32), mask=torch.ones(resnet20.num_gateable + 1))
    with pytest.raises(ValueError, match="not both"):
        resnet20(torch.randn(1, 3, 32, 32), s=0.5, mask=torch.ones(resnet20.num_gateable))


@pytest.mark.parametrize(("num_classes", "image_size"), [(1, 32), (10, 4), (10, 32.0)])
def test_bad_build_arguments_raise(num_classes, image_size):
    with pytest.raises(ValueError):
        build_model("resnet18", num_classes=num_classes, image_size=image_size)


def test_early_exit_network_runs_only_the_prefix_of_its_exit():
    backbone = build_model("resnet20", num_classes=10, image_size=32)
    net = EarlyExitNetwork(backbone, exit_blocks=backbone.stage_last_blocks[:-1]).eval()
    assert net.exit_blocks == [2, 5, 8]
    assert net.exit_depths == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert net.exit_for(0.5) == 0 and net.exit_for(2 / 3) == 1 and net.exit_for(1.0) == 2
    calls = []
    hooks = [
        block.residual.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
        for i, block in enumerate(backbone.blocks)
    ]
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = net(images, s=0.5)
    for hook in hooks:
        hook.remove()
    assert calls == [0, 1, 2] and logits.shape == (2, 10)
    all_logits, pooled = net.forward_exits(images)
    assert len(all_logits) == 3 and all(p.shape == (2, backbone.feature_channels) for p in pooled)
    torch.testing.assert_close(all_logits[0], logits)
    torch.testing.assert_close(all_logits[-1], backbone(images))  # the last exit is the backbone
    with pytest.raises(ValueError, match="shallowest exit runs 33% of the blocks"):
        net(images, s=0.2)


def _varied_batchnorm(net):
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            module.running_mean.uniform_(-0.1, 0.1)
    return net


@pytest.mark.parametrize("run_dropped", [False, True])
def test_blocks_a_mask_drops_never_update_running_statistics(run_dropped):
    """Whether a dropped block is skipped (``kept``) or run for its gate's gradient (``all``),
    its batch norms keep their running statistics; the kept blocks update theirs."""
    from coop_utils.gating import add_gate

    torch.manual_seed(0)
    net = _varied_batchnorm(build_model("resnet20", 10, 32))
    add_gate(net)
    net.train()
    before = {name: b.clone() for name, b in net.named_buffers() if "running_mean" in name}
    mask = net.gate.sample(0.5, generator=torch.Generator().manual_seed(0))  # 1 of 2 per stage
    net(torch.randn(4, 3, 32, 32), mask=mask, run_dropped=run_dropped).sum().backward()
    for position, block in enumerate(net.gateable_blocks):
        name = f"blocks.{block}.residual.1.running_mean"
        moved = not torch.equal(net.get_buffer(name), before[name])
        assert moved == bool(mask[position] == 1), (name, mask.tolist())
    assert bool(net.gate.logits.grad.abs().sum() > 0)


def test_the_kept_estimator_reaches_every_logit_of_a_stage_through_the_relaxed_topk():
    from coop_utils.gating import add_gate

    torch.manual_seed(0)
    net = _varied_batchnorm(build_model("resnet32", 10, 32))
    add_gate(net)
    mask = net.gate.sample(0.6, generator=torch.Generator().manual_seed(0))  # 2 of 4 per stage
    net(torch.randn(4, 3, 32, 32), mask=mask).sum().backward()
    assert bool((net.gate.logits.grad != 0).all())


def test_per_depth_statistics_are_used_per_plan_and_survive_a_state_dict_round_trip():
    from coop_utils.models import calibrate_batchnorm

    torch.manual_seed(0)
    net = _varied_batchnorm(build_model("resnet20", 10, 32))
    batches = [torch.randn(8, 3, 32, 32) + 1 for _ in range(2)]
    images = torch.randn(4, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        shared = [net(images, s=s) for s in (0.2, 1.0)]
    shared_mean = net.stem[1].running_mean.clone()
    plans = calibrate_batchnorm(net, batches)
    assert len(plans) == 3 and net.has_plan_stats
    with torch.no_grad():
        calibrated = [net(images, s=s) for s in (0.2, 1.0)]
        assert not torch.allclose(calibrated[0], shared[0])
        # the plan's statistics: the plain average of its batch statistics on those batches
        expected = torch.stack([net.stem[0](b).mean((0, 2, 3)) for b in batches]).mean(0)
    torch.testing.assert_close(net.stem[1].plan_mean[0], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(net.stem[1].running_mean, shared_mean)  # the shared ones are kept
    fresh = build_model("resnet20", 10, 32).eval()
    fresh.load_state_dict(net.state_dict())
    with torch.no_grad():
        for s, output in zip((0.2, 1.0), calibrated, strict=True):
            torch.testing.assert_close(fresh(images, s=s), output)
    fresh.set_plan_stats([], [])
    with torch.no_grad():
        torch.testing.assert_close(fresh(images, s=0.2), shared[0])


def test_logits_are_fp32_under_bf16_autocast_so_near_ties_rank_correctly():
    net = build_model("resnet20", 3, 32).eval()
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.copy_(torch.tensor([10.0, 10.01, 0.0]))  # one bf16 value, two fp32 values
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(torch.randn(2, 3, 32, 32))
    assert logits.dtype == torch.float32
    assert logits.argmax(1).tolist() == [1, 1]


@pytest.mark.parametrize(("arch", "exits"), [("resnet20", 3), ("resnet18", 4)])
def test_byot_exits_are_bottlenecks_that_reach_the_final_stage_shape(arch, exits):
    backbone = build_model(arch, num_classes=10, image_size=32)
    net = EarlyExitNetwork(backbone, backbone.stage_last_blocks[:-1], bottleneck=True).eval()
    assert len(net.exit_blocks) == exits  # one exit per stage
    with torch.no_grad():
        taps = backbone.forward_features(torch.randn(2, 3, 32, 32), taps=net.exit_blocks)
        final = taps[-1]
        for head, features in zip(net.heads, taps[:-1], strict=True):
            convs = [m for m in head.project if isinstance(m, torch.nn.Conv2d)]
            width = final.shape[1]
            assert [c.out_channels for c in convs] == [width // 4, width // 4, width]
            assert head.project[:-2](features).shape == final.shape  # before pooling


def test_branchynet_exits_follow_the_scaling_factors():
    assert EarlyExitNetwork.blocks_at(9, (0.2, 0.3, 0.5, 0.6, 1.0)) == [1, 2, 4, 8]


@pytest.mark.parametrize("method", ["byot", "branchynet"])
def test_exit_logits_are_fp32_under_bf16_autocast_as_the_teammates_are(method):
    system = build_system(load_config("smoke", method=method), num_classes=10, image_size=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, pooled = system.net.forward_exits(torch.randn(2, 3, 32, 32))
    assert [z.dtype for z in logits] == [torch.float32] * len(system.net.exit_blocks)
    assert pooled[0].dtype == torch.bfloat16  # the features stay in the autocast type


class _AddcmulTypes(TorchFunctionMode):
    """Records the types of ``addcmul``'s two factors."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.dtype, torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.addcmul:
            self.seen.append((args[1].dtype, args[2].dtype))
        return func(*args, **(kwargs or {}))


def test_a_masked_block_stays_in_bf16_under_autocast():
    """CUDA's autocast runs addcmul in the widest type of its inputs: a gate value in fp32
    would carry every masked block's residual in fp32. The value takes the residual's type."""
    net = build_model("resnet20", num_classes=10, image_size=32)
    add_gate(net)
    mask = net.gate.sample(0.5, generator=torch.Generator().manual_seed(0))
    with _AddcmulTypes() as types, torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(2, 3, 32, 32), mask=mask)
    assert types.seen and set(types.seen) == {(torch.bfloat16, torch.bfloat16)}
