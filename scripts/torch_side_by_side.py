#!/usr/bin/env python3
"""The PyTorch side of the CUDA benchmark: the same ops, written the way the Python RLHF
libraries write them, timed on the same GPU the same way as native/bench/cuda_bench.cu (CUDA
events, a warm-up, L2 flushed before every timed run, the median of at least 20 runs and 0.2 s;
the python loops over 131072 steps take seconds, so they get a time budget instead).

  gae (cleanrl-loop)       CleanRL ppo.py: a python loop over time on [T,N] tensors
  tokenGae (trl-loop)      TRL 0.9 PPOTrainer.compute_advantages: premask, loop over tokens
  whiten (trl-vectorised)  TRL masked_whiten: masked mean and Bessel-corrected variance, eager
  logprobs (log-softmax)   log_softmax + gather for lp, verl's logsumexp - sum(p z) for entropy
  logprobsBackward         the same through autograd, with upstream gradients for lp and H
  actorLoss (eager)        lp and H from logits, clipped PPO with dual clip, k3 KL, entropy
                           bonus, token-mean, then backward to the logits (what a PPO step runs)
  ppoPolicyLoss, valueLoss TRL/verl-style clipped losses over 16M tokens, forward and backward
  matmul (torch.matmul)    cuBLAS float32 (TF32 off) at the shapes of cuda_bench.cu, in GFLOP/s
  adamw (foreach=False)    torch.optim.AdamW's single-tensor loop over 10M parameters

The AdamW line also checks the update rule nn.h specifies (native/reference/nn_math.h: the scalars
derived in float64 and rounded to float32 once, then decay, lerp of m, v, step, one rounding per
operation) against torch.optim.AdamW on one random tensor: the rule is replayed here in eager
float32 torch ops, one op per rounding, and its difference from torch is printed. This checks the
formula the CUDA, CPU and reference kernels share, not our binaries (cuda_conformance checks
that they compute it).

The policy ops also report maxAbsDiff: the largest difference of torch's float32 (or bf16)
result from the same computation in float64 on the same inputs, the measure that
native/tests/cuda_conformance.cpp applies to the CUDA kernels.

Bytes per op are the same compulsory traffic as cuda_bench.cu counts, so GB/s compare directly.

Usage: torch_side_by_side.py [--json FILE]
"""
import argparse
import json
import math
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


def logprobs_entropy(logits, labels):
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    lp = logp.gather(-1, labels[:, None]).squeeze(-1)
    p = torch.softmax(logits, dim=-1)
    entropy = torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)
    return lp, entropy


def ppo_loss(lp, old, adv, mask, eps=0.2, dual_clip=3.0):
    ratio = torch.exp(lp - old)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - eps, 1 + eps)
    loss = torch.maximum(pg1, pg2)
    loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip), loss)
    return (loss * mask).sum() / mask.sum()


def value_loss(v, v_old, returns, mask, clip=0.2):
    v_clipped = v_old + torch.clamp(v - v_old, -clip, clip)
    loss = torch.maximum((v - returns) ** 2, (v_clipped - returns) ** 2)
    return 0.5 * (loss * mask).sum() / mask.sum()


def actor_loss(logits, labels, old, adv, ref, mask, entropy_coef=0.01, kl_coef=0.05):
    lp, entropy = logprobs_entropy(logits, labels)
    d = ref - lp
    k3 = torch.exp(d) - d - 1
    n = mask.sum()
    return ppo_loss(lp, old, adv, mask) + kl_coef * (k3 * mask).sum() / n - entropy_coef * (entropy * mask).sum() / n


def adamw_rule_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One step of nn_math.h's adamwUpdate in eager float32 ops (in place on p, m, v)."""
    def f32(x):
        return torch.tensor(x, dtype=torch.float32).item()

    decay, beta1_weight = f32(1 - lr * weight_decay), f32(1 - beta1)
    beta2_f, one_minus_beta2 = f32(beta2), f32(1 - beta2)
    step_size, bias2_sqrt = f32(lr / (1 - beta1 ** step)), f32(math.sqrt(1 - beta2 ** step))
    p.mul_(decay)
    m.add_((g - m).mul_(beta1_weight))
    v.mul_(beta2_f).add_((g * one_minus_beta2).mul_(g))  # (c g) g, as C++ reads c * g * g
    denom = v.sqrt().div_(bias2_sqrt).add_(f32(eps))
    p.add_((m / denom).mul_(-step_size))


