"""The algorithm functions against references written from verl's and TRL's published formulas.

The references below follow the peers' own code structure (verl's per-uid loops in core_algos.py, TRL's
view(-1, G) group statistics), in float64 torch, and are compared with the engine's functions through the
algo_eval tool on fixed random tensors. Usage: algo_reference.py ALGO_EVAL_BINARY
"""
import json
import subprocess
import sys
from collections import defaultdict

import torch

torch.manual_seed(0)
TOL = 1e-5


# ---- verl: compute_grpo_outcome_advantage (loop form) --------------------------------------------------------
def verl_grpo(scores, index, epsilon=1e-6, norm_adv_by_std_in_grpo=True, unbiased=True, eps_in_sqrt=False):
    id2score = defaultdict(list)
    id2mean, id2std = {}, {}
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        if len(id2score[idx]) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
        else:
            t = torch.stack(id2score[idx])
            id2mean[idx] = torch.mean(t)
            id2std[idx] = torch.std(t, unbiased=unbiased)
    out = scores.clone()
    for i in range(len(scores)):
        if norm_adv_by_std_in_grpo:
            if eps_in_sqrt:
                out[i] = (scores[i] - id2mean[index[i]]) / torch.sqrt(id2std[index[i]] ** 2 + epsilon)
            else:
                out[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
        else:
            out[i] = scores[i] - id2mean[index[i]]
    return out


def verl_rloo(scores, index):
    id2score = defaultdict(list)
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
    id2mean = {k: torch.mean(torch.stack(v)) for k, v in id2score.items()}
    out = scores.clone()
    for i in range(len(scores)):
        n = len(id2score[index[i]])
        if n > 1:
            out[i] = scores[i] * n / (n - 1) - id2mean[index[i]] * n / (n - 1)
    return out


# ---- TRL: GRPOTrainer's group statistics (scale_rewards="group") ---------------------------------------------
def trl_grpo(rewards, G, eps=1e-4):
    mean = rewards.view(-1, G).mean(dim=1).repeat_interleave(G, dim=0)
    std = rewards.view(-1, G).std(dim=1).repeat_interleave(G, dim=0)
    return (rewards - mean) / (std + eps)


# ---- verl: compute_policy_loss_vanilla + agg_loss ------------------------------------------------------------
def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def verl_agg(loss_mat, mask, mode, global_tokens=None, global_seqs=None, scale_factor=None, dp=1):
    if mode == "token-mean":
        n = global_tokens if global_tokens else mask.sum()
        return (loss_mat * mask).sum() / n * dp
    if mode == "token-sum":
        return (loss_mat * mask).sum() * dp
    seq_mask = (mask.sum(-1) > 0).double()
    bs = global_seqs if global_seqs else seq_mask.sum()
    if mode == "seq-mean-token-sum":
        return ((loss_mat * mask).sum(-1) * seq_mask).sum() / bs * dp
    if mode == "seq-mean-token-mean":
        seq = (loss_mat * mask).sum(-1) / (mask.sum(-1) + 1e-8)
        return (seq * seq_mask).sum() / bs * dp
    if mode == "seq-mean-token-sum-norm":
        factor = scale_factor if scale_factor else mask.shape[-1]
        return ((loss_mat * mask).sum(-1) * seq_mask).sum() / bs * dp / factor
    raise ValueError(mode)


def verl_policy_loss(old_log_prob, log_prob, advantages, mask, low, high, c, mode):
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    ppo_kl = masked_mean(-negative_approx_kl, mask)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - low, 1 + high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses1).double(), mask)
    pg_losses3 = -advantages * c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_clipfrac_lower = masked_mean(torch.gt(clip_pg_losses1, pg_losses3) * (advantages < 0).double(), mask)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    return pg_losses, verl_agg(pg_losses, mask, mode), pg_clipfrac, ppo_kl, pg_clipfrac_lower


# ---- verl: kl_penalty / kl_penalty_forward -------------------------------------------------------------------
def verl_kl_forward(logprob, ref_logprob, kind):
    if kind in ("kl", "k1"):
        return logprob - ref_logprob
    if kind == "abs":
        return (logprob - ref_logprob).abs()
    if kind in ("mse", "k2"):
        return 0.5 * (logprob - ref_logprob).square()
    if kind in ("low_var_kl", "k3"):
        kl = torch.clamp(ref_logprob - logprob, min=-20, max=20)
        return torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)
    raise ValueError(kind)


def verl_kl(logprob, ref_logprob, kind):
    forward = verl_kl_forward(logprob, ref_logprob, kind.rstrip("+"))
    if not kind.endswith("+"):
        return forward
    backward = verl_kl_forward(logprob, ref_logprob, "k2")
    return backward - backward.detach() + forward.detach()


def trl_k3(per_token_logps, ref_per_token_logps):
    return torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1


