"""RecLMIS network: ``build_model(config)`` is the one factory."""

from nets.reclmis import RecLMIS


def build_model(config) -> RecLMIS:
    """Build the RecLMIS model for a :class:`utils.config.Config`."""
    return RecLMIS(config)
