"""alignctl inside other people's training loops: a monitor for plain PyTorch loops and
callbacks for Lightning and Hugging Face (optional extras, imported lazily).

May import everything of the library (geometry, runs, evaluation, train, report); never cli.
"""
