"""Typed configuration shared by data, model, training and testing.

One frozen dataclass holds every default. The field names are the authors' (``task_name``, ``img_size``,
``base_channel``, ``token_len``, ``img_mask_rate``, ...) so that a user of their code can read and override them
as before. The dataset modules (``Config_QaTa.py`` and friends) state only what differs, through
:meth:`Config.replace`.

This module uses the standard library only: importing a config never imports torch or touches the disk.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import glob
import importlib
import importlib.util
import os
import traceback
import typing
from dataclasses import dataclass
from typing import Any, Optional, Sequence

MASK_MODES = ("dist", "topk")
LR_SCHEDULES = ("cosineLR", "exp")
GEOMETRIES = ("authors", "report", "none")
DECODER_STAGES = ("up4", "up3", "up2", "up1")
# Old field names, accepted by Config.replace (and so by --set, config modules and saved configs): the text tower
# may be a BERT-family encoder, not only CLIP.
ALIASES = {"frozen_clip": "freeze_text_tower", "clip_embed_dim": "text_embed_dim"}
# What `variant="improved"` sets (docs/LANGUAGE.md has the experiments behind each field). `variant="faithful"`
# sets the same fields back to their defaults, the authors' behaviour. Fields given with the variant, or after it
# (a config module's or the user's --set), win over it.
IMPROVED = {"geometry": "report", "interact_residual": True, "text_guide": "up4,up3", "fit_token_len": True}


class ConfigKeyError(KeyError):
    """A config key that does not exist; the message suggests the closest field names.

    A KeyError, so callers that catch KeyError keep working; printed as a sentence, not as a quoted key.
    """

    def __init__(self, unknown: Sequence[str], fields: Sequence[str]):
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            parts.append(f"{key!r}{hint}")
        message = (f"unknown config key {', '.join(parts)}; every known key, its type and meaning are in the Config "
                   "class of utils/config.py")
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Config:
    # ---- task and data -------------------------------------------------------------------------------------
    task_name: str = "Covid19"  # the authors' task name; outputs go under <output_root>/<task_name>/<model folder>/
    train_dataset: str = "datasets/Covid19/Train_Folder"  # split folders holding img/ and labelcol/
    val_dataset: str = "datasets/Covid19/Val_Folder"
    test_dataset: str = "datasets/Covid19/Test_Folder"
    # Report tables, relative to their split folder (or absolute). QaTa keeps train and val reports in one file.
    train_text: str = "Train_Val_text.xlsx"
    val_text: str = "../Train_Folder/Train_Val_text.xlsx"
    test_text: str = "Test_text.xlsx"
    # ---- data loading and augmentation (Load_Dataset.py) ------------------------------------------------------
    pairing: str = "qata"  # "qata": mask_<X>.png <-> <X>.png; "stem": image and mask share a file stem
    blur_mode: str = "rows"  # "rows": the authors' row-wise blur (a quirk); "2d": a true 2-D Gaussian blur
    num_workers: int = 2  # DataLoader worker processes
    augment: bool = True  # training augmentation: blur, photometric, geometry (docs/QUIRKS.md, A5); never val/test
    test_batch_size: int = 1  # the authors test one image at a time
    # A fixed subset of N samples of a split (0 = all), the same for every seed (Load_Dataset.fixed_subset): for
    # recipes that must fit a CPU. The test split is always scored whole.
    train_subset: int = 0
    val_subset: int = 0
    check_images: bool = True  # the pre-training data check decodes every image and mask (sizes, binary masks)
    # What one input file may cost (docs/RELIABILITY.md, "Resource limits"); raise a limit with --set.
    max_image_pixels: int = 50_000_000  # width x height of an image or mask, read from its header before decoding
    max_table_rows: int = 200_000  # rows of a report table
    # Training keeps each split's decoded, resized images and masks in memory when they take at most this many MiB
    # (utils/data/decoded.py): read once per run, not once per epoch; the same bits. 0 = off.
    decode_cache_mib: int = 1024
    max_table_mib: int = 256  # a report table's size in MiB, uncompressed (an .xlsx is a zip)
    demo_data: bool = False  # write the synthetic demo set (utils/data/demo.py) at the split folders when missing
    demo_layout: str = "fixed"  # the demo's lungs: "fixed" places (its zones are fixed boxes) or "varied" per image
    # Geometric augmentation: "authors" (rot90 + flip or a small rotation; the report is not changed), "report"
    # (only mirrors the report can follow, its left/right and upper/lower words mirrored alike), "none".
    geometry: str = "authors"

    # ---- image and text sizes ------------------------------------------------------------------------------
    img_size: int = 224  # any multiple of 16; the interaction grid is img_size // 16
    n_channels: int = 3  # input channels (BGR, as cv2 reads them)
    n_labels: int = 1  # one foreground class: the network returns one logit map
    token_len: int = 18  # CLIP context length used for the reports (10 for MoNuSeg)
    # A new training raises token_len to the longest training report in tokens (start and end included), so no
    # report is cut; the fitted value is what the session saves. The authors' 18 cuts most QaTa-COV19 reports.
    fit_token_len: bool = False
    # False: the no-language control. Every image reads one constant, empty report in training, validation and
    # test, so the same network is trained and scored without what the reports say (docs/QATA.md).
    use_report: bool = True
    pad_short_reports: bool = True  # the authors' padding: append " EOF XXX" until a report has 9 words

    # ---- network -------------------------------------------------------------------------------------------
    # The network (nets/models.py): "reclmis" (the default), or a peer for comparisons: "unet" (image-only, LViT's
    # baseline), "lvit" or "guidedecoder". Sessions go to <output_root>/<task_name>/<its folder>/ (RecLMIS, UNet,
    # LViT, GuideDecoder).
    model: str = "reclmis"
    # model="guidedecoder": ConvNeXt-Tiny's weights (transformers' save_pretrained folder of facebook/convnext-tiny-224
    # or its hub name); None = random weights, which the log and config.json then say.
    convnext_weights: Optional[str] = None
    base_channel: int = 64  # U-Net width at full resolution
    clip_weights: Optional[str] = "nets/ViT-B-32.pt"  # OpenAI archive or state dict; None = random text tower
    freeze_text_tower: bool = True  # freeze the text tower, kept in eval mode (hf: its projection still trains)
    text_encoder: str = "clip"  # the text tower (nets/text_towers.py): "clip" (the authors') or "hf", BERT-family
    hf_text_model: Optional[str] = None  # text_encoder="hf": a save_pretrained folder or a hub name; its tokenizer too
    # Shape of the randomly initialised text tower (clip_weights=None). With weights, the file decides.
    clip_width: int = 512
    clip_layers: int = 12
    clip_heads: int = 8
    text_embed_dim: int = 512  # the text tower's output width (CLIP's text_projection): every later block's
    clip_context_length: int = 77
    clip_vocab_size: int = 49408
    interact_heads: int = 4  # heads of the two cross-attentions in the interaction module
    interact_dropout: float = 0.1  # dropout of the interaction module (the authors' fixed 0.1)
    rec_heads: int = 4  # heads of the reconstruction decoders
    rec_trans_num_layers1: int = 4  # decoder layers in each stack of each reconstruction head
    rec_dropout: float = 0.1  # dropout inside the reconstruction decoder layers
    text_mask_rate: float = 0.3  # share of valid report tokens masked for language reconstruction
    img_mask_rate: float = 0.5  # share of bottleneck patches masked for vision reconstruction
    mask_mode: str = "dist"  # "dist": sample without replacement, probability ~ weight; "topk": highest weights
    mask_mode_dist_random: bool = True  # 'dist': top up with uniform picks when too few weights are positive
    dropout: bool = False  # dropout on the features fed to the words/patches-of-interest heads
    dropout_value: float = 0.3
    # ---- ways for the report to reach the decoder that the authors' model lacks (off: faithful) ---------------
    interact_residual: bool = False  # bottleneck = patch tokens + interacted patch tokens (not the latter alone)
    text_guide: str = ""  # decoder stages ("up3,up2", ...) whose output pixels attend to the report's words

    # ---- one switch for the options above and report-consistent augmentation -----------------------------------
    # "faithful": the authors' model and training; "improved": IMPROVED above, the combination that reads the
    # report best in docs/LANGUAGE.md. Setting it sets those fields; any field set with or after it wins.
    variant: str = "faithful"

    # ---- fixes of the authors' quirks (all off: faithful by default; docs/QUIRKS.md) ---------------------------
    fix_ccl_double_softmax: bool = False  # CCL uses the WOI/POI weights as they are, not softmaxed twice
    fix_detach_img_target: bool = False  # the vision reconstruction target is detached
    fix_img_causal_mask: bool = False  # no causal mask over image tokens in the reconstruction decoders
    fix_text_rec_padding: bool = False  # the language reconstruction loss ignores padded tokens

    # ---- losses --------------------------------------------------------------------------------------------
    loss_weight_seg: float = 5.0  # weight of 0.5 * Dice + 0.5 * BCE
    loss_weight_ccl: float = 0.2  # conditioned contrastive loss
    loss_weight_text_rec: float = 1.0  # conditioned language reconstruction (MSE)
    loss_weight_img_rec: float = 1.0  # conditioned vision reconstruction (MSE)
    dice_weight: float = 0.5
    bce_weight: float = 0.5

    # ---- optimisation --------------------------------------------------------------------------------------
    seed: int = 3407
    # Move every trainable weight by this many float steps after it is initialised (negative: downwards): a probe
    # of how far float rounding alone moves a seeded run's scores (docs/PERFORMANCE.md). 0 changes nothing.
    init_nudge_ulp: int = 0
    epochs: int = 2000
    batch_size: int = 32
    learning_rate: float = 3e-4
    lr: str = "cosineLR"  # schedule: "cosineLR" (warm restarts T0=10, eta_min=1e-4) or "exp" (max(0.99^e, 0.1))
    weight_decay: float = 0.0  # the authors configured 1e-5 but Adam never received it
    early_stopping_patience: int = 100

    # ---- runs ----------------------------------------------------------------------------------------------
    output_root: str = "."  # sessions go to <output_root>/<task_name>/RecLMIS/session_MM.DD_HHhMM/ (RecLMIS)
    device: str = "auto"  # "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:1", ...
    amp: bool = False  # mixed precision: fp16 autocast + gradient scaling on CUDA, bf16 autocast on CPU
    # Train with the convolutions' weights and activations in channels-last layout: faster on CPUs and GPUs
    # (docs/PERFORMANCE.md), the same weights up to float rounding.
    channels_last: bool = False
    deterministic: bool = True  # cuDNN picks fixed algorithms (the authors' setting)
    tensorboard_images: int = 4  # validation images drawn in TensorBoard each epoch
    # Every N epochs also score validation with the reports shuffled among its images (a fixed derangement) and
    # log val/dice_shuffled and val/text_gain (true minus shuffled); 0 = off. Changes no weight.
    val_text_check_every: int = 1
    # The latest checkpoint keeps Adam's moments in bf16: two thirds of its size, but a resumed run is then close
    # to the interrupted one, not bit-exact (see docs/PERFORMANCE.md).
    compact_resume: bool = False

    # Distributed training (torchrun; utils/training/distributed.py). batch_size is the global batch.
    sync_bn: bool = False  # BatchNorm statistics over the global batch instead of each process's share
    ccl_gather: bool = True  # contrastive negatives from all processes (as one process with the global batch)

    def replace(self, **changes: Any) -> "Config":
        """Return a copy with ``changes`` applied, each checked against the field's type.

        The old names in :data:`ALIASES` are accepted for their fields.

        Raises:
            KeyError: a name that is not a field; the message lists the fields.
            TypeError: a value whose type does not fit the field.
            ValueError: a value outside what the field accepts (see :meth:`validate`), or a field given under
                both its names.
        """
        changes = _resolve_aliases(changes)
        fields = field_types()
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise ConfigKeyError(unknown, fields)
        if "variant" in changes:
            changes = {**variant_fields(changes["variant"]), **changes}
        checked = {name: _check_type(name, value, fields[name]) for name, value in changes.items()}
        new = dataclasses.replace(self, **checked)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot work."""
        if self.img_size <= 0 or self.img_size % 16:
            raise ValueError(f"img_size must be a positive multiple of 16 (four 2x poolings), got {self.img_size}")
        for name in ("base_channel", "token_len", "clip_width", "clip_layers", "clip_heads", "text_embed_dim",
                     "interact_heads", "rec_heads", "rec_trans_num_layers1", "n_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.token_len < 2:
            raise ValueError(f"token_len must leave room for the start and end tokens (>= 2), got {self.token_len}")
        if self.epochs < 1 or self.batch_size < 1 or self.early_stopping_patience < 1:
            raise ValueError("epochs, batch_size and early_stopping_patience must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if (not self.task_name.strip() or self.task_name in (".", "..") or "/" in self.task_name
                or "\\" in self.task_name):
            raise ValueError(f"task_name must be a plain folder name (sessions go to <output_root>/<task_name>/), got "
                             f"{self.task_name!r}")
        if self.lr not in LR_SCHEDULES:
            raise ValueError(f"lr (the schedule) must be one of {LR_SCHEDULES}, got {self.lr!r}")
        if self.n_labels != 1:
            raise ValueError(f"n_labels must be 1 (binary segmentation), got {self.n_labels}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        for name in ("text_mask_rate", "img_mask_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("dropout_value", "rec_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        for name in ("loss_weight_seg", "loss_weight_ccl", "loss_weight_text_rec", "loss_weight_img_rec",
                     "dice_weight", "bce_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

        # ---- data loading and augmentation (Load_Dataset.py) ----
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.train_subset < 0 or self.val_subset < 0:
            raise ValueError("train_subset and val_subset must be >= 0 (0 = the whole split)")
        if self.decode_cache_mib < 0:
            raise ValueError(f"decode_cache_mib must be >= 0 (0 = off), got {self.decode_cache_mib}")
        for name in ("max_image_pixels", "max_table_rows", "max_table_mib"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.test_batch_size < 1:
            raise ValueError(f"test_batch_size must be >= 1, got {self.test_batch_size}")
        for name in ("train_dataset", "val_dataset", "test_dataset", "train_text", "val_text", "test_text"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.val_text_check_every < 0:
            raise ValueError(f"val_text_check_every must be >= 0 (0 = off), got {self.val_text_check_every}")
        self.guided_stages()

    def guided_stages(self) -> tuple:
        """The decoder stages named by ``text_guide``, in decoder order; ``ValueError`` names an unknown one."""
        names = [name.strip() for name in self.text_guide.split(",") if name.strip()]
        unknown = sorted(set(names) - set(DECODER_STAGES))
        if unknown:
            raise ValueError(f"text_guide names unknown decoder stage(s) {unknown}; use a comma-separated subset of "
                             f"{', '.join(DECODER_STAGES)} (or an empty string for none)")
        return tuple(stage for stage in DECODER_STAGES if stage in names)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Rebuild a config saved by :meth:`to_dict` (for example from a checkpoint)."""
        return cls().replace(**values)


def _resolve_aliases(changes: dict) -> dict:
    """``changes`` with each old field name (:data:`ALIASES`) replaced by the field's name."""
    resolved = {}
    for name, value in changes.items():
        field = ALIASES.get(name, name)
        if field != name and field in changes:
            raise ValueError(f"{name} is the old name of {field}: give one of them")
        resolved[field] = value
    return resolved


def variant_fields(variant: str) -> dict:
    """The fields a variant sets: ``IMPROVED`` for "improved", their defaults for "faithful"."""
    if variant == "improved":
        return dict(IMPROVED)
    if variant == "faithful":
        defaults = Config()
        return {name: getattr(defaults, name) for name in IMPROVED}
    raise ValueError(f"variant must be 'faithful' (the authors' model, the default) or 'improved', got {variant!r}")


def field_types() -> dict:
    """Map each field name of :class:`Config` to its resolved type."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    optional = typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation)
    if optional:
        if value is None:
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise TypeError(f"config key {name!r} expects True or False, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise TypeError(f"config key {name!r} expects an int, got {value!r}")
    if not isinstance(value, annotation):
        expected = annotation.__name__ + (" or None" if optional else "")
        raise TypeError(f"config key {name!r} expects {expected}, got {type(value).__name__} {value!r}")
    return value


def parse_override(item: str) -> tuple:
    """Split ``"key=value"``; the value is a Python literal (``3``, ``1e-4``, ``True``, ``None``, ``'x'``) or, when
    it is not one, the raw string (``train_dataset=/data/x/Train_Folder``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} must look like key=value")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def load_config(name: str = "Config_QaTa", overrides: Sequence[str] = ()) -> Config:
    """Load a config module and apply ``key=value`` overrides.

    Args:
        name: a module name on the path (``"Config_QaTa"``) or a file (``"path/to/Config_Mine.py"``); the module
            must define ``config``, a :class:`Config`.
        overrides: ``"key=value"`` strings, each type-checked against the field.

    Raises:
        FileNotFoundError: no such config; the message lists the config modules there are.
        KeyError, TypeError, ValueError: a bad override (see :meth:`Config.replace`).
    """
    module = _import_config(name)
    config = getattr(module, "config", None)
    if not isinstance(config, Config):
        raise TypeError(f"config module {name!r} must define `config = Config().replace(...)`")
    changes = dict(parse_override(item) for item in overrides)
    return config.replace(**changes) if changes else config


def _import_config(name: str):
    """The config module ``name`` (a module name or a ``.py`` file), imported.

    A config is user code: an error while importing it (a syntax error, a bad ``replace``, any exception) is
    reported as one ``ValueError`` naming the file and line, not as a traceback; set ``RECLMIS_DEBUG=1`` to see the
    traceback instead.
    """
    if name.endswith(".py") or "/" in name or os.sep in name:
        if os.path.isdir(name):
            raise FileNotFoundError(f"config {name!r} is a folder; give a config file (Config_Mine.py) or a module "
                                    f"name; known configs: {', '.join(known_configs())}")
        if not os.path.isfile(name):
            raise FileNotFoundError(f"config file {name!r} does not exist; known configs: {', '.join(known_configs())}")
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(name))[0], name)
        module = importlib.util.module_from_spec(spec)
        loader, path = (lambda: spec.loader.exec_module(module)), os.path.abspath(name)
    else:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a dotted name whose package is missing
            spec = None
        if spec is None:
            raise FileNotFoundError(f"unknown config {name!r}; known configs: {', '.join(known_configs())}")
        loader, path = (lambda: importlib.import_module(name)), os.path.abspath(spec.origin or name)
    try:
        imported = loader()
    except SyntaxError as error:
        if os.environ.get("RECLMIS_DEBUG"):
            raise
        raise ValueError(f"config {error.filename or path}, line {error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:  # user code may raise anything; one line that names where, unless debugging
        if os.environ.get("RECLMIS_DEBUG"):
            raise
        frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == path]
        where = f"{path}, line {frames[-1].lineno}" if frames else path
        raise ValueError(f"config {where}: {type(error).__name__}: {error} (RECLMIS_DEBUG=1 shows the traceback)"
                         ) from None
    return module if name.endswith(".py") or "/" in name or os.sep in name else imported


def known_configs() -> list:
    """Names of the ``Config_*.py`` modules beside this repository's entry points."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(root, "Config_*.py")))
