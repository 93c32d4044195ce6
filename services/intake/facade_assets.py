"""Native `GET /v1/jobs/{id}/assets`: fresh presigned URLs (on CLIPLINE_S3_PUBLIC_URL) of a
job's stored variants, asked of storage over NATS (intake holds no S3 key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.intake.http import DepsOf, Tenant
from shared.contracts.assets import AssetsRequestV1
from shared.contracts.ids import JOB_ID_RE

STATUS_OF = {
    "not_found": 404,
    "no_such_variant": 404,
    "deleted": 410,
    "not_finished": 409,
    "no_assets": 409,
    "unavailable": 503,
    "invalid_request": 503,  # ours, not the caller's: storage refused what intake sent
}
router = APIRouter()


def _error(code: int, reason: str, detail: str) -> JSONResponse:
    """The native API's envelope (as services/intake/http.py answers)."""
    return JSONResponse({"error": {"reason": reason, "detail": detail, "field": None}}, code)


@router.get("/v1/jobs/{job_id}/assets")
async def job_assets(job_id: str, deps: DepsOf, tenant: Tenant) -> JSONResponse:
    """Presigned GET URLs of the job's stored variants, valid until `expires_at`: 404 for an
    unknown job (or another tenant's), 409 while it runs or when it stored nothing, 410 once
    its assets were deleted, 503 when storage cannot answer now."""
    if not JOB_ID_RE.fullmatch(job_id):
        return _error(404, "not_found", f"no job {job_id!r} for this API key's tenant")
    reply = await deps.assets.ask(tenant, AssetsRequestV1(job_id=job_id, action="presign"))
    if reply.error is not None:
        detail = reply.detail or reply.error
        if reply.error == "not_found":
            detail = f"no job {job_id!r} for this API key's tenant"
        answer = _error(STATUS_OF.get(reply.error, 503), reply.error, detail)
        if reply.error == "unavailable":
            answer.headers["Retry-After"] = "1"
        return answer
    return JSONResponse(
        {
            "job_id": job_id,
            "expires_at": reply.expires_at.isoformat() if reply.expires_at else None,
            "assets": [u.model_dump(mode="json") for u in reply.urls],
        },
        headers={"Cache-Control": "no-store"},  # the URLs are credentials
    )
