"""ImageToImage2D and the loaders: sample format, the authors' preprocessing, pairing, tokens, determinism."""

import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import read_rows, write_dataset, write_table

import Load_Dataset
from Load_Dataset import DatasetError, ImageToImage2D, build_dataloader, build_dataloaders
from utils.data.sampling import EpochSampler, seed_worker
from utils.data.tokenizer import ReportTokenizer


def test_sample_keys_shapes_dtypes_and_ranges(qata_set):
    ds = ImageToImage2D(qata_set, "val")
    assert len(ds) == 2 and not ds.augment
    s = ds[0]
    assert set(s) == {"image", "label", "text_token", "text_mask", "text", "name"}
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
    assert s["label"].shape == (32, 32) and s["label"].dtype == torch.int64
    assert set(s["label"].unique().tolist()) == {0, 1}
    assert s["text_token"].shape == (18,) and s["text_token"].dtype == torch.int64
    assert s["text_mask"].dtype == torch.int64 and torch.equal(s["text_mask"], (s["text_token"] != 0).long())
    assert s["text"] == "Report val 0: opacity in the upper left lung." and s["name"] == "val_0.png"
    # BGR order: the written image has blue 200 and red 30 everywhere.
    assert torch.allclose(s["image"][0], torch.tensor(200 / 255)) and torch.allclose(s["image"][2],
                                                                                     torch.tensor(30 / 255))


def test_val_sample_equals_the_authors_preprocessing(qata_set):
    ds = ImageToImage2D(qata_set, "val")
    folder = qata_set.val_dataset
    image = cv2.resize(cv2.imread(f"{folder}/img/val_1.png"), (32, 32), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(cv2.imread(f"{folder}/labelcol/mask_val_1.png", 0), (32, 32), interpolation=cv2.INTER_LINEAR)
    s = ds[1]
    assert torch.equal(s["image"], torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255)
    assert torch.equal(s["label"], torch.from_numpy((mask > 0).astype(np.int64)))


def test_stem_pairing_with_tif_images_and_csv_tables(monuseg_set):
    ds = ImageToImage2D(monuseg_set, "test")
    assert [s.image_path.name for s in ds.samples] == ["test_0.tif", "test_1.tif"]
    assert [s.mask_path.name for s in ds.samples] == ["test_0.png", "test_1.png"]
    assert ds[1]["name"] == "test_1.tif" and ds[1]["text"] == "Report test 1: opacity in the upper left lung."


def test_pairs_are_sorted_and_reports_follow_their_mask(tmp_path):
    cfg = write_dataset(tmp_path / "Covid19", "qata", counts={"train": 12, "val": 1, "test": 1})
    ds = ImageToImage2D(cfg, "train")
    masks = [s.mask_path.name for s in ds.samples]
    assert masks == sorted(masks) and masks[:3] == ["mask_train_0.png", "mask_train_1.png", "mask_train_10.png"]
    for s in ds.samples:
        assert s.image_path.name == s.mask_path.name[len("mask_"):]
        assert s.report == f"Report train {s.image_path.stem.split('_')[1]}: opacity in the upper left lung."


def _set_reports(cfg, root, reports):
    """Give the first training masks these reports."""
    table = root / "Train_Folder" / "Train_Val_text.xlsx"
    rows = read_rows(table)
    write_table(table, [(n, reports[i] if i < len(reports) else r) for i, (n, r) in enumerate(rows)])


def test_token_padding_rule(tmp_path):
    root = tmp_path / "Covid19"
    cfg = write_dataset(root, "qata")
    _set_reports(cfg, root, ["Small opacity."])
    tokenizer = ReportTokenizer(18, pad_short_reports=False)
    eof = tokenizer("EOF").tokens[0, 1].item()

    padded = ImageToImage2D(cfg, "train")[0]
    assert padded["text"] == "Small opacity."  # the raw report travels, before the padding
    assert eof in padded["text_token"].tolist() and padded["text_mask"].sum() == 18

    plain = ImageToImage2D(cfg.replace(pad_short_reports=False), "train")[0]
    n = int(plain["text_mask"].sum())
    assert torch.equal(plain["text_token"], tokenizer("Small opacity.").tokens[0])
    assert plain["text_mask"][:n].all() and not plain["text_mask"][n:].any()  # zeros after the end token
    assert plain["text_token"][n - 1] == tokenizer.eot_token_id and eof not in plain["text_token"].tolist()

    ten = ImageToImage2D(cfg.replace(token_len=10), "train")[0]
    assert ten["text_token"].shape == (10,)


def test_non_binary_mask_is_binarised_after_the_resize(tmp_path):
    root = tmp_path / "Covid19"
    cfg = write_dataset(root, "qata")
    soft = np.zeros((40, 48), np.uint8)
    soft[10:20, 10:30] = 128
    soft[12:14, 12:14] = 3
    cv2.imwrite(str(root / "Val_Folder" / "labelcol" / "mask_val_0.png"), soft)
    label = ImageToImage2D(cfg, "val")[0]["label"].numpy()
    expected = cv2.resize(soft, (32, 32), interpolation=cv2.INTER_LINEAR) > 0
    assert np.array_equal(label, expected.astype(np.int64))


def test_default_collate_batches(qata_set):
    batch = next(iter(build_dataloader(qata_set, "val")))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["label"].shape == (2, 32, 32)
    assert batch["text_token"].shape == (2, 18) and batch["text_mask"].shape == (2, 18)
    assert batch["name"] == ["val_0.png", "val_1.png"] and isinstance(batch["text"], list)
    assert build_dataloader(qata_set, "test").batch_size == 1  # the authors test one image at a time


def test_loader_settings(qata_set):
    train, val = build_dataloader(qata_set, "train"), build_dataloader(qata_set, "val", device="cpu")
    assert isinstance(train.sampler, EpochSampler) and train.sampler.shuffle and not val.sampler.shuffle
    assert train.batch_size == 2 and train.worker_init_fn is seed_worker and not val.pin_memory
    assert build_dataloader(qata_set, "val", device="cuda").pin_memory  # pinned memory only for CUDA


def test_blur_mode_and_geometry_reach_the_augmentation(qata_set, monkeypatch):
    seen = []

    def spy(image, mask, rng, blur_mode, geometry, report):
        seen.append((blur_mode, geometry))
        return image, mask, report

    monkeypatch.setattr(Load_Dataset, "train_augment", spy)
    ImageToImage2D(qata_set, "train")[0]
    ImageToImage2D(qata_set.replace(blur_mode="2d", geometry="report"), "train")[0]
    ImageToImage2D(qata_set.replace(blur_mode="2d"), "val")[0]
    assert seen == [("rows", "authors"), ("2d", "report")]


def _epochs(cfg, n_epochs=2):
    """Batches of ``n_epochs`` epochs, pointed at each epoch as the trainer does."""
    loader = build_dataloader(cfg, "train")
    epochs = []
    for epoch in range(n_epochs):
        loader.sampler.set_epoch(epoch)
        loader.dataset.set_epoch_seed(cfg.seed + epoch)
        epochs.append([(b["image"].clone(), b["label"].clone(), list(b["name"])) for b in loader])
    return epochs


def _same(run_a, run_b):
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2]
               for ea, eb in zip(run_a, run_b) for x, y in zip(ea, eb))


