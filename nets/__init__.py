"""RecLMIS network: ``build_model(config)`` is the one factory."""


def build_model(config):
    """Build the RecLMIS model for a :class:`utils.config.Config`."""
    from nets.reclmis import RecLMIS

    return RecLMIS(config)
