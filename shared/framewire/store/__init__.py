"""Where results and large payloads are kept: the results database and the blob store."""
