"""RecLMIS network: ``build_model(config)`` is the one factory.

Importing the package registers the text towers: the built-in kinds in :mod:`nets.text_towers` (which
:mod:`nets.reclmis` imports), and a module that adds a tower of its own is imported here, so that it is registered
wherever a model is built.
"""

from nets.reclmis import RecLMIS


def build_model(config) -> RecLMIS:
    """Build the RecLMIS model for a :class:`utils.config.Config`."""
    return RecLMIS(config)
