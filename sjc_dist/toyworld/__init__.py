"""The toy world: procedural 3D objects with known truth, and the small models trained on their renders."""
