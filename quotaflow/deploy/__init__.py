"""The per-step deployment files, generated: one sizing table (`sizing.py`), one template per
file kind (`templates.py`), the generator behind `quotaflow func generate` (`generate.py`) and
the build-context filler behind `quotaflow func prepare` (`context.py`)."""
