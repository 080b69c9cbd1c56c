"""The privacy pipeline: purpose streams, minimisation, keyed pseudonyms, consent and the data-subject rights."""
