"""Face matching's learned parts: the embedding projection and the score-normalisation cohort."""
