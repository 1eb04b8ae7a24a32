"""Config: typed overrides, clear errors for unknown keys and configs, the dataset modules' values."""

import pytest

from utils.config import Config, load_config, parse_override


def test_overrides_are_parsed_and_type_checked():
    config = load_config("Config_QaTa", ["epochs=3", "img_size=96", "base_channel=16",
                                         "train_dataset=/data/x/Train_Folder", "clip_weights=None",
                                         "learning_rate=1"])
    assert (config.epochs, config.img_size, config.base_channel) == (3, 96, 16)
    assert config.train_dataset == "/data/x/Train_Folder" and config.clip_weights is None
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)


@pytest.mark.parametrize("item,error,fragment", [
    ("freeze_text_tower=1", TypeError, "True or False"),
    ("mask_mode='random'", ValueError, "mask_mode"),
    ("epochs", ValueError, "key=value"),
])
def test_bad_overrides_raise_clear_errors(item, error, fragment):
    with pytest.raises(error, match=fragment):
        load_config("Config_QaTa", [item])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(str(tmp_path / "Config_Mine.py"))


def test_config_from_a_file_path(tmp_path):
    path = tmp_path / "Config_Mine.py"
    path.write_text("from utils.config import Config\nconfig = Config().replace(epochs=7)\n")
    assert load_config(str(path)).epochs == 7


def test_dataset_configs_carry_the_authors_values():
    qata, mosmed, monuseg = (load_config(n) for n in ("Config_QaTa", "Config_MosMed", "Config_MoNuSeg"))
    assert (qata.batch_size, qata.rec_trans_num_layers1, qata.img_mask_rate, qata.dropout) == (32, 4, 0.5, False)
    assert (mosmed.lr, mosmed.epochs, mosmed.batch_size, mosmed.img_mask_rate) == ("exp", 400, 20, 0.3)
    assert (monuseg.token_len, monuseg.learning_rate, monuseg.early_stopping_patience) == (10, 1e-3, 50)


def test_round_trip_through_a_dict():
    config = Config().replace(epochs=5, clip_weights=None)
    assert Config.from_dict(config.to_dict()) == config


def test_parse_override_keeps_strings_that_are_not_literals():
    assert parse_override("train_dataset=datasets/x") == ("train_dataset", "datasets/x")
    assert parse_override("seed=1") == ("seed", 1)


def test_faithful_variant_changes_no_field_and_improved_sets_exactly_the_documented_ones():
    from utils.config import IMPROVED

    base = Config()
    assert base.variant == "faithful"
    assert Config().replace(variant="faithful") == base
    improved = base.replace(variant="improved")
    changed = {k for k, v in improved.to_dict().items() if v != base.to_dict()[k]}
    assert changed == set(IMPROVED) | {"variant"}
    assert all(getattr(improved, k) == v for k, v in IMPROVED.items())
    # Back to faithful from improved: every field the authors' again.
    assert improved.replace(variant="faithful") == base


def test_a_users_set_wins_over_the_variant(tmp_path):
    module = tmp_path / "Config_Improved.py"
    module.write_text("from utils.config import Config\nconfig = Config().replace(variant='improved')\n")
    assert load_config(str(module)).geometry == "report"
    # --set after the variant wins, whatever the order of the items.
    for overrides in (["geometry=none"], ["variant=improved", "geometry=none"], ["geometry=none", "variant=improved"]):
        cfg = load_config(str(module), overrides)
        assert cfg.geometry == "none" and cfg.variant == "improved" and cfg.interact_residual
    assert load_config(str(module), ["variant=faithful"]) == Config()
    # The resolved fields round-trip (config.json, checkpoints).
    cfg = load_config(str(module), ["geometry=none"])
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("item, fragment", [
    ("variant=better", "variant must be 'faithful'"),
    ("geometry=rot", "geometry must be one of"),
    ("text_guide='up3,mid'", "unknown decoder stage"),
    ("val_text_check_every=-1", "val_text_check_every"),
])
def test_bad_language_fields(item, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_config("Config_QaTa", [item])


def test_guided_stages_in_decoder_order():
    assert Config().guided_stages() == ()
    assert Config().replace(text_guide=" up2, up4 ").guided_stages() == ("up4", "up2")


def test_the_old_clip_names_are_accepted_for_the_text_tower_fields():
    config = Config().replace(clip_embed_dim=64, frozen_clip=False)
    assert (config.text_embed_dim, config.freeze_text_tower) == (64, False)
    saved = {**Config().to_dict(), "clip_embed_dim": 32, "frozen_clip": False}  # a session saved before the rename
    del saved["text_embed_dim"], saved["freeze_text_tower"]
    assert Config.from_dict(saved).text_embed_dim == 32 and not Config.from_dict(saved).freeze_text_tower
    assert load_config("Config_Demo", ["clip_embed_dim=16"]).text_embed_dim == 16
    with pytest.raises(ValueError, match="clip_embed_dim is the old name of text_embed_dim: give one of them"):
        Config().replace(clip_embed_dim=64, text_embed_dim=32)
    assert "clip_embed_dim" not in Config().to_dict()  # new configs are written with the new names