def test_training_augmentation_repeats_under_a_seed(qata_set):
    first, again = _epochs(qata_set), _epochs(qata_set)
    assert _same(first, again)
    assert not _same([first[0]], [first[1]])  # a new epoch draws new augmentations
    assert not _same(first, _epochs(qata_set.replace(seed=8)))


def test_worker_count_changes_nothing(qata_set):
    in_process = _epochs(qata_set.replace(num_workers=0))
    assert _same(in_process, _epochs(qata_set.replace(num_workers=2)))


def test_identical_samples_get_their_own_augmentations(qata_set, tmp_path):
    # Four copies of one sample: each index draws from its own generator, so their augmentations differ.
    folder = tmp_path / "Covid19" / "Train_Folder"
    for i in range(1, 4):
        shutil.copy(folder / "img" / "train_0.png", folder / "img" / f"train_{i}.png")
        shutil.copy(folder / "labelcol" / "mask_train_0.png", folder / "labelcol" / f"mask_train_{i}.png")
    ds = ImageToImage2D(qata_set, "train")
    copies = [ds[i]["image"] for i in range(4) if ds.samples[i].name.startswith("train_")]
    assert len(copies) == 4
    assert not all(torch.equal(copies[0], other) for other in copies[1:])


def test_augmentation_is_training_only_and_switchable(qata_set):
    train = ImageToImage2D(qata_set, "train")
    assert train.augment and not ImageToImage2D(qata_set, "val").augment
    plain = torch.from_numpy(train.load_arrays(0)[0].transpose(2, 0, 1).copy()).float() / 255
    changed = []
    for epoch in range(5):
        train.set_epoch_seed(epoch)
        changed.append(not torch.equal(train[0]["image"], plain))
    assert any(changed)
    off = ImageToImage2D(qata_set.replace(augment=False), "train")
    assert not off.augment and torch.equal(off[0]["image"], plain)


