"""Everything that knows a Kaggle convention: the competitions' test sides (Cornell 2020, BirdCLEF 2021-2025),
their row ids, submissions and metrics, their truth, and the Kaggle API verbs. The rest of birdsed speaks of
recordings, 5 s rows and the truth table of birdsed.truth."""
