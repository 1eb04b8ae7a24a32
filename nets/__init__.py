"""The networks: ``build_model(config)`` is the one factory, for the network ``config.model`` names.

Importing the package registers every model kind (:mod:`nets.models`: RecLMIS, the U-Net baseline, LViT,
GuideDecoder) and the text towers (:mod:`nets.text_towers`); a module that adds a model or a tower of its own is
imported here, so that it is registered wherever a model is built.
"""

from torch import nn

import nets.guidedecoder  # noqa: F401  (registers "guidedecoder")
import nets.lvit  # noqa: F401  (registers "lvit")
import nets.unet_baseline  # noqa: F401  (registers "unet")
from nets.models import model_kind
from nets.reclmis import RecLMIS  # noqa: F401  (registers "reclmis")


def build_model(config, text_tower: nn.Module = None) -> nn.Module:
    """Build the network ``config.model`` names (RecLMIS by default); ``text_tower``: an already built tower."""
    return model_kind(config.model).build(config, text_tower)
