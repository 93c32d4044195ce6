"""The clipline services: one package per independently deployed process."""
