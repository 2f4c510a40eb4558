# SPDX-License-Identifier: MIT
"""An MoE layer end to end with torch and moescatter, checked against the
same layer computed densely.

    router -> top-k -> moescatter.scatter -> one MLP per expert on its rows
           -> moescatter.gather (weighted sum) onto the shared expert's output

Runs on CUDA when torch sees a GPU (and the library's CUDA backend can
run), else on the CPU:  python3 moe_layer.py [--device cpu|cuda]
"""
import argparse
import sys

import torch
import torch.nn.functional as F

import moescatter


class MoELayer(torch.nn.Module):
    def __init__(self, hidden, ffn, num_experts, top_k, dtype, device):
        super().__init__()
        g = torch.Generator().manual_seed(0)

        def param(*shape):
            w = torch.randn(*shape, generator=g) / shape[0] ** 0.5
            return torch.nn.Parameter(w.to(dtype).to(device),
                                      requires_grad=False)

        self.top_k = top_k
        self.num_experts = num_experts
        self.gate = param(hidden, num_experts)
        self.w_up = param(num_experts, hidden, ffn)
        self.w_down = param(num_experts, ffn, hidden)
        self.shared_up = param(hidden, ffn)
        self.shared_down = param(ffn, hidden)

    def route(self, x):
        logits = x.float() @ self.gate.float()
        weights, ids = torch.topk(logits.softmax(-1), self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        return ids.to(torch.int32), weights.float()

    def shared(self, x):
        return F.silu(x @ self.shared_up) @ self.shared_down

    def forward(self, x):
        ids, weights = self.route(x)
        # Each expert's rows contiguous, 16-row aligned; the default
        # capacity is a bound known from the shapes, so nothing waits here.
        r = moescatter.scatter(x, ids, self.num_experts, alignment=16)
        y = torch.empty_like(r.out)
        # A grouped GEMM would take r.out and r.m_indices in one launch;
        # a loop over the experts shows the layout.
        starts = r.expert_start.tolist()
        counts = r.counts.tolist()
        for e in range(self.num_experts):
            rows = slice(starts[e], starts[e] + counts[e])
            if counts[e]:
                y[rows] = F.silu(r.out[rows] @ self.w_up[e]) @ self.w_down[e]
        # The routed experts' weighted sum, added onto the shared expert.
        out = self.shared(x)
        moescatter.gather(y, r.out_index, weights, out=out, accumulate=True)
        return out

    def dense_reference(self, x):
        """The same layer without moescatter: every (token, choice) on its
        own, in fp32."""
        ids, weights = self.route(x)
        xf = x.float()
        out = (F.silu(xf @ self.shared_up.float()) @
               self.shared_down.float())
        for t in range(x.shape[0]):
            for k in range(self.top_k):
                e = int(ids[t, k])
                h = F.silu(xf[t] @ self.w_up[e].float()) @ \
                    self.w_down[e].float()
                out[t] += weights[t, k] * h
        return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--tokens", type=int, default=48)
    args = p.parse_args()
    device = args.device
    if device is None:
        device = "cpu"
        if torch.cuda.is_available():
            try:
                moescatter.backend_info("cuda")
                device = "cuda"
            except moescatter.Error:
                pass
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    layer = MoELayer(hidden=256, ffn=128, num_experts=8, top_k=2,
                     dtype=dtype, device=device)
    x = torch.randn(args.tokens, 256, generator=torch.Generator()
                    .manual_seed(1)).to(dtype).to(device)
    out = layer(x)
    moescatter.synchronize()  # CUDA: any error in the data shows here
    want = layer.dense_reference(x)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    err = (out.float() - want).abs().max().item()
    scale = want.abs().max().item()
    print("moe_layer on %s (%s): %d tokens, max |error| %.3g of %.3g"
          % (device, moescatter.backend_info(device)["backend"], x.shape[0],
             err, scale))
    if not torch.allclose(out.float(), want, rtol=tol, atol=tol * scale):
        print("moe_layer: the layer differs from its dense reference",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
