"""distill: datasets, teacher / domain-decoder / student training, distillation and evaluation.

The public API (what the CLI, the demo and the napari plugin call)::

    open_dataset(source, split="train", size=256, channels=1, augment=False, label_spec=None,
                 limit=None, seed=0, progress=False, mixed_sizes=False) -> SegmentationDataset
    TrainConfig, load_config(profile_or_yaml="cpu", overrides=None) -> TrainConfig
    train_teacher(config, out_dir, progress=None, should_stop=None, train_data=None, val_data=None) -> TrainResult
    train_decoder(config, out_dir, sam_model, progress=None, should_stop=None, train_data=None,
                  val_data=None, cache=None) -> TrainResult
    train_student(config, out_dir, teacher=None, decoder=None, sam_model=None, progress=None,
                  should_stop=None, train_data=None, val_data=None) -> TrainResult
    evaluate(checkpoint_or_model, dataset, batch_size=8, device=None, speed=True, sam_model=None) -> dict
    write_evaluation(result, json_path, label_spec) -> dict of written paths
    label_efficiency(config, out_dir, model="decoder", ns=None, sam_model=None, teacher=None) -> dict
    load_pretrained(name="ai4mars-student") -> segmodels Checkpoint; list_pretrained()

``progress(epoch, total, metrics)`` is called after every epoch and ``should_stop()`` is polled
after every batch, so a GUI worker can show progress and cancel; a cancelled run still leaves
``last.safetensors`` (and ``best.safetensors``) in ``out_dir``.
"""
from .config import TrainConfig, load_config
from .data import SegmentationDataset, open_dataset
from .decoder import train_decoder
from .evaluate import evaluate, write_evaluation
from .experiments import label_efficiency
from .pretrained import list_pretrained, load_pretrained
from .student import train_student
from .teacher import train_teacher
from .train_loop import TrainResult

__all__ = ["TrainConfig", "load_config", "SegmentationDataset", "open_dataset", "evaluate", "write_evaluation",
           "list_pretrained", "load_pretrained", "TrainResult", "train_teacher", "train_student",
           "train_decoder", "label_efficiency"]
