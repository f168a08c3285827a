"""The A1111-compatible REST API (``/sdapi/v1``, ``/internal``): models, translation, auth, limits, routes."""
