"""The config groups as a package: Hydra finds them through `pipeline.conf` from an installed wheel."""
