"""Known-content matching: PDQ and exact hashes, hash banks, and an index that scales to 10M+.

The pipeline's first stage (`service.HashService.check`): an image in, bank matches out, so a
hit in an enabled bank decides the item before any model runs. Modules: `hashers` (PDQ, MD5,
SHA-256), `index` (exact multi-index Hamming search), `store` (bank tables), `io` (list import
and export), `service` (banks + matching + flood guard).
"""
