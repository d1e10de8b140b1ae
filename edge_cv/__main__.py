"""`python -m edge_cv run|check|train …`: the same commands as `plantbus cv …`, for an edge computer whose image
runs only the vision part."""

from __future__ import annotations

from hub.cli import cv_group

if __name__ == "__main__":
    cv_group(prog_name="python -m edge_cv")
