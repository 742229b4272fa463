"""The policy workbench (issue 25): drafts of a policy that authors edit, try, evaluate and
promote; the web pages are in `pages.py`, the files and rules in `drafts.py`."""
