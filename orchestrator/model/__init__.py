"""The model directory: reading MLmodel files and model URIs, requirements, environments."""