# ---- cases ---------------------------------------------------------------------------------------------------
def main():
    tool = sys.argv[1]
    cases, checks = [], []

    def add(case, check):
        cases.append(case)
        checks.append(check)

    # Advantages: binary and continuous rewards, uneven groups, a lone sample, a zero-variance group.
    for trial in range(6):
        sizes = [4, 4, 1, 3, 8] if trial % 2 else [5, 2, 6]
        index = [g for g, n in enumerate(sizes) for _ in range(n)]
        scores = (torch.randint(0, 2, (len(index),)) if trial < 3 else torch.randn(len(index))).double()
        scores[: sizes[0]] = 1.0  # the first group has zero variance
        scores = scores.float().double()  # the engine reads fp32 scores
        for opts in ({}, {"epsilon": 1e-4}, {"unbiased_std": False}, {"epsilon_inside_sqrt": True, "epsilon": 1e-3},
                     {"norm_by_std": False}):
            ref = verl_grpo(scores, index, opts.get("epsilon", 1e-6), opts.get("norm_by_std", True),
                            opts.get("unbiased_std", True), opts.get("epsilon_inside_sqrt", False))
            add({"fn": "advantage", "name": "grpo", "scores": scores.tolist(), "groups": index, "options": opts},
                ("grpo " + json.dumps(opts), "advantages", ref))
        add({"fn": "advantage", "name": "drgrpo", "scores": scores.tolist(), "groups": index},
            ("drgrpo", "advantages", verl_grpo(scores, index, norm_adv_by_std_in_grpo=False)))
        add({"fn": "advantage", "name": "rloo", "scores": scores.tolist(), "groups": index},
            ("rloo", "advantages", verl_rloo(scores, index)))
    # TRL's grouping (equal group sizes, eps 1e-4).
    G = 8
    rewards = torch.rand(4 * G).double()
    add({"fn": "advantage", "name": "grpo", "scores": rewards.tolist(), "groups": [i // G for i in range(4 * G)],
         "options": {"epsilon": 1e-4}}, ("TRL grpo", "advantages", trl_grpo(rewards, G)))

    # Policy loss with each aggregation mode, ratios spread so every clip branch is hit.
    modes = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
    for trial in range(3):
        B, T = 6, 9
        old = -torch.rand(B, T).double() * 3
        logp = old + torch.randn(B, T).double() * 0.6
        adv = torch.randn(B, 1).double().expand(B, T).contiguous()
        mask = (torch.arange(T).unsqueeze(0) < torch.randint(1, T + 1, (B, 1))).double()
        mask[trial % B] = 0  # one empty response
        for low, high, c in ((0.2, 0.2, 3.0), (0.2, 0.28, 3.0), (0.1, 0.3, 1.5)):
            for mode in modes:
                lp = logp.clone().requires_grad_(True)
                pg_losses, loss, clipfrac, ppo_kl, lower = verl_policy_loss(old, lp, adv, mask, low, high, c, mode)
                loss.backward()
                name = f"policy_loss {mode} ({low},{high},{c})"
                case = {"fn": "policy_loss", "logp": logp.tolist(), "old_logp": old.tolist(), "advantages": adv.tolist(),
                        "mask": mask.tolist(), "agg": mode,
                        "options": {"clip_ratio_low": low, "clip_ratio_high": high, "clip_ratio_c": c}}
                add(case, (name, "token_loss", pg_losses.detach()))
                add(case, (name, "loss", loss.detach()))
                add(case, (name, "grad", lp.grad))
                add(case, (name, "clipfrac", clipfrac))
                add(case, (name, "clipfrac_lower", lower))
                add(case, (name, "ppo_kl", ppo_kl))

    # Aggregation with global counts, a constant Dr.GRPO factor and a data-parallel factor.
    for mode in modes:
        L = torch.randn(5, 7).double()
        mask = (torch.rand(5, 7) > 0.3).double()
        kw = {"global_tokens": 40.0, "global_sequences": 12.0, "loss_scale_factor": 64.0, "dp_size": 4}
        ref = verl_agg(L, mask, mode, 40.0, 12.0, 64.0, 4)
        add({"fn": "aggregate", "loss": L.tolist(), "mask": mask.tolist(), "mode": mode, **kw},
            (f"aggregate {mode} global", "loss", ref))

    # KL estimators, with values large enough to reach the clamps, and the straight-through variants.
    logp = -torch.rand(4, 6).double() * 5
    ref_logp = logp + torch.randn(4, 6).double() * 3
    ref_logp[0, 0] = logp[0, 0] + 25  # hits the ±20 input clamp and the 10 output clamp
    for kind in ("k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl", "k3+", "k1+"):
        lp = logp.clone().requires_grad_(True)
        kl = verl_kl(lp, ref_logp, kind)
        kl.sum().backward()
        case = {"fn": "kl", "logp": logp.tolist(), "ref_logp": ref_logp.tolist(), "type": kind}
        add(case, (f"kl {kind}", "kl", kl.detach()))
        add(case, (f"kl {kind}", "grad", lp.grad))
    # TRL's k3 (no clamps) on moderate values.
    small_ref = logp + torch.randn(4, 6).double() * 0.5
    add({"fn": "kl", "logp": logp.tolist(), "ref_logp": small_ref.tolist(), "type": "k3"},
        ("TRL k3", "kl", trl_k3(logp, small_ref)))

    proc = subprocess.run([tool], input="\n".join(json.dumps(c) for c in cases) + "\n", capture_output=True,
                          text=True, check=True)
    outputs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(outputs) == len(cases), (len(outputs), len(cases), proc.stderr)
    failures = 0
    for out, (name, key, ref) in zip(outputs, checks):
        ours = torch.tensor(out[key], dtype=torch.float64)
        err = (ours - ref.double()).abs().max().item() if ours.numel() else 0.0
        scale = max(1.0, ref.double().abs().max().item())
        if not err <= TOL * scale:
            failures += 1
            print(f"MISMATCH {name} [{key}]: max abs err {err:.3g}")
    print(f"{len(checks) - failures}/{len(checks)} checks match the references")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
