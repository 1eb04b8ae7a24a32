"""MosMedData+ (the authors' task ``MosMedplus``): what differs from the QaTa base (docs/QUIRKS.md, A10)."""

from utils.config import Config

config = Config().replace(
    task_name="MosMedplus",
    train_dataset="datasets/MosMedplus/Train_Folder",
    val_dataset="datasets/MosMedplus/Val_Folder",
    test_dataset="datasets/MosMedplus/Test_Folder",
    train_text="Train_text.xlsx",
    val_text="Val_text.xlsx",
    test_text="Test_text.xlsx",
    pairing="stem",
    lr="exp",
    epochs=400,
    early_stopping_patience=30,
    batch_size=20,
    img_mask_rate=0.3,
    rec_trans_num_layers1=3,
    dropout=True,
    dropout_value=0.5,
)
