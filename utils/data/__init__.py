"""Data: image and mask files, report tables, checks, augmentation, tokenizers and the demo set."""
