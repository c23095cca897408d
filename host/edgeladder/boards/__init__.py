"""The board registry (boards/*.toml), board selection and the fit check."""
