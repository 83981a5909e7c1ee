"""Time the formulations of a depthwise convolution's weight gradient, per case, on one device.

The lean second-order path (:mod:`atcon.attention.convgrad`) needs ``wgrad(u, g_y)`` twice per
depthwise layer in a consistency step. Compared, for each (batch, channels, size, kernel, stride):

    native      PyTorch's weight-gradient kernel (``convolution_backward``; oneDNN on CPU)
    native_cl   the same on channels-last tensors already in that format (for reference)
    batch_conv  one depthwise convolution of the batch laid out as channels (groups = B C), summed
                over the batch: atcon's choice for kernels above 3x3 on CPU
    unfold      ``F.unfold`` then an einsum over the batch and positions

Also the forward and input-gradient kernels, which every formulation shares. Times are medians of
``--repeats`` calls in ms (process CPU time with ``--clock cpu``: steadier on a shared machine).

    PYTHONPATH=src python benchmarks/depthwise_conv.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from atcon.attention.convgrad import _batch_as_channels_wgrad

# batch, channels, size, kernel, stride: the depthwise layers of efficientnet_b0 / mobilenet_v3 /
# convnext_atto at 96-128 px and batch 4, and a few larger maps.
CASES = [
    (4, 32, 64, 3, 1),
    (4, 96, 64, 3, 2),
    (4, 144, 32, 5, 2),
    (4, 240, 16, 5, 1),
    (4, 672, 8, 5, 1),
    (4, 1152, 4, 5, 1),
    (4, 40, 32, 7, 1),
    (4, 160, 8, 7, 1),
    (8, 64, 64, 5, 1),
    (8, 64, 32, 7, 2),
]


def median_ms(fn: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times) * 1e3


def unfold_wgrad(gy: Tensor, x: Tensor, k: int, stride: int, pad: int) -> Tensor:
    b, c = x.shape[:2]
    cols = F.unfold(x, k, 1, pad, stride).view(b, c, k * k, -1)
    return torch.einsum("bckl,bcl->ck", cols, gy.flatten(2)).view(c, 1, k, k)


def measure(
    case: tuple[int, ...], device: torch.device, repeats: int, clock: Callable[[], float]
) -> dict[str, float]:
    b, c, size, k, s = case
    p = k // 2
    x = torch.randn(b, c, size, size, device=device)
    w = torch.randn(c, 1, k, k, device=device)
    gy = torch.randn_like(F.conv2d(x, w, None, s, p, 1, c))
    conf = ([s, s], [p, p], [1, 1], c)
    xl, gyl = (t.contiguous(memory_format=torch.channels_last) for t in (x, gy))

    def native(gy: Tensor = gy, x: Tensor = x) -> Tensor:
        return torch.ops.aten.convolution_backward(
            gy, x, w, None, *conf[:3], False, [0, 0], c, [False, True, False]
        )[1]

    ref = native()
    for got in (_batch_as_channels_wgrad(gy, x, w, conf), unfold_wgrad(gy, x, k, s, p)):
        assert (got - ref).abs().max() <= 1e-4 * ref.abs().max(), "formulations disagree"
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def timed(fn: Callable[[], object]) -> float:
        return median_ms(lambda: (fn(), sync()), repeats, clock)

    return {
        "forward": timed(lambda: F.conv2d(x, w, None, s, p, 1, c)),
        "input_grad": timed(
            lambda: torch.ops.aten.convolution_backward(
                gy, x, w, None, *conf[:3], False, [0, 0], c, [True, False, False]
            )
        ),
        "native": timed(native),
        "native_cl": timed(lambda: native(gyl, xl)),
        "batch_conv": timed(lambda: _batch_as_channels_wgrad(gy, x, w, conf)),
        "unfold": timed(lambda: unfold_wgrad(gy, x, k, s, p)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device(args.device)
    print(
        f"device={device} threads={torch.get_num_threads()} clock={args.clock} torch={torch.__version__}; ms"
    )
    cols = ["forward", "input_grad", "native", "native_cl", "batch_conv", "unfold"]
    print(f"{'B':>3s} {'C':>5s} {'HW':>4s} {'k':>2s} {'s':>2s} " + " ".join(f"{n:>10s}" for n in cols))
    for case in CASES:
        r = measure(case, device, args.repeats, clock)
        print(
            " ".join(f"{v:>{n}d}" for v, n in zip(case, (3, 5, 4, 2, 2)))
            + " "
            + " ".join(f"{r[n]:10.2f}" for n in cols)
        )


if __name__ == "__main__":
    main()