def adamw_rule_check(g):
    """Three steps on one random tensor: nn.h's rule against torch.optim.AdamW(foreach=False)."""
    n = 1 << 20
    p0 = torch.rand(n, device="cuda", generator=g) * 2 - 1
    torch_p = p0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([torch_p], lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False)
    p, m, v = p0.clone(), torch.zeros(n, device="cuda"), torch.zeros(n, device="cuda")
    for step in range(1, 4):
        grad = (torch.rand(n, device="cuda", generator=g) * 2 - 1) * 0.1
        torch_p.grad = grad.clone()
        opt.step()
        adamw_rule_step(p, grad, m, v, step, 3e-3, 0.9, 0.999, 1e-8, 0.01)
    with torch.no_grad():
        diff = (p - torch_p).abs()
        rel = float((diff / torch_p.abs().clamp_min(1e-30)).max())
        differ = int((p != torch_p).sum())
    print(f"adamw rule check: after 3 steps on {n} params, max relative |nn.h rule - torch.optim.AdamW| {rel:.3g}, "
          f"{differ} elements not bit-identical", flush=True)
    return rel


def nn_cases(record, g):
    """The neural-network family: torch.matmul and torch.optim.AdamW next to cuda_bench.cu's rows."""
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, as our kernel computes them
    for M, N, K in [(512, 512, 512), (4096, 4096, 4096), (128, 64, 64)]:
        a = torch.rand(M, K, device="cuda", generator=g) * 2 - 1
        b = torch.rand(K, N, device="cuda", generator=g) * 2 - 1
        record("matmul", "torch.matmul", f"[{M}x{N}x{K}]", 4.0 * (M * K + K * N + M * N), lambda: torch.matmul(a, b),
               flops=2.0 * M * N * K)
        del a, b

    rel = adamw_rule_check(g)
    for count, size in [(1, 10_000_000), (200, 50_000)]:
        params = [torch.nn.Parameter(torch.rand(size, device="cuda", generator=g) * 2 - 1) for _ in range(count)]
        for q in params:
            q.grad = (torch.rand(size, device="cuda", generator=g) * 2 - 1) * 0.1
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=False)
        opt.step()  # creates the moments
        row = record("adamw", "AdamW foreach=False", f"[{count}x{size}]", 28.0 * count * size, opt.step)
        row["adamwRuleMaxRelDiff"] = rel
        del params, opt
        torch.cuda.empty_cache()


def max_abs_diff(a, b):
    return float((a.double() - b.double()).abs().max())


