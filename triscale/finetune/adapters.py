"""Adapters: build the trainable model for a method, save it, load it onto a base model, swap, merge, committees.

An adapter directory holds

* ``adapter_config.json`` + ``adapter_model.safetensors`` - a standard HF PEFT LoRA adapter (method ``lora``);
* ``triscale_weights.safetensors`` - the tensors the adapter changes besides LoRA: always the per-domain
  statistics buffers (refitted E0 ...), and for ``heads``/``full`` the trained parameters themselves;
* ``triscale_adapter.json`` - metadata: method, base checkpoint (name, sha256 of its safetensors, fingerprint of its
  tensors), domain, refitted E0, data summary, metrics.

A committee directory has ``triscale_adapter.json`` with ``"committee": ["member-0", ...]`` and one adapter
directory per member; :func:`attach_adapters` expands it into its members.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from triscale.foundation.model import FoundationModel

META_FILE = "triscale_adapter.json"
WEIGHTS_FILE = "triscale_weights.safetensors"
FORMAT = "triscale-adapter"
FORMAT_VERSION = 1
BUFFERS = ("atomic_energies", "energy_scale", "energy_shift")


def unwrap(model) -> FoundationModel:
    """The :class:`FoundationModel` inside a PEFT wrapper (LoRA layers injected), or the model itself."""
    while hasattr(model, "get_base_model"):
        inner = model.get_base_model()
        if inner is model:
            break
        model = inner
    if not isinstance(model, FoundationModel):
        raise TypeError(f"{type(model).__name__} is not a TriScale FoundationModel")
    return model


def state_fingerprint(model) -> str:
    """sha256 over the names and values of the base model's tensors (parameters as float32, statistics buffers as
    float64), independent of the dtype the model currently runs in."""
    base = unwrap(model)
    digest = hashlib.sha256()
    tensors = dict(base.state_dict())
    for name in sorted(tensors):
        if "lora_" in name:
            continue
        t = tensors[name].detach().cpu()
        t = t.to(torch.float64) if name in BUFFERS else (t.to(torch.float32) if t.is_floating_point() else t)
        digest.update(name.encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def checkpoint_sha256(base_dir: str | Path) -> str | None:
    """sha256 of ``model.safetensors`` in a ``save_pretrained`` directory (None when there is none)."""
    from triscale.finetune.data import file_sha256

    return file_sha256(Path(base_dir) / "model.safetensors")


def lora_targets(model, option, domain_index: int) -> list[str]:
    """Module names LoRA adapts for a ``LoraOptions.target_modules`` value."""
    names = unwrap(model).linear_module_names()
    encoder = [n for n in names if n.startswith(("interactions.", "updates."))]
    if option == "encoder":
        return encoder
    if option == "encoder+head":
        return encoder + [n for n in names if n.startswith(f"energy_heads.{domain_index}.")]
    if option == "all":
        return names
    unknown = sorted(set(option) - set(names))
    if unknown:
        raise ValueError(f"unknown LoRA target module(s) {unknown}; the model's nn.Linear layers are {names}")
    return list(option)


def prepare_model(base: FoundationModel, method: str, domain_index: int, lora=None):
    """A deep copy of ``base`` set up for training with ``method``: only the trainable tensors require grad.

    ``lora``: LoRA options (``rank``, ``alpha``, ``dropout``, ``target_modules``) for method ``lora``.
    """
    model = copy.deepcopy(base)
    model.train()
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method == "heads":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.energy_heads[domain_index].parameters():
            p.requires_grad_(True)
        return model
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_targets(model, lora.target_modules, domain_index),
            bias="none",  # a bias on a vector-channel layer would break equivariance
        )
        return get_peft_model(model, config)
    raise ValueError(f"unknown method {method!r}; use lora, heads or full")


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The tensors an adapter must store besides LoRA: statistics buffers plus trainable non-LoRA parameters,
    named as in the plain :class:`FoundationModel` state dict."""
    base = unwrap(model)
    state = {name: getattr(base, name).detach().cpu().clone() for name in BUFFERS}
    for name, p in base.named_parameters():
        if p.requires_grad and "lora_" not in name:
            state[name] = p.detach().cpu().clone().contiguous()
    return state


