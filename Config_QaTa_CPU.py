"""QaTa-COV19 on a CPU: a recipe a 2-core machine trains in well under an hour (docs/QATA.md has its times).

The authors' data, split and test set (the whole 2113-image test split is scored), with a smaller model and a fixed
subset of the training and validation splits: 112 px inputs, ``base_channel`` 16, one decoder layer per
reconstruction stack, and a randomly initialised, frozen 2-layer text tower of width 128 (CLIP's weights cannot be
assumed on such a machine; with them, set ``clip_weights`` and the tower's shape comes from the file). The
``train_subset`` and ``val_subset`` images are the same for every seed. ``Config_QaTa`` is the full-scale recipe.
"""

from utils.config import Config

config = Config().replace(
    img_size=112,
    base_channel=16,
    clip_weights=None,
    clip_width=128,
    clip_layers=2,
    clip_heads=2,
    text_embed_dim=128,
    rec_trans_num_layers1=1,
    learning_rate=1e-3,
    batch_size=16,
    epochs=10,
    early_stopping_patience=10,
    train_subset=800,
    val_subset=300,
    check_images=False,
    # No loader workers: on 2 cores they compete with training for the cores (docs/PERFORMANCE.md).
    num_workers=0,
)
