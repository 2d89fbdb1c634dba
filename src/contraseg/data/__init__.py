"""Files -> cases -> preprocessed arrays -> training patches."""
