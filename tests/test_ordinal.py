"""Ordinal heads: losses on hand-made logits, decoding against hand-worked labels and the package's rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from coral_pytorch.dataset import corn_label_from_logits, proba_to_label
from coral_pytorch.layers import CoralLayer

from matcv.lightning_modules.ordinal import HEADS, head_decode, head_loss, make_head

K = 5


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def _confident_logits(head: str, labels: torch.Tensor, scale: float = 12.0) -> torch.Tensor:
    """Logits that say `labels` with certainty: one-hot for CE, '+ if label > k else −' for CORAL/CORN."""
    if head == "ce":
        return torch.where(F.one_hot(labels, K).bool(), scale, -scale)
    return torch.where(labels[:, None] > torch.arange(K - 1)[None, :], scale, -scale)


def test_heads_have_the_documented_shapes():
    features = torch.randn(3, 7)
    ce, coral, corn = (make_head(head, 7, K) for head in ("ce", "coral", "corn"))
    assert HEADS == ("ce", "coral", "corn")
    assert isinstance(ce, torch.nn.Linear) and ce(features).shape == (3, K)
    assert isinstance(coral, CoralLayer) and coral(features).shape == (3, K - 1)
    # CORAL: one weight vector shared by all thresholds, K−1 biases.
    assert coral.coral_weights.weight.shape == (1, 7) and coral.coral_bias.shape == (K - 1,)
    assert isinstance(corn, torch.nn.Linear) and corn(features).shape == (3, K - 1)


@pytest.mark.parametrize("call", [lambda: make_head("softmax", 4, K),
                                  lambda: head_loss("ordinal", torch.zeros(2, K), torch.zeros(2, dtype=torch.long), K),
                                  lambda: head_decode("CORAL", torch.zeros(2, K - 1))])
def test_unknown_head_names_raise_and_list_the_valid_ones(call):
    with pytest.raises(ValueError, match="ce, coral, corn"):
        call()


@pytest.mark.parametrize("head", ["coral", "corn"])
def test_class_weights_only_for_cross_entropy(head):
    with pytest.raises(ValueError, match="class_weights"):
        head_loss(head, torch.zeros(2, K - 1), torch.tensor([0, 1]), K, class_weights=torch.ones(K))


def test_bad_labels_and_logit_shapes_raise():
    with pytest.raises(ValueError, match="0..4"):
        head_loss("corn", torch.zeros(2, K - 1), torch.tensor([0, 5]), K)  # a rating index past the scale
    with pytest.raises(ValueError, match="0..4"):
        head_loss("ce", torch.zeros(2, K), torch.tensor([-1, 0]), K)
    with pytest.raises(ValueError, match="expects 4 logits"):
        head_loss("coral", torch.zeros(2, K), torch.tensor([0, 1]), K)  # CE-shaped logits into CORAL
    with pytest.raises(ValueError, match="empty"):
        head_loss("corn", torch.zeros(0, K - 1), torch.zeros(0, dtype=torch.long), K)


def test_losses_of_uninformative_logits_are_hand_computable():
    labels = torch.tensor([0, 2, 4])
    # Every binary/softmax decision at probability 1/2 (or 1/K): CE = log K per example, CORAL sums
    # K−1 binary terms per example, CORN averages over the (example, task) pairs it uses.
    assert head_loss("ce", torch.zeros(3, K), labels, K).item() == pytest.approx(math.log(K))
    assert head_loss("coral", torch.zeros(3, K - 1), labels, K).item() == pytest.approx((K - 1) * math.log(2))
    assert head_loss("corn", torch.zeros(3, K - 1), labels, K).item() == pytest.approx(math.log(2))


def test_coral_loss_is_summed_binary_cross_entropy_on_the_levels():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, K - 1), torch.tensor([0, 1, 2, 3, 4, 2])
    levels = (labels[:, None] > torch.arange(K - 1)[None, :]).float()  # label 2 -> [1, 1, 0, 0]
    expected = F.binary_cross_entropy_with_logits(logits, levels, reduction="none").sum(dim=1).mean()
    assert head_loss("coral", logits, labels, K).item() == pytest.approx(expected.item(), rel=1e-6)


def test_corn_loss_uses_only_the_conditional_subsets():
    # Label 1: task 0 (y>0? yes) and task 1 (y>1? no) are used; tasks 2, 3 (conditional on y>1, y>2) are not,
    # so their logits may be anything.
    labels = torch.tensor([1])
    logits = torch.tensor([[2.0, -1.0, 50.0, -50.0]])
    expected = (-math.log(_sigmoid(2.0)) - math.log(1 - _sigmoid(-1.0))) / 2
    assert head_loss("corn", logits, labels, K).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("head", HEADS)
def test_confident_right_is_near_zero_and_confident_wrong_is_large(head):
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    logits = _confident_logits(head, labels)
    right = head_loss(head, logits, labels, K)
    wrong = head_loss(head, logits, K - 1 - labels, K)  # order reversed: 0 <-> 4, 1 <-> 3
    assert torch.isfinite(right) and torch.isfinite(wrong)
    assert right.item() < 1e-3
    assert wrong.item() > 5.0


@pytest.mark.parametrize("head", HEADS)
def test_losses_are_finite_on_extreme_logits_and_gradients_flow(head):
    torch.manual_seed(1)
    outputs = K if head == "ce" else K - 1
    logits = (torch.randn(16, outputs) * 60).requires_grad_()
    labels = torch.randint(0, K, (16,))
    loss = head_loss(head, logits, labels, K)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_coral_levels_follow_the_logits_dtype():
    logits = torch.zeros(2, K - 1, dtype=torch.float64, requires_grad=True)
    loss = head_loss("coral", logits, torch.tensor([1, 3]), K)
    assert loss.dtype == torch.float64


def test_class_weights_change_ce_exactly_as_cross_entropy_weight_does():
    torch.manual_seed(2)
    logits, labels = torch.randn(8, K), torch.tensor([0, 0, 1, 2, 3, 4, 4, 4])
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0, 0.25])
    weighted = head_loss("ce", logits, labels, K, class_weights=weights)
    per_example = F.cross_entropy(logits, labels, reduction="none")
    # Weighted mean: sum w_y * loss / sum w_y.
    by_hand = (weights[labels] * per_example).sum() / weights[labels].sum()
    assert weighted.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert weighted.item() == pytest.approx(F.cross_entropy(logits, labels, weight=weights).item(), rel=1e-6)
    assert abs(weighted.item() - head_loss("ce", logits, labels, K).item()) > 1e-3


def test_coral_decoding_on_hand_made_logits():
    labels, probabilities = head_decode("coral", torch.tensor([[2.0, 1.0, -1.0, -2.0],
                                                               [-3.0, -4.0, -5.0, -6.0],
                                                               [6.0, 5.0, 4.0, 3.0]]))
    assert labels.tolist() == [2, 0, 4]  # thresholds passed: 2, none, all
    exceed = [_sigmoid(v) for v in (2.0, 1.0, -1.0, -2.0)]  # P(y > k)
    by_hand = [1 - exceed[0], exceed[0] - exceed[1], exceed[1] - exceed[2], exceed[2] - exceed[3], exceed[3]]
    assert probabilities[0].tolist() == pytest.approx(by_hand, abs=1e-6)
    assert probabilities[0, 2].item() == pytest.approx(0.4621, abs=1e-4)


def test_coral_decoding_with_disordered_thresholds_clips_and_renormalises():
    # P(y>k) = .269, .731, .269, .731: not decreasing, so two differences are negative.
    labels, probabilities = head_decode("coral", torch.tensor([[-1.0, 1.0, -1.0, 1.0]]))
    assert labels.tolist() == [2]  # the package counts thresholds above 0.5
    low, high = _sigmoid(-1.0), _sigmoid(1.0)
    raw = [1 - low, 0.0, high - low, 0.0, high]
    assert probabilities[0].tolist() == pytest.approx([value / sum(raw) for value in raw], abs=1e-6)
    assert probabilities.min() >= 0 and probabilities.sum().item() == pytest.approx(1.0)


def test_corn_decoding_chains_the_conditional_probabilities():
    labels, probabilities = head_decode("corn", torch.tensor([[3.0, 3.0, -3.0, 3.0],
                                                              [0.5, 0.5, 0.5, 0.5],
                                                              [-3.0, 3.0, 3.0, 3.0],
                                                              [3.0, 3.0, 3.0, 3.0]]))
    # Row 2: every conditional P is .62 > .5, but P(y>1) = .62² = .39 < .5, so the label is 1, not 4.
    # Row 3: P(y>0) = .05 sinks all later thresholds whatever their logits.
    assert labels.tolist() == [2, 1, 0, 4]
    s, t = _sigmoid(3.0), _sigmoid(-3.0)
    exceed = [s, s * s, s * s * t, s * s * t * s]
    by_hand = [1 - exceed[0], exceed[0] - exceed[1], exceed[1] - exceed[2], exceed[2] - exceed[3], exceed[3]]
    assert probabilities[0].tolist() == pytest.approx(by_hand, abs=1e-6)
    assert probabilities[0].argmax().item() == 2


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("num_classes", [2, 5])
def test_decoding_agrees_with_the_package_and_gives_distributions(head, num_classes):
    torch.manual_seed(3)
    outputs = num_classes if head == "ce" else num_classes - 1
    logits = torch.randn(2000, outputs) * 3
    labels, probabilities = head_decode(head, logits)
    package = {"ce": lambda: logits.argmax(dim=1),
               "coral": lambda: proba_to_label(torch.sigmoid(logits)),
               "corn": lambda: corn_label_from_logits(logits)}[head]()
    assert labels.dtype == torch.long and labels.shape == (2000,)
    assert torch.equal(labels, package)
    assert probabilities.shape == (2000, num_classes)
    assert probabilities.min() >= 0
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2000), atol=1e-6)
    assert labels.min() >= 0 and labels.max() <= num_classes - 1


@pytest.mark.parametrize("head", HEADS)
def test_a_linear_head_learns_floor_of_x(head):
    # Label = floor(x) for x in [0, 5): five ordered intervals of a 1-D feature, separable by any head.
    torch.manual_seed(0)
    x = torch.rand(200, 1) * K
    x_test = torch.rand(1000, 1) * K
    model = make_head(head, 1, K)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add overhead, and several seconds on a loaded machine
    try:
        for _ in range(200):
            optimiser.zero_grad()
            head_loss(head, model(x), x.floor().long().squeeze(1), K).backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        predicted, _ = head_decode(head, model(x_test))
    accuracy = (predicted == x_test.floor().long().squeeze(1)).float().mean().item()
    assert accuracy >= 0.9
