"""Test helpers that ship with pathseg: runtime fixture builders (:mod:`pathseg_core.testing.fixtures`)."""
