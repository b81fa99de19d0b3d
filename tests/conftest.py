import os

# Keep CI runs light on a 2-core machine and output free of colour codes.
os.environ.setdefault("NO_COLOR", "1")
