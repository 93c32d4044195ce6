"""Sora 2 simulator: a local stand-in for the OpenAI Videos API (`/v1/videos`)."""
