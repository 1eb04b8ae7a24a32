"""MoNuSeg: what differs from the QaTa base (docs/QUIRKS.md, A10)."""

from utils.config import Config

config = Config().replace(
    task_name="MoNuSeg",
    train_dataset="datasets/MoNuSeg/Train_Folder",
    val_dataset="datasets/MoNuSeg/Val_Folder",
    test_dataset="datasets/MoNuSeg/Test_Folder",
    train_text="Train_text.xlsx",
    val_text="Val_text.xlsx",
    test_text="Test_text.xlsx",
    pairing="stem",
    learning_rate=1e-3,
    early_stopping_patience=50,
    batch_size=24,
    token_len=10,
    rec_trans_num_layers1=3,
    dropout=True,
    dropout_value=0.5,
)
