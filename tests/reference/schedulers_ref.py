#!/usr/bin/env -S /usr/bin/python3
"""schedulers_ref.py - independent torch/numpy reference for pipeline/schedule.c + sampler.c.

Re-implements, from reading diffusers 0.30's scheduling_ddim.py, scheduling_euler_discrete.py,
scheduling_euler_ancestral_discrete.py and scheduling_dpmsolver_multistep.py (diffusers itself
is not installed here), the beta tables, set_timesteps, scale_model_input and step, with the
same torch float32 / numpy float64 mix those files use. Runs every sampler on a tiny [1,4,4,4]
latent with a fixed fake model (model_out = table[i] + 0.1 * scaled_input) and fixed noise,
and writes tests/data/schedulers_golden.safetensors:

  acp.<schedule>                       alphas_cumprod of several beta configs (F32 [1000])
  model.table [16,64], noise.init [64], noise.steps [16,64]
  case/<name>/timesteps [S], case/<name>/sigmas [S+1] (sigma samplers),
  case/<name>/init_noise_sigma [1], case/<name>/latents [S,64] (after each step)
  train.*                              add_noise, velocity, SNR and min-SNR-5 weights at 5 timesteps
  metadata "cases": comma-separated names sampler/sigmas/prediction/spacing/steps[/zsnr]
  (zsnr: rescale_betas_zero_snr)

Run: /usr/bin/python3 tests/reference/schedulers_ref.py   (from the repo root)
"""
import json
import math
import os
import struct

import numpy as np
import torch

T = 1000
CFG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
           set_alpha_to_one=False, clip_sample=False)


# ---------------------------------------------------------------- beta tables
def betas_for_alpha_bar(n, max_beta=0.999):
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = []
    for i in range(n):
        t1 = i / n
        t2 = (i + 1) / n
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return torch.tensor(betas, dtype=torch.float32)


def rescale_zero_terminal_snr(betas):
    alphas = 1.0 - betas
    acp = torch.cumprod(alphas, dim=0)
    s = acp.sqrt()
    s0 = s[0].clone()
    sT = s[-1].clone()
    s -= sT
    s *= s0 / (s0 - sT)
    ab = s ** 2
    alphas = ab[1:] / ab[:-1]
    alphas = torch.cat([ab[0:1], alphas])
    return 1 - alphas


def make_betas(beta_start, beta_end, beta_schedule, rescale=False, n=T):
    if beta_schedule == "linear":
        b = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        b = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        b = betas_for_alpha_bar(n)
    else:
        raise ValueError(beta_schedule)
    if rescale:
        b = rescale_zero_terminal_snr(b)
    return b


def acp_of(betas):
    return torch.cumprod(1.0 - betas, dim=0)


