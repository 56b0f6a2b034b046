"""The one catalog reader `check` and `drift` share (migrate/catalog/)."""
