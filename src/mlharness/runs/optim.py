"""AdamW for the lm and rl trainers: torch's own update kernel without ``torch.optim.Optimizer``.

Constructing any ``torch.optim`` optimizer imports the whole ``torch._dynamo`` compiler
stack (``add_param_group`` is wrapped in ``torch._disable_dynamo``), which costs a
small CPU run about 70 MB of resident memory and a second of start-up for code it never
uses. This class keeps the parameter groups and state itself and calls the same update,
``torch.optim.adamw.adamw`` (the fused kernel where the device has one), so its steps are
bit-identical to ``torch.optim.AdamW``'s, and its ``state_dict`` has that class's format:
checkpoints load into either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim.adamw import adamw as adamw_update

# Keys of a torch.optim.AdamW param group besides "params", with the values we run with.
_GROUP_FLAGS: dict[str, Any] = {
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "decoupled_weight_decay": True,
}


class AdamW:
    """Decoupled weight decay Adam over parameter groups (``{"params", "weight_decay"}``).

    ``param_groups[i]["lr"]`` is set by the trainer before each step, as with torch.optim.
    """

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool = False,
    ) -> None:
        self.param_groups: list[dict[str, Any]] = [
            {
                "lr": lr,
                "betas": betas,
                "eps": eps,
                "weight_decay": float(group.get("weight_decay", 0.0)),
                "fused": fused,
                **_GROUP_FLAGS,
                "params": list(group["params"]),
            }
            for group in groups
        ]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def _state(self, param: Tensor, fused: bool) -> dict[str, Tensor]:
        state = self.state.get(param)
        if state is None:
            # torch keeps the step count as a float32 tensor, on the parameter's device
            # when fused; the same here so checkpoints match torch.optim.AdamW's.
            step = torch.zeros((), dtype=torch.float32, device=param.device if fused else "cpu")
            state = {
                "step": step,
                "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
            }
            self.state[param] = state
        return state

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p, group["fused"]) for p in params]
            beta1, beta2 = group["betas"]
            adamw_update(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                [s["step"] for s in states],
                fused=group["fused"],
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: parameters numbered across groups in order."""
        index: dict[Tensor, int] = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(p, len(index)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[p]: dict(s) for p, s in self.state.items() if p in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load our own or a ``torch.optim.AdamW`` state dict for the same parameter groups."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"])
            for s, g in zip(saved, self.param_groups, strict=True)
        ):
            raise ValueError(
                "the optimizer state has a different set of parameter groups than the model"
            )
        self.state = {}
        for group, saved_group in zip(self.param_groups, saved, strict=True):
            for key in ("lr", "betas", "eps", "weight_decay"):
                if key in saved_group:
                    group[key] = saved_group[key]
            for param, i in zip(group["params"], saved_group["params"], strict=True):
                if i in state_dict["state"]:
                    self.state[param] = self._loaded(state_dict["state"][i], param, group["fused"])

    @staticmethod
    def _loaded(saved: dict[str, Tensor], param: Tensor, fused: bool) -> dict[str, Tensor]:
        step_device = param.device if fused else torch.device("cpu")
        return {
            "step": saved["step"].detach().to(step_device, torch.float32, copy=True),
            "exp_avg": saved["exp_avg"].detach().to(param.device, param.dtype, copy=True),
            "exp_avg_sq": saved["exp_avg_sq"].detach().to(param.device, param.dtype, copy=True),
        }
