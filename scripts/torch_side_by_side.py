#!/usr/bin/env python3
"""The PyTorch side of the CUDA benchmark: the same ops, written the way the Python RLHF
libraries write them, timed on the same GPU the same way as native/bench/cuda_bench.cu (CUDA
events, a warm-up, L2 flushed before every timed run, the median of at least 20 runs and 0.2 s;
the python loops over 131072 steps take seconds, so they get a time budget instead).

  gae (cleanrl-loop)       CleanRL ppo.py: a python loop over time on [T,N] tensors
  tokenGae (trl-loop)      TRL 0.9 PPOTrainer.compute_advantages: premask, loop over tokens
  whiten (trl-vectorised)  TRL masked_whiten: masked mean and Bessel-corrected variance, eager

Bytes per op are the same compulsory traffic as cuda_bench.cu counts, so GB/s compare directly.

Usage: torch_side_by_side.py [--json FILE]
"""
import argparse
import json
import statistics
import time

import torch

MIN_RUNS = 20
MIN_SECONDS = 0.2
BUDGET_SECONDS = 5.0  # per op: the slow loops stop after this, with at least one timed run


def cleanrl_gae(rewards, values, dones, next_value, next_done, gamma, gae_lambda):
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(T)):
        if t == T - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    returns = advantages + values
    return advantages, returns


def trl_token_gae(values, rewards, mask, gamma, lam):
    lastgaelam = 0
    advantages_reversed = []
    gen_len = rewards.shape[-1]
    values = values * mask
    rewards = rewards * mask
    for t in reversed(range(gen_len)):
        nextvalues = values[:, t + 1] if t < gen_len - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1]).transpose(0, 1)
    returns = advantages + values
    return advantages, returns


def masked_mean(values, mask):
    return (values * mask).sum() / mask.sum()


def masked_var(values, mask):
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    mask_sum = mask.sum()
    return variance * (mask_sum / (mask_sum - 1))


def trl_masked_whiten(values, mask):
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    return (values - mean) * torch.rsqrt(var + 1e-8)


class Timer:
    def __init__(self):
        props = torch.cuda.get_device_properties(0)
        l2 = getattr(props, "L2_cache_size", 0) or (50 << 20)
        self.flush = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")

    def median_us(self, fn):
        begin = time.perf_counter()
        fn()  # warm-up
        torch.cuda.synchronize()
        times = []
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        while True:
            elapsed = time.perf_counter() - begin
            enough = len(times) >= MIN_RUNS and elapsed >= MIN_SECONDS
            if times and (enough or elapsed >= BUDGET_SECONDS):
                break
            self.flush.fill_(len(times) & 0xFF)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) * 1e3)
        return statistics.median(times), len(times)


def response_mask(B, T, generator):
    lengths = torch.randint(T * 7 // 10, T + 1, (B, 1), device="cuda", generator=generator)
    return (torch.arange(T, device="cuda")[None, :] < lengths).float()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    g = torch.Generator(device="cuda").manual_seed(0)
    timer = Timer()
    results = []

    def record(op, impl, shape, bytes_, fn):
        us, runs = timer.median_us(fn)
        results.append({"op": op, "shape": shape, "backend": "torch", "impl": impl, "medianUs": round(us, 3),
                        "gbPerS": round(bytes_ / (us * 1e-6) / 1e9, 2), "runs": runs})
        print(f"{op:10} {impl:16} {shape:18} {us:14.1f} us {results[-1]['gbPerS']:9.1f} GB/s  ({runs} runs)",
              flush=True)

    def rand(*shape):
        return torch.rand(*shape, device="cuda", generator=g) * 2 - 1

    for T, N in [(1024, 4096), (64, 8192), (131072, 1)]:
        rewards, values = rand(T, N), rand(T, N)
        dones = (torch.rand(T, N, device="cuda", generator=g) < 0.01).float()
        next_value, next_done = rand(N), torch.zeros(N, device="cuda")
        record("gae", "cleanrl-loop", f"[T={T},N={N}]", 17.0 * T * N + 5.0 * N,
               lambda: cleanrl_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95))

    for B, T in [(4096, 1024), (1, 131072)]:
        rewards, values, mask = rand(B, T), rand(B, T), response_mask(B, T, g)
        record("tokenGae", "trl-loop", f"[B={B},T={T}]", 17.0 * B * T,
               lambda: trl_token_gae(values, rewards, mask, 1.0, 0.95))

    n = 16 << 20
    x = rand(n) * 4 + 1
    mask = (torch.rand(n, device="cuda", generator=g) < 0.8).float()
    record("whiten", "trl-vectorised", f"[n={n}]", 13.0 * n, lambda: trl_masked_whiten(x, mask))

    if args.json:
        meta = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
        with open(args.json, "w") as f:
            json.dump([dict(r, **meta) for r in results], f, indent=2)


if __name__ == "__main__":
    main()