def save_adapter(model, out_dir: str | Path, metadata: dict) -> Path:
    """Write an adapter directory (PEFT files for LoRA, ``triscale_weights.safetensors``, metadata JSON)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if metadata.get("method") == "lora":
        model.save_pretrained(str(out))
    save_file(trainable_state(model), str(out / WEIGHTS_FILE))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
    return out


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_metadata(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_dir}: not a TriScale adapter directory (no {META_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a TriScale adapter file (format {meta.get('format')!r})")
    return meta


def expand_adapters(adapters: str | Path | Sequence[str | Path]) -> list[Path]:
    """Adapter directories, with committee directories replaced by their members."""
    if isinstance(adapters, (str, Path)):
        adapters = [adapters]
    dirs: list[Path] = []
    for entry in adapters:
        path = Path(entry)
        meta = read_metadata(path)
        if meta.get("committee"):
            dirs.extend(path / member for member in meta["committee"])
        else:
            dirs.append(path)
    return dirs


def check_base_matches(base, meta: dict, adapter_dir: Path) -> None:
    """Refuse ``base`` when its weights are not those the adapter in ``adapter_dir`` was trained on."""
    expected = meta.get("base", {}).get("fingerprint")
    if expected and expected != state_fingerprint(base):
        raise ValueError(
            f"{adapter_dir} was trained on base model {meta['base'].get('name')!r} "
            f"(sha256 {str(meta['base'].get('sha256'))[:12]}...), but the model given has different weights; "
            "load that base model (or pass check_base=False to attach anyway)"
        )


def load_base(name_or_path: str):
    """The base model (a shipped checkpoint name or a ``save_pretrained`` directory) and its directory."""
    from triscale.foundation.checkpoints import load_checkpoint, resolve_checkpoint

    base_dir = resolve_checkpoint(name_or_path)
    return load_checkpoint(base_dir), base_dir


def _load_tensors(model, adapter_dir: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(adapter_dir / WEIGHTS_FILE))
    base = unwrap(model)
    with torch.no_grad():
        for name, value in tensors.items():
            target = base.get_parameter(name) if name not in BUFFERS else getattr(base, name)
            target.copy_(value.to(device=target.device, dtype=target.dtype))


def load_adapter(base, adapter_dir: str | Path, check_base: bool = True, name: str | None = None):
    """A new model: a copy of ``base`` with the adapter in ``adapter_dir`` applied (eval mode, frozen).

    LoRA adapters come back as a PEFT ``PeftModel`` (``merge`` it for zero overhead, ``add_adapter``/``use_adapter``
    to swap); ``heads``/``full`` adapters as a plain :class:`FoundationModel`.
    """
    adapter_dir = Path(adapter_dir)
    meta = read_metadata(adapter_dir)
    if meta.get("committee"):
        raise ValueError(f"{adapter_dir} is a committee; use attach_adapters for it")
    if meta.get("property"):
        raise ValueError(f"{adapter_dir} is a property adapter; use triscale.finetune.load_property_model")
    if check_base:
        check_base_matches(base, meta, adapter_dir)
    model = copy.deepcopy(unwrap(base))
    if meta["method"] == "lora":
        from peft import PeftModel

        name = name or adapter_dir.name or "default"
        model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name)
        model.triscale_adapters = {name: {"dir": str(adapter_dir), "meta": meta}}
    _load_tensors(model, adapter_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def add_adapter(model, adapter_dir: str | Path, name: str, check_base: bool = False):
    """Load another LoRA adapter into a ``PeftModel`` from :func:`load_adapter` (inactive until
    :func:`use_adapter`). ``check_base`` is off by default: the model given already carries an adapter's E0."""
    adapter_dir = Path(adapter_dir)
    meta = read_metadata(adapter_dir)
    if meta.get("method") != "lora" or not hasattr(model, "triscale_adapters"):
        raise ValueError("run-time swapping works between LoRA adapters loaded with load_adapter")
    model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
    model.triscale_adapters[name] = {"dir": str(adapter_dir), "meta": meta}
    return model


def use_adapter(model, name: str):
    """Make adapter ``name`` active: its LoRA weights and its statistics (E0 ...)."""
    if name not in getattr(model, "triscale_adapters", {}):
        raise KeyError(f"no adapter {name!r}; loaded: {sorted(getattr(model, 'triscale_adapters', {}))}")
    model.set_adapter(name)
    for p in model.parameters():
        p.requires_grad_(False)
    _load_tensors(model, Path(model.triscale_adapters[name]["dir"]))
    return model


def merge(model) -> FoundationModel:
    """A plain :class:`FoundationModel` with the active LoRA adapter folded into the weights (no overhead)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def attach_adapters(model, adapters: str | Path | Sequence[str | Path], check_base: bool = True, merged: bool = False):
    """``model`` with one adapter applied, or a list of adapted models (a committee) for several adapters or a
    committee directory; ``TriScaleCalculator`` averages a list and reports ``energy_std``/``forces_std``.

    The base ``model`` is not modified. ``merged=True`` folds LoRA weights in (faster inference).
    """
    dirs = expand_adapters(adapters)
    if not dirs:
        raise ValueError("no adapter directories given")
    models = [load_adapter(model, d, check_base=check_base) for d in dirs]
    if merged:
        models = [merge(m) for m in models]
    return models[0] if len(models) == 1 else models


def count_parameters(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total)}


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")