# ---------------------------------------------------------------- timesteps
def spacing_timesteps(kind, spacing, n, steps_offset):
    """Timesteps as each scheduler's set_timesteps makes them."""
    if kind == "ddim":
        if spacing == "linspace":
            ts = np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
        elif spacing == "leading":
            r = T // n
            ts = (np.arange(0, n) * r).round()[::-1].copy().astype(np.int64)
            ts += steps_offset
        else:
            r = T / n
            ts = np.round(np.arange(T, 0, -r)).astype(np.int64)
            ts -= 1
        return ts
    if kind in ("euler", "euler_a"):
        if spacing == "linspace":
            ts = np.linspace(0, T - 1, n, dtype=np.float32)[::-1].copy()
        elif spacing == "leading":
            r = T // n
            ts = (np.arange(0, n) * r).round()[::-1].copy().astype(np.float32)
            ts += steps_offset
        else:
            r = T / n
            ts = (np.arange(T, 0, -r)).round().copy().astype(np.float32)
            ts -= 1
        return ts
    # dpm multistep (lambda_min_clipped = -inf -> last_timestep = T)
    last = T
    if spacing == "linspace":
        ts = np.linspace(0, last - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
    elif spacing == "leading":
        r = last // (n + 1)
        ts = (np.arange(0, n + 1) * r).round()[::-1][:-1].copy().astype(np.int64)
        ts += steps_offset
    else:
        r = T / n
        ts = np.arange(last, 0, -r).round().copy().astype(np.int64)
        ts -= 1
    return ts


def convert_to_karras(in_sigmas, n):
    sigma_min = in_sigmas[-1].item()
    sigma_max = in_sigmas[0].item()
    rho = 7.0
    ramp = np.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def sigma_to_t(sigma, log_sigmas):
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low = log_sigmas[low_idx]
    high = log_sigmas[high_idx]
    w = (low - log_sigma) / (low - high)
    w = np.clip(w, 0, 1)
    t = (1 - w) * low_idx + w * high_idx
    return t.reshape(np.shape(sigma))


class Sampler:
    def __init__(self, kind, karras, pred, spacing, n, eta=0.0, zsnr=False):
        self.kind, self.karras, self.pred, self.spacing, self.n, self.eta = kind, karras, pred, spacing, n, eta
        betas = make_betas(CFG["beta_start"], CFG["beta_end"], CFG["beta_schedule"], zsnr)
        self.acp = acp_of(betas)
        if zsnr and kind != "ddim":
            self.acp[-1] = 2 ** -24  # Euler / DPM: keep the first sigma finite
        self.final_acp = torch.tensor(1.0) if CFG["set_alpha_to_one"] else self.acp[0]
        ts = spacing_timesteps(kind, spacing, n, CFG["steps_offset"])
        self.sigmas = None
        self.init_noise_sigma = 1.0
        if kind != "ddim":
            sig = np.array(((1 - self.acp) / self.acp) ** 0.5)
            log_sigmas = np.log(sig)
            if kind == "dpmpp_2m":
                if karras:
                    s = np.flip(sig).copy()
                    s = convert_to_karras(s, n)
                    ts = np.array([sigma_to_t(x, log_sigmas) for x in s]).round()
                else:
                    s = np.interp(ts, np.arange(0, len(sig)), sig)
                s = np.concatenate([s, [0]]).astype(np.float32)
                ts = torch.from_numpy(ts).to(dtype=torch.int64).numpy()
            else:
                s = np.interp(ts, np.arange(0, len(sig)), sig)
                if karras:
                    s = convert_to_karras(s, n)
                    ts = np.array([sigma_to_t(x, log_sigmas) for x in s])
                s = np.concatenate([s, [0.0]]).astype(np.float32)
                ts = ts.astype(np.float32)
            self.sigmas = torch.from_numpy(s)
            if kind in ("euler", "euler_a"):
                mx = self.sigmas.max()
                self.init_noise_sigma = mx if spacing in ("linspace", "trailing") else (mx ** 2 + 1) ** 0.5
        self.timesteps = ts
        self.model_outputs = [None, None]
        self.lower_order_nums = 0

    def scale_model_input(self, x, i):
        if self.kind in ("euler", "euler_a"):
            sigma = self.sigmas[i]
            return x / ((sigma ** 2 + 1) ** 0.5)
        return x

    def step(self, mo, i, x, noise):
        return getattr(self, "step_" + self.kind)(mo, i, x, noise)

    def step_ddim(self, mo, i, x, noise):
        t = int(self.timesteps[i])
        prev_t = t - T // self.n
        a_t = self.acp[t]
        a_p = self.acp[prev_t] if prev_t >= 0 else self.final_acp
        b_t = 1 - a_t
        if self.pred == "epsilon":
            x0 = (x - b_t ** 0.5 * mo) / a_t ** 0.5
            eps = mo
        elif self.pred == "sample":
            x0 = mo
            eps = (x - a_t ** 0.5 * x0) / b_t ** 0.5
        else:
            x0 = (a_t ** 0.5) * x - (b_t ** 0.5) * mo
            eps = (a_t ** 0.5) * mo + (b_t ** 0.5) * x
        b_p = 1 - a_p
        variance = (b_p / b_t) * (1 - a_t / a_p)
        std = self.eta * variance ** 0.5
        direction = (1 - a_p - std ** 2) ** 0.5 * eps
        prev = a_p ** 0.5 * x0 + direction
        if self.eta > 0:
            prev = prev + std * noise
        return prev

    def _x0_euler(self, mo, x, sigma):
        if self.pred == "epsilon":
            return x - sigma * mo
        if self.pred == "v_prediction":
            return mo * (-sigma / (sigma ** 2 + 1) ** 0.5) + (x / (sigma ** 2 + 1))
        return mo

    def step_euler(self, mo, i, x, noise):
        sigma = self.sigmas[i]
        sigma_hat = sigma * (0.0 + 1)
        x0 = self._x0_euler(mo, x, sigma_hat if self.pred == "epsilon" else sigma)
        d = (x - x0) / sigma_hat
        dt = self.sigmas[i + 1] - sigma_hat
        return x + d * dt

    def step_euler_a(self, mo, i, x, noise):
        sigma = self.sigmas[i]
        x0 = self._x0_euler(mo, x, sigma)
        sf, st = self.sigmas[i], self.sigmas[i + 1]
        up = (st ** 2 * (sf ** 2 - st ** 2) / sf ** 2) ** 0.5
        down = (st ** 2 - up ** 2) ** 0.5
        d = (x - x0) / sigma
        dt = down - sigma
        prev = x + d * dt
        return prev + noise * up

    @staticmethod
    def _alpha_sigma(sigma):
        alpha_t = 1 / ((sigma ** 2 + 1) ** 0.5)
        return alpha_t, sigma * alpha_t

    def step_dpmpp_2m(self, mo, i, x, noise):
        n = len(self.timesteps)
        lower_order_final = i == n - 1  # final_sigmas_type "zero"
        a, s = self._alpha_sigma(self.sigmas[i])
        if self.pred == "epsilon":
            x0 = (x - s * mo) / a
        elif self.pred == "sample":
            x0 = mo
        else:
            x0 = a * x - s * mo
        self.model_outputs[0] = self.model_outputs[1]
        self.model_outputs[1] = x0
        a_t, s_t = self._alpha_sigma(self.sigmas[i + 1])
        a_s0, s_s0 = self._alpha_sigma(self.sigmas[i])
        lam_t = torch.log(a_t) - torch.log(s_t)
        lam_s0 = torch.log(a_s0) - torch.log(s_s0)
        h = lam_t - lam_s0
        if self.lower_order_nums < 1 or lower_order_final:
            prev = (s_t / s_s0) * x - (a_t * (torch.exp(-h) - 1.0)) * x0
        else:
            a_s1, s_s1 = self._alpha_sigma(self.sigmas[i - 1])
            lam_s1 = torch.log(a_s1) - torch.log(s_s1)
            m0, m1 = self.model_outputs[1], self.model_outputs[0]
            h0 = lam_s0 - lam_s1
            r0 = h0 / h
            D0, D1 = m0, (1.0 / r0) * (m0 - m1)
            prev = (s_t / s_s0) * x - (a_t * (torch.exp(-h) - 1.0)) * D0 - 0.5 * (a_t * (torch.exp(-h) - 1.0)) * D1
        if self.lower_order_nums < 2:
            self.lower_order_nums += 1
        return prev


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, off = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[a.dtype]
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "data", "schedulers_golden.safetensors")
    g = torch.Generator().manual_seed(1234)
    N, MAXS = 64, 16
    table = (torch.randn(MAXS, N, generator=g) * 0.8).float()
    noise0 = torch.randn(N, generator=g).float()
    noises = torch.randn(MAXS, N, generator=g).float()
    tensors = {"model.table": table.numpy(), "noise.init": noise0.numpy(), "noise.steps": noises.numpy()}

    for name, (b0, b1, sch, rs) in {
        "linear": (0.0001, 0.02, "linear", False),
        "scaled_linear": (0.00085, 0.012, "scaled_linear", False),
        "squaredcos_cap_v2": (0.0001, 0.02, "squaredcos_cap_v2", False),
        "scaled_linear_zsnr": (0.00085, 0.012, "scaled_linear", True),
    }.items():
        tensors["acp." + name] = acp_of(make_betas(b0, b1, sch, rs)).numpy()

    # training side (DDPMScheduler.add_noise / get_velocity, training_utils.compute_snr, min-SNR weights)
    acp = acp_of(make_betas(0.00085, 0.012, "scaled_linear"))
    tt = torch.tensor([0, 1, 250, 500, 999], dtype=torch.int64)
    x0 = torch.randn(5, N, generator=g).float()
    ep = torch.randn(5, N, generator=g).float()
    sa = (acp[tt] ** 0.5).flatten().unsqueeze(-1)
    sb = ((1 - acp[tt]) ** 0.5).flatten().unsqueeze(-1)
    alpha, sigma = (acp ** 0.5)[tt].float(), ((1.0 - acp) ** 0.5)[tt].float()
    snr = (alpha / sigma) ** 2
    w = torch.stack([snr, 5.0 * torch.ones_like(tt)], dim=1).min(dim=1)[0]
    tensors.update({"train.t": tt.numpy(), "train.x0": x0.numpy(), "train.eps": ep.numpy(),
                    "train.noisy": (sa * x0 + sb * ep).numpy(), "train.velocity": (sa * ep - sb * x0).numpy(),
                    "train.snr": snr.numpy(), "train.minsnr5_eps": (w / snr).numpy(),
                    "train.minsnr5_v": (w / (snr + 1)).numpy()})

    samplers = [("ddim", "default", 0.0), ("ddim_eta0.5", "default", 0.5), ("euler", "default", 0.0),
                ("euler", "karras", 0.0), ("euler_a", "default", 0.0), ("dpmpp_2m", "default", 0.0),
                ("dpmpp_2m", "karras", 0.0)]
    cases = []
    for sname, sig, eta in samplers:
        for pred in ("epsilon", "v_prediction"):
            for spacing in ("leading", "trailing", "linspace"):
                cases.append((sname, sig, pred, spacing, 10, eta))
    # extra: sample prediction, odd step counts (fractional linspace timesteps,
    # half-way rounding in trailing with 16 steps, < 15-step DPM final handling)
    for sname, sig, eta in [("ddim", "default", 0.0), ("euler", "default", 0.0), ("dpmpp_2m", "default", 0.0),
                            ("dpmpp_2m", "karras", 0.0)]:
        cases.append((sname, sig, "sample", "leading", 10, eta))
    for sname, sig, eta in samplers:
        cases.append((sname, sig, "epsilon", "linspace", 7, eta))
        cases.append((sname, sig, "epsilon", "trailing", 16, eta))
    # zero terminal SNR (rescale_betas_zero_snr), the way it is used: v_prediction + trailing
    for sname, sig, eta in samplers:
        cases.append((sname, sig, "v_prediction", "trailing", 10, eta, True))

    names = []
    for case in cases:
        sname, sig, pred, spacing, n, eta = case[:6]
        zsnr = len(case) > 6
        kind = "ddim" if sname.startswith("ddim") else sname
        smp = Sampler(kind, sig == "karras", pred, spacing, n, eta, zsnr)
        x = noise0.reshape(1, 4, 4, 4) * smp.init_noise_sigma
        lat = []
        for i in range(n):
            xin = smp.scale_model_input(x, i)
            mo = table[i].reshape(1, 4, 4, 4) + 0.1 * xin
            x = smp.step(mo, i, x, noises[i].reshape(1, 4, 4, 4))
            lat.append(x.reshape(-1).numpy().copy())
        name = f"{sname}/{sig}/{pred}/{spacing}/{n}" + ("/zsnr" if zsnr else "")
        names.append(name)
        p = "case/" + name + "/"
        tensors[p + "timesteps"] = np.asarray(smp.timesteps).astype(np.float32)
        if smp.sigmas is not None:
            tensors[p + "sigmas"] = smp.sigmas.numpy().astype(np.float32)
        tensors[p + "init_noise_sigma"] = np.array([float(smp.init_noise_sigma)], dtype=np.float32)
        tensors[p + "latents"] = np.stack(lat).astype(np.float32)
    write_safetensors(out, tensors, {"cases": ",".join(names), "source": "tests/reference/schedulers_ref.py",
                                     "torch": torch.__version__, "numpy": np.__version__})
    print(f"wrote {out}: {len(names)} cases, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
