#!/usr/bin/env -S /usr/bin/python3
"""lora_metadata_ref.py - a diffusers-style PEFT file with lora_adapter_metadata, and the
deltas diffusers + PEFT would apply, for tests/test_styles_files.c.

How diffusers writes the metadata (diffusers loaders/lora_base.py: _save_lora_weights packs
each component's LoraConfig.to_dict() with _pack_dict_with_prefix -> "unet.<field>", and
write_lora_layers stores json.dumps(metadata, indent=2, sort_keys=True) under the
safetensors metadata key "lora_adapter_metadata", beside "format": "pt"); how it reads it
(utils/peft_utils.py _load_sft_state_dict_metadata; loaders/peft.py load_lora_adapter strips
the "unet." prefix and builds LoraConfig(**metadata)). PEFT then gives each module
r = rank_pattern.get(key, r), alpha = alpha_pattern.get(key, lora_alpha), where a pattern
key matches a module name as re.match(rf"(.*\\.)?({key})$", name) (peft tuners_utils
get_pattern_key), and the update is (alpha / r) * B @ A (use_rslora: alpha / sqrt(r)).

That is written here in plain torch (no diffusers / peft on this machine), in float64 from
float32 tensors. Three modules of the test's fake U-Net (32 channels): attn1.to_q (r 4),
attn1.to_out.0 (r 2, alpha from a suffix pattern key "to_out.0"), the 3x3 conv
down_blocks.0.resnets.0.conv1 (LoCon, r 3, alpha from a full-name key); r 4, lora_alpha
8.0 otherwise. The other LoraConfig fields are present as to_dict() gives them, so the
reader meets the real layout (indent 2, floats such as 8.0, nulls, nested objects).

Writes tests/data/lora_metadata_peft.safetensors (the adapter) and
tests/data/lora_metadata_expected.safetensors ("delta.<module>" [O, I*k*k]), a few KB.
Run:  /usr/bin/python3 tests/reference/lora_metadata_ref.py
"""
import json
import os
import re
import struct

import numpy as np
import torch

torch.manual_seed(2020)
ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
MODULES = [  # name relative to the unet, out, in, kernel, rank
    (ATTN + ".to_q", 32, 32, 1, 4),
    (ATTN + ".to_out.0", 32, 32, 1, 2),
    ("down_blocks.0.resnets.0.conv1", 32, 32, 3, 3),
]
config = {  # LoraConfig(...).to_dict() fields (PEFT 0.12), values as a training script sets them
    "alpha_pattern": {"to_out.0": 3.0, "down_blocks.0.resnets.0.conv1": 1.5},
    "auto_mapping": None,
    "base_model_name_or_path": None,
    "bias": "none",
    "fan_in_fan_out": False,
    "inference_mode": False,
    "init_lora_weights": "gaussian",
    "layer_replication": None,
    "layers_pattern": None,
    "layers_to_transform": None,
    "lora_alpha": 8.0,
    "lora_dropout": 0.0,
    "megatron_config": None,
    "megatron_core": "megatron.core",
    "modules_to_save": None,
    "peft_type": "LORA",
    "r": 4,
    "rank_pattern": {"to_out.0": 2, "down_blocks.0.resnets.0.conv1": 3},
    "revision": None,
    "runtime_config": {"ephemeral_gpu_offload": False},
    "target_modules": ["to_q", "to_out.0", "conv1"],
    "task_type": None,
    "use_dora": False,
    "use_rslora": False,
}


def pattern(patterns, name, default):
    for key, v in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return v
    return default


adapter, expected = {}, {}
for name, O, I, k, r in MODULES:
    assert pattern(config["rank_pattern"], name, config["r"]) == r
    alpha = pattern(config["alpha_pattern"], name, config["lora_alpha"])
    A = torch.randn(r, I, k, k) * 0.3 if k > 1 else torch.randn(r, I) * 0.3
    B = torch.randn(O, r, 1, 1) * 0.2 if k > 1 else torch.randn(O, r) * 0.2
    adapter[f"unet.{name}.lora_A.weight"] = A
    adapter[f"unet.{name}.lora_B.weight"] = B
    delta = (alpha / r) * (B.double().reshape(O, r) @ A.double().reshape(r, I * k * k))
    expected[f"delta.unet.{name}"] = delta


def save(path, tensors, metadata=None):
    header, off, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name].to(torch.float32).numpy(), dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)


packed = {f"unet.{key}": value for key, value in config.items()}  # _pack_dict_with_prefix
meta = {"format": "pt", "lora_adapter_metadata": json.dumps(packed, indent=2, sort_keys=True)}
data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
save(os.path.join(data, "lora_metadata_peft.safetensors"), adapter, meta)
save(os.path.join(data, "lora_metadata_expected.safetensors"), expected)
print("wrote", os.path.normpath(data), len(adapter), "adapter tensors,", len(expected), "deltas")