def policy_cases(record, g):
    """The policy family: timings, and each op's float64 difference on the same inputs."""
    for N, V, dtype in [(4096, 32000, torch.float32), (1024, 128256, torch.float32), (1024, 128256, torch.bfloat16)]:
        shape = f"[N={N},V={V}] {'f32' if dtype == torch.float32 else 'bf16'}"
        elem = 4 if dtype == torch.float32 else 2
        logits = ((torch.rand(N, V, device="cuda", generator=g) * 16 - 8)).to(dtype)
        labels = torch.randint(0, V, (N,), device="cuda", generator=g)
        lp, H = logprobs_entropy(logits, labels)
        lp64, H64 = logprobs_entropy(logits.double(), labels)
        diff = max(max_abs_diff(lp, lp64), max_abs_diff(H, H64))
        record("logprobs", "log-softmax", shape, elem * N * V + 12.0 * N, lambda: logprobs_entropy(logits, labels), diff)

        leaf = logits.detach().requires_grad_(True)
        g_lp = torch.rand(N, device="cuda", generator=g) * 2 - 1
        g_h = (torch.rand(N, device="cuda", generator=g) * 2 - 1) * 0.01

        def backward(x=leaf):
            lp_, h_ = logprobs_entropy(x, labels)
            (grad,) = torch.autograd.grad((lp_ * g_lp + h_ * g_h).sum(), x)
            return grad

        leaf64 = logits.detach().double().requires_grad_(True)
        diff = max_abs_diff(backward(), backward(leaf64))
        record("logprobsBackward", "autograd", shape, 2.0 * elem * N * V + 12.0 * N, backward, diff)
        del logits, leaf, leaf64
        torch.cuda.empty_cache()

    B, T, V = 8, 1024, 128256
    N = B * T
    for dtype in [torch.float32, torch.bfloat16]:
        elem = 4 if dtype == torch.float32 else 2
        logits = (torch.rand(N, V, device="cuda", generator=g) * 16 - 8).to(dtype).requires_grad_(True)
        labels = torch.randint(0, V, (N,), device="cuda", generator=g)
        old = torch.rand(N, device="cuda", generator=g) * 4 - 12
        ref = torch.rand(N, device="cuda", generator=g) * 4 - 12
        adv = torch.rand(N, device="cuda", generator=g) * 2 - 1
        mask = response_mask(B, T, g).reshape(N)

        def step(x=logits):
            (grad,) = torch.autograd.grad(actor_loss(x, labels, old, adv, ref, mask), x)
            return grad

        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        extra = torch.cuda.max_memory_allocated() - base
        shape = f"[N={N},V={V}] {'f32' if dtype == torch.float32 else 'bf16'}"
        print(f"actorLoss {shape}: autograd peak {extra / 1e9:.2f} GB beyond the inputs", flush=True)
        record("actorLoss", "eager+autograd", shape, 2.0 * elem * N * V + 25.0 * N, step, None)
        del logits
        torch.cuda.empty_cache()

    B, T = 16384, 1024
    n = B * T
    lp = (torch.rand(n, device="cuda", generator=g) * 2.9 - 3).requires_grad_(True)
    old = torch.rand(n, device="cuda", generator=g) * 2.9 - 3
    adv = torch.rand(n, device="cuda", generator=g) * 2 - 1
    mask = response_mask(B, T, g).reshape(n)
    v = (torch.rand(n, device="cuda", generator=g) * 2 - 1).requires_grad_(True)
    v_old = torch.rand(n, device="cuda", generator=g) * 2 - 1
    returns = torch.rand(n, device="cuda", generator=g) * 2 - 1
    shape = f"[B={B},T={T}]"

    def ppo_step(x=lp):
        loss = ppo_loss(x, old, adv, mask)
        return loss, torch.autograd.grad(loss, x)[0]

    def value_step(x=v):
        loss = value_loss(x, v_old, returns, mask)
        return loss, torch.autograd.grad(loss, x)[0]

    loss32, grad32 = ppo_step()
    loss64, grad64 = ppo_step(lp.detach().double().requires_grad_(True))
    record("ppoPolicyLoss", "eager+autograd", shape, 17.0 * n, ppo_step,
           max(max_abs_diff(loss32, loss64), max_abs_diff(grad32, grad64)))
    loss32, grad32 = value_step()
    loss64, grad64 = value_step(v.detach().double().requires_grad_(True))
    record("valueLoss", "eager+autograd", shape, 17.0 * n, value_step,
           max(max_abs_diff(loss32, loss64), max_abs_diff(grad32, grad64)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    g = torch.Generator(device="cuda").manual_seed(0)
    timer = Timer()
    results = []

    def record(op, impl, shape, bytes_, fn, max_abs_diff=None, flops=None):
        us, runs = timer.median_us(fn)
        results.append({"op": op, "shape": shape, "backend": "torch", "impl": impl, "medianUs": round(us, 3),
                        "gbPerS": round(bytes_ / (us * 1e-6) / 1e9, 2), "runs": runs})
        diff = ""
        if max_abs_diff is not None:
            results[-1]["maxAbsDiff"] = max_abs_diff
            diff = f"  max |torch - float64| {max_abs_diff:.3g}"
        if flops is not None:
            results[-1]["gflops"] = round(flops / (us * 1e-6) / 1e9, 1)
            diff += f"  {results[-1]['gflops']:.0f} GFLOP/s"
        print(f"{op:10} {impl:16} {shape:24} {us:14.1f} us {results[-1]['gbPerS']:9.1f} GB/s  ({runs} runs){diff}",
              flush=True)
        return results[-1]

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
    del x, mask
    policy_cases(record, g)
    nn_cases(record, g)

    if args.json:
        meta = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
        with open(args.json, "w") as f:
            json.dump([dict(r, **meta) for r in results], f, indent=2)


if __name__ == "__main__":
    main()