def test_bad_split_and_broken_folder_raise_dataset_error(qata_set, tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        ImageToImage2D(qata_set, "training")
    (tmp_path / "Covid19" / "Train_Folder" / "labelcol" / "mask_train_2.png").unlink()
    with pytest.raises(DatasetError, match=r"train_2\.png has no mask"):
        ImageToImage2D(qata_set, "train")


def test_build_dataloaders_runs_the_checks_first(qata_set, tmp_path):
    loaders = build_dataloaders(qata_set)
    assert set(loaders) == {"train", "val"} and len(loaders["train"].dataset) == 4
    # A zero-byte image passes the folder listing; only the decoding check catches it, before training starts.
    (tmp_path / "Covid19" / "Val_Folder" / "img" / "val_1.png").write_bytes(b"")
    ImageToImage2D(qata_set, "val")
    with pytest.raises(DatasetError, match=r"val_1\.png is empty"):
        build_dataloaders(qata_set)


def test_config_checks_the_data_fields(qata_set):
    for changes in (dict(num_workers=-1), dict(test_batch_size=0), dict(val_text=" ")):
        with pytest.raises(ValueError, match=next(iter(changes))):
            qata_set.replace(**changes)


@pytest.mark.parametrize("size", [3, 5])
def test_train_and_val_subsets_are_fixed_sorted_and_the_same_for_every_seed(tmp_path, size):
    cfg = write_dataset(tmp_path / "Covid19", "qata", counts={"train": 8, "val": 6, "test": 2})
    whole = [s.name for s in ImageToImage2D(cfg, "train").samples]
    names = [s.name for s in ImageToImage2D(cfg.replace(train_subset=size, seed=1), "train").samples]
    assert len(names) == size and names == sorted(names) and set(names) <= set(whole)
    assert names == [s.name for s in ImageToImage2D(cfg.replace(train_subset=size, seed=99), "train").samples]
    assert len(ImageToImage2D(cfg.replace(val_subset=2), "val")) == 2
    assert len(ImageToImage2D(cfg.replace(train_subset=100), "train")) == 8  # larger than the split: all of it
    assert len(ImageToImage2D(cfg.replace(train_subset=size), "test")) == 2  # the test split is always whole


def test_the_no_language_control_reads_one_empty_report_everywhere(qata_set):
    control = qata_set.replace(use_report=False)
    train, val = ImageToImage2D(control, "train"), ImageToImage2D(control, "val")
    empty = ReportTokenizer(control.token_len)([""]).tokens[0]
    for dataset in (train, val):
        assert set(dataset.reports) == {""}
        assert all(torch.equal(tokens, empty) for tokens in dataset.text_tokens)
        assert dataset[0]["text"] == ""
    swapped = Load_Dataset.ReportsSwapped(val, torch.tensor([1, 0]))
    assert swapped[0]["text"] == "" and torch.equal(swapped[0]["text_token"], empty)
    # The true reports are still there for the samples (tables, checks), and reach the network when on.
    assert ImageToImage2D(qata_set, "val")[0]["text"] == val.samples[0].report != ""


def test_fit_token_len_raises_token_len_to_the_longest_training_report(tmp_path):
    root = tmp_path / "Covid19"
    cfg = write_dataset(root, "qata")
    long = ("bilateral pulmonary infection, six infected areas, upper middle lower left lung and upper middle lower "
            "right lung.")
    _set_reports(cfg, root, [long, "short one.", "two words", "three little words"])
    tokens = int(ReportTokenizer(77, pad_short_reports=False)([long]).text_mask.sum())
    assert tokens == 22  # the most common QaTa report, which token_len 18 cuts
    fitted = Load_Dataset.fit_token_len(cfg)
    assert fitted.token_len == tokens and not ImageToImage2D(fitted, "train").words_cut.any()
    assert ImageToImage2D(cfg, "train").words_cut[0]  # 18 cuts it
    assert Load_Dataset.fit_token_len(cfg.replace(token_len=30)).token_len == 30  # never lowered


@pytest.mark.parametrize("setting, said", [
    (dict(pairing="mask_first"), "pairing must be one of ('qata', 'stem'), got 'mask_first'"),
    (dict(blur_mode="3d"), "blur_mode must be one of ('rows', '2d'), got '3d'"),
    (dict(demo_layout="random"), "demo_layout must be one of ('fixed', 'varied'), got 'random'"),
    (dict(text_encoder="bert"), "text_encoder must be one of"),
])
def test_the_data_layer_checks_its_own_choices_before_reading_anything(qata_set, setting, said):
    config = qata_set.replace(**setting)  # the config itself does not know these lists
    with pytest.raises(ValueError, match=said.replace("(", r"\(").replace(")", r"\)")):
        build_dataloaders(config)
