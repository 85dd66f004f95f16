"""PCMemory's hand-written maths against autograd and closed forms (float64).

One relaxation step, the local weight rule and the first conjugate-gradient iteration
equal autograd's gradients of a plain energy (2-4 layers, precisions, prior, masks, Gram
and direct messages); a linear model relaxes to the closed-form minimum and conjugate
gradients reach a linear partial cue's minimiser in few iterations; the shipped float32
oneDNN path equals the float64 one to float32 rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

from memory_core import PCMemory
from memory_core.data import flatten, natural_patches

# Small products: on a shared 2-core machine two OpenMP threads wait on each other's time
# slices and ran ~10x slower than one (measured).
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest


@pytest.fixture(scope="module")
def patches() -> torch.Tensor:
    return flatten(natural_patches(32, count=40))  # (40, 3072), as the unit tests' model sees


# --- a plain autograd reference of the same model ---------------------------------------


def reference_energy(pc: PCMemory, xs: list[torch.Tensor], x: torch.Tensor, known=None, pi=None) -> torch.Tensor:
    """(B,) E written the obvious way, differentiable in everything."""
    pi = pi or pc.config.pi
    f = {"tanh": torch.tanh, "linear": lambda v: v, "sigmoid": torch.sigmoid, "relu": torch.relu}[pc.config.activation]
    layers = list(xs) + [x]
    e = 0.5 * pi[0] * (layers[0] - pc.prior_mean).square().sum(1)
    for l in range(1, len(layers)):
        err = layers[l] - (f(layers[l - 1]) @ pc.weights[l - 1].T + pc.biases[l - 1])
        if l == len(layers) - 1 and known is not None:
            err = err * known
        e = e + 0.5 * pi[l] * err.square().sum(1)
    return e


def top_down_start(pc: PCMemory, batch: int) -> list[torch.Tensor]:
    xs = [pc.prior_mean.expand(batch, -1).clone()]
    for l in range(1, len(pc.sizes) - 1):
        xs.append(torch.tanh(xs[-1]) @ pc.weights[l - 1].T + pc.biases[l - 1])
    return xs


def random_model(sizes, **kw) -> PCMemory:
    """A float64 model with weights of ordinary size (not the tiny sensory start)."""
    pc = PCMemory(sizes, device="cpu", dtype=torch.float64, sensory_init=1.0, **kw)
    gen = torch.Generator().manual_seed(5)
    for b in pc.biases:
        b.copy_(0.3 * torch.randn(b.shape, generator=gen, dtype=torch.float64))
    pc.prior_mean.copy_(0.2 * torch.randn(pc.prior_mean.shape, generator=gen, dtype=torch.float64))
    return pc


@pytest.mark.parametrize("masked, gram", [(False, True), (False, False), (True, False)])
@pytest.mark.parametrize(
    "sizes, precisions, prior",
    [((5, 9, 13), None, 0.0), ((4, 7, 8, 11), (2.0, 0.5, 3.0), 0.7), ((6, 10), None, 0.5)],
)
def test_relaxation_step_equals_autograd(sizes, precisions, prior, masked, gram):
    pc = random_model(sizes, precisions=precisions, prior_precision=prior)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(7, sizes[-1], generator=gen, dtype=torch.float64)
    known = (torch.rand(x.shape, generator=gen) > 0.4).double() if masked else None
    lr = 0.1
    # One step from the top-down start: x_l <- x_l - lr_l * dE/dx_l (momentum has no history yet).
    after = pc._relax(x, known, steps=1, lr=lr, pi=pc.config.pi, use_gram=gram)
    start = [v.requires_grad_() for v in top_down_start(pc, x.shape[0])]
    grads = torch.autograd.grad(reference_energy(pc, start, x, known).sum(), start)
    for l, (s, g, a) in enumerate(zip(start, grads, after)):
        expected = s.detach() - pc._step_sizes(pc.config.pi, lr, known)[l] * g
        torch.testing.assert_close(a, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sizes, prior", [((5, 9, 13), 0.0), ((4, 7, 8, 11), 0.7)])
def test_local_weight_rule_equals_autograd(sizes, prior):
    pc = random_model(sizes, precisions=tuple(1.0 + l for l in range(len(sizes) - 1)), prior_precision=prior)
    x = torch.rand(6, sizes[-1], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    xs = pc._relax(x, None, steps=5, lr=0.2, pi=pc.config.pi)
    energy, local = pc._weight_grads(xs, x)
    params = [p.clone().requires_grad_() for p in pc.parameters()]
    saved = pc.parameters()
    pc.weights = params[0:-1:2]
    pc.biases = params[1:-1:2]
    pc.prior_mean = params[-1]
    e = reference_energy(pc, xs, x)
    auto = torch.autograd.grad(e.mean(), params)
    assert energy == pytest.approx(float(e.detach().sum()), rel=1e-12)
    for got, want in zip(local, auto):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    del saved


def test_linear_relaxation_reaches_the_closed_form_minimum():
    # Linear layers: E is quadratic in the latents, so relaxation must land on the solution
    # of its normal equations.
    pc = random_model((3, 5, 8), activation="linear", precisions=(2.0, 1.0), prior_precision=1.0)
    x = torch.rand(4, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    xs = pc._relax(x, None, steps=3000, lr=0.3, pi=pc.config.pi)
    z = torch.cat(xs, 1).requires_grad_()  # the minimiser of the quadratic: gradient 0, solve H z = -g0
    zero = torch.zeros_like(z, requires_grad=True)

    def energy(flat):
        return reference_energy(pc, [flat[:, :3], flat[:, 3:]], x).sum()

    g0 = torch.autograd.grad(energy(zero), zero)[0].reshape(-1)
    hess = torch.autograd.functional.hessian(lambda v: energy(v.reshape(4, 8)), zero.detach().reshape(-1))
    solution = torch.linalg.solve(hess, -g0).reshape(4, 8)
    torch.testing.assert_close(z.detach(), solution, rtol=1e-6, atol=1e-8)


def residuals(pc: PCMemory, xs: list[torch.Tensor], x: torch.Tensor, known, pi) -> torch.Tensor:
    """(B, R) sqrt(pi_l) * every error, concatenated: E = 1/2 |residuals|^2 per cue."""
    layers = list(xs) + [x]
    parts = [math.sqrt(pi[0]) * (layers[0] - pc.prior_mean)]
    for l in range(1, len(layers)):
        err = layers[l] - (torch.tanh(layers[l - 1]) @ pc.weights[l - 1].T + pc.biases[l - 1])
        if l == len(layers) - 1:
            err = err * known
        parts.append(math.sqrt(pi[l]) * err)
    return torch.cat(parts, 1)


@pytest.mark.parametrize("sizes, precisions, prior", [((5, 9, 13), None, 0.0), ((4, 7, 8, 11), (2.0, 0.5, 3.0), 0.7)])
def test_conjugate_gradient_step_equals_autograd(sizes, precisions, prior):
    # The first iteration of _relax_cg from the top-down start is a Gauss-Newton step
    # along the preconditioned gradient: x <- x - alpha P g, alpha = g.Pg / |J Pg|^2,
    # with g and J (the errors' Jacobian) from autograd here.
    pc = random_model(sizes, precisions=precisions, prior_precision=prior)
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(7, sizes[-1], generator=gen, dtype=torch.float64)
    known = (torch.rand(x.shape, generator=gen) > 0.4).double()
    pi = pc.config.pi
    after = pc._relax_cg(x * known, known, steps=1, pi=pi)
    start = [v.requires_grad_() for v in top_down_start(pc, x.shape[0])]
    grads = torch.autograd.grad(reference_energy(pc, start, x, known, pi).sum(), start)
    P = pc._step_sizes(pi, 1.0, known)
    pg = [Pl * g for Pl, g in zip(P, grads)]
    _, jp = torch.autograd.functional.jvp(lambda *v: residuals(pc, list(v), x, known, pi),
                                         tuple(s.detach() for s in start), tuple(pg))
    alpha = sum((g * q).sum(1) for g, q in zip(grads, pg)) / jp.square().sum(1)
    for s, q, a in zip(start, pg, after):
        torch.testing.assert_close(a, s.detach() - alpha[:, None] * q, rtol=1e-9, atol=1e-11)


def test_conjugate_gradients_solve_a_linear_partial_cue_in_few_iterations():
    # Linear layers: a partial cue's energy is quadratic in the latents, and conjugate
    # directions reach its minimiser in about as many iterations as there are unknowns
    # (3 + 5 per cue here), where plain descent at the same cost is still far off.
    pc = random_model((3, 5, 8), activation="linear", precisions=(2.0, 1.0), prior_precision=1.0)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(4, 8, generator=gen, dtype=torch.float64)
    known = (torch.rand(x.shape, generator=gen) > 0.5).double()
    pi = pc.config.pi

    def energy(flat):
        return reference_energy(pc, [flat[:, :3], flat[:, 3:]], x, known, pi).sum()

    zero = torch.zeros(4, 8, dtype=torch.float64)
    g0 = torch.autograd.functional.jacobian(energy, zero).reshape(-1)
    hess = torch.autograd.functional.hessian(lambda v: energy(v.reshape(4, 8)), zero.reshape(-1))
    solution = torch.linalg.solve(hess, -g0).reshape(4, 8)
    cg = torch.cat(pc._relax_cg(x * known, known, steps=30, pi=pi), 1)
    torch.testing.assert_close(cg, solution, rtol=1e-7, atol=1e-9)
    plain = torch.cat(pc._relax(x * known, known, steps=30, lr=1.0, pi=pi, momentum=0.0), 1)
    assert (plain - solution).abs().max() > 1e3 * (cg - solution).abs().max()


@pytest.mark.parametrize("masked, gram", [(False, True), (False, False), (True, False)])
def test_float32_onednn_loop_equals_float64(masked, gram, patches):
    """The shipped float32 path (products through oneDNN, Gram in strips) against the
    float64 torch.mm path on the same weights: one relaxation step and the weight rule
    agree to float32 rounding (the float64 tests above check the maths itself)."""
    from memory_core.linalg import uses_onednn

    x32 = patches[:16].contiguous()  # (16, 3072)
    pc32 = PCMemory((64, 256, 3072), device="cpu", sensory_init=1.0, seed=3)
    pc64 = PCMemory((64, 256, 3072), device="cpu", sensory_init=1.0, seed=3, dtype=torch.float64)
    pc32.biases[-1].copy_(patches.mean(0))
    for p32, p64 in zip(pc32.parameters(), pc64.parameters()):
        p64.copy_(p32.double())
    assert uses_onednn(x32)
    known = None
    if masked:
        known = (torch.rand(x32.shape, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    runs = []
    for pc, x, k in ((pc32, x32, known), (pc64, x32.double(), None if known is None else known.double())):
        xs = pc._relax(x, k, steps=2, lr=0.5, pi=pc.config.pi, use_gram=gram, momentum=0.0)
        runs.append((xs, pc._weight_grads(xs, x)))
    (xs32, (e32, g32)), (xs64, (e64, g64)) = runs
    for a, b in zip(xs32, xs64):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    assert e32 == pytest.approx(e64, rel=1e-4)
    for a, b in zip(g32, g64):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4 * float(b.abs().max()) + 1e-7)
