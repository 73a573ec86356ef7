"""Fine-tuning: start a new model from the weights of a trained one (``--init``).

``marsam train student|teacher --init CHECKPOINT|pretrained:NAME`` builds the network as usual,
then copies in every layer of the source checkpoint whose name and shape match. When the label
spec differs (other classes, or another number of them), the class head (and the aleatoric
head) starts fresh, so a model trained on AI4Mars can start a HiRISE-pits model with all of its
features kept. A source of another architecture, or one where nothing but the head would fit,
(less than half of the body's weights fit, e.g. another base width) is refused rather than
silently training from scratch.

Fine-tuning should move the weights less than training from scratch, so the command line uses
a learning rate ten times lower than the profile's when ``--lr`` is not given
(:data:`FINE_TUNE_LR_FACTOR`).
"""
from __future__ import annotations

from torch import nn

from segmodels.checkpoints import Checkpoint, load_checkpoint
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec

PRETRAINED_PREFIX = "pretrained:"
FINE_TUNE_LR_FACTOR = 0.1
HEADS = ("head.", "log_var_head.")


def load_init_checkpoint(source: str | Checkpoint) -> Checkpoint:
    """``pretrained:NAME`` -> the shipped model NAME; a path -> that marsam checkpoint."""
    if isinstance(source, Checkpoint):
        return source
    text = str(source)
    if text.startswith(PRETRAINED_PREFIX):
        from .pretrained import load_pretrained
        return load_pretrained(text[len(PRETRAINED_PREFIX):])
    return load_checkpoint(text)


def init_from_checkpoint(model: nn.Module, source: str | Checkpoint, label_spec: LabelSpec) -> dict:
    """Copy the matching layers of ``source`` into ``model`` (in place); a summary for the run's
    training metadata: where the weights came from, how many tensors were kept, which are new."""
    ckpt = load_init_checkpoint(source)
    name = getattr(model, "model_name", type(model).__name__)
    if ckpt.model_name != name:
        raise MarsamError(f"--init {source} is a {ckpt.model_name} checkpoint but this run trains a {name}; "
                          f"fine-tune a {ckpt.model_name} from it (or give a {name} checkpoint)")
    same_spec = list(ckpt.label_spec.classes) == list(label_spec.classes)
    src = ckpt.model.state_dict()
    dst = model.state_dict()
    kept, new = [], []
    for key, value in dst.items():
        fresh_head = not same_spec and key.startswith(HEADS)
        if not fresh_head and key in src and src[key].shape == value.shape:
            dst[key] = src[key].to(value.dtype)
            kept.append(key)
        else:
            new.append(key)
    body = [k for k, _ in model.named_parameters() if not k.startswith(HEADS)]
    if sum(k in kept for k in body) * 2 < len(body):   # less than half the body fits: not this model
        raise MarsamError(f"no layer of {source} fits this {name} (it was built with {ckpt.model_args}, this run "
                          f"with {model.config() if hasattr(model, 'config') else '?'}); set the same base width "
                          "(--student-base / --teacher-base) as the checkpoint, or train from scratch")
    model.load_state_dict(dst)
    return {"source": str(ckpt.path or source), "model": ckpt.model_name,
            "source_labels": ckpt.label_spec.name, "new_head": not same_spec,
            "kept_tensors": len(kept), "new_tensors": len(new), "new": new[:20]}
