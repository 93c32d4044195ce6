"""Native `GET /v1/jobs/{id}/assets`: fresh presigned URLs (on CLIPLINE_S3_PUBLIC_URL) of a
job's stored variants, asked of storage over NATS (intake holds no S3 key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.intake.http import DepsOf, Tenant, problem
from services.intake.openapi import problems
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


@router.get("/v1/jobs/{job_id}/assets", responses=problems(404, 409, 410, 503))
async def job_assets(job_id: str, deps: DepsOf, tenant: Tenant) -> JSONResponse:
    """Presigned GET URLs of the job's stored variants, valid until `expires_at`: 404 for an
    unknown job (or another tenant's), 409 while it runs or when it stored nothing, 410 once
    its assets were deleted, 503 when storage cannot answer now."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise problem(404, "not_found", f"no job {job_id!r} for this API key's tenant")
    reply = await deps.assets.ask(tenant, AssetsRequestV1(job_id=job_id, action="presign"))
    if reply.error is not None:
        detail = reply.detail or reply.error
        if reply.error == "not_found":
            detail = f"no job {job_id!r} for this API key's tenant"
        retry = {"Retry-After": "1"} if reply.error == "unavailable" else None
        raise problem(STATUS_OF.get(reply.error, 503), reply.error, detail, headers=retry)
    return JSONResponse(
        {
            "job_id": job_id,
            "expires_at": reply.expires_at.isoformat() if reply.expires_at else None,
            "assets": [u.model_dump(mode="json") for u in reply.urls],
        },
        headers={"Cache-Control": "no-store"},  # the URLs are credentials
    )
