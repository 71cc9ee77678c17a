"""vtr subpackage."""
