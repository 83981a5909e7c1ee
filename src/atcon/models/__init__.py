"""Model zoo: the paper's networks with a task head, small CPU-friendly variants, torchvision and timm.

``build_model(name, num_classes, weights)`` returns a classifier producing ``(B, num_classes)``
logits (Inception-v3 returns ``InceptionOutputs`` in train mode when it has its auxiliary head).
Names are:

* the curated :data:`MODELS` (``resnet18``, ``resnet50``, ``inception_v3``, ``r3d_18``, ``small``,
  ``small3d``);
* any other torchvision classification or video model by its torchvision name
  (``efficientnet_b0``, ``convnext_tiny``, ``mobilenet_v3_small``, ``vit_b_16``, ``swin_t``,
  ``r2plus1d_18``, ...);
* ``timm:NAME`` for any timm model (``timm:efficientnet_b0``, ``timm:convnext_atto``,
  ``timm:vit_small_patch16_224``; needs ``pip install atcon[timm]``). Vision Transformers are
  built with ``dynamic_img_size=True`` where timm offers it, so they take any input size (the
  position embedding is interpolated), as CPU-sized training needs.

Weights are one of:

* ``None`` / ``"none"``: random initialisation;
* a torchvision weights name (``"IMAGENET1K_V2"``, ``"KINETICS400_V1"``, ``"DEFAULT"``), or for
  ``timm:`` models a timm pretrained tag (``"in1k"``, ``"augreg_in21k_ft_in1k"``; ``"DEFAULT"``
  for timm's default tag), downloaded when the machine is online; the head is replaced afterwards;
* a path to a checkpoint file: an atcon checkpoint (``{"model": state_dict, ...}``), a plain
  state dict, or a ``.safetensors`` file (timm's Hugging Face files included). Files are read
  with ``torch.load(weights_only=True)``: no arbitrary object is ever unpickled. A file written
  for another implementation of the same network (other names, same order) is renamed first with
  :func:`convert_in_order`.
"""

from atcon.models.blocks import cascade_blocks, randomized_copy, reinitialize
from atcon.models.convert import convert_in_order, rename_in_order
from atcon.models.small import SmallResNet
from atcon.models.zoo import (
    MODELS,
    ModelSpec,
    WeightsDownloadError,
    build_model,
    head_names,
    load_state_dict_file,
    model_preprocess,
    model_spec,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "SmallResNet",
    "WeightsDownloadError",
    "build_model",
    "cascade_blocks",
    "convert_in_order",
    "head_names",
    "load_state_dict_file",
    "model_preprocess",
    "model_spec",
    "randomized_copy",
    "reinitialize",
    "rename_in_order",
]
