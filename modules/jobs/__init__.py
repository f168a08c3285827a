"""The persistent side of the generation service: the job queue and the image history, in one SQLite file."""
