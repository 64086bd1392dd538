"""Training: the UCI data (download, checksum, validation), model selection with the quality gate,
the model card and the champion/challenger comparison of a release. Imports only the core; the
serving app never imports this package."""
