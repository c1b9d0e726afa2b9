"""Detection models as data: manifests (file, input size, normalisation, decoder), built-ins."""
