"""QaTa-COV19 (the authors' task ``Covid19``): the base config's defaults are the authors' QaTa values."""

from utils.config import Config

config = Config()
