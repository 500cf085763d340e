"""pathseg-sam: the SAM baseline rows of the papers' tables (vanilla SAM and SAM*)."""
