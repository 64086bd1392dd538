"""The model's contract, shared by training and serving: the feature table, the artifact (its
staged write and its verify-before-use loader), the typed view of its metadata and the inference
runtimes. Imports nothing from the rest of the package."""
