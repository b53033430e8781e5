"""The built-in rule documents, one YAML file per appliance kind (a package so the files ship)."""
