"""The upstream provider port and its OpenAI Videos API adapter."""

from shared.provider.errors import (
    ProviderError,
    ProviderInvalidId,
    ProviderMalformedResponse,
    ProviderNoAnswer,
    ProviderNotFound,
    ProviderNotSent,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
    ProviderUnavailable,
)
from shared.provider.openai_videos import OpenAIVideosProvider
from shared.provider.port import CreateVideo, InputImage, VideoProvider
from shared.provider.wire import UpstreamVideo

__all__ = [
    "CreateVideo",
    "InputImage",
    "OpenAIVideosProvider",
    "ProviderError",
    "ProviderInvalidId",
    "ProviderMalformedResponse",
    "ProviderNoAnswer",
    "ProviderNotFound",
    "ProviderNotSent",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderServerError",
    "ProviderUnavailable",
    "UpstreamVideo",
    "VideoProvider",
]
