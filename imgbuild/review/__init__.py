"""The review page: every target's image, state and reason, takes and earlier images (issue 12).

Imported only by `imgbuild review` and by the build's history hook (history.py, stdlib only).
"""
