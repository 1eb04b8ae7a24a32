"""The synthetic demo set (utils/demo_data.py): trains on a CPU with nothing downloaded.

The set is written to datasets/Demo when it is missing (``demo_data=True``), in the QaTa-COV19 layout, so the
base config's tables and pairing apply. The CLIP text tower is randomly initialised (no weights to download).
"""

from utils.config import Config

config = Config().replace(
    task_name="Demo",
    train_dataset="datasets/Demo/Train_Folder",
    val_dataset="datasets/Demo/Val_Folder",
    test_dataset="datasets/Demo/Test_Folder",
    demo_data=True,
    clip_weights=None,
    epochs=20,
    early_stopping_patience=10,
    batch_size=8,
)
