"""The image repository (format v1, see docs/FORMAT.md): packs of content-addressed blobs,
index files, snapshot manifests. Write-once files made visible by rename; readers need no lock."""
