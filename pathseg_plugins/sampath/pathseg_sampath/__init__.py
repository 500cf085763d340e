"""SAM-Path for pathseg: SAM + HIPT encoders, a new neck and class-prompt tokens (semantic segmentation)."""
