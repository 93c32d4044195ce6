"""The NATS identities grant each service exactly what its router does, and JWTs we issue are
well-formed, signed by their issuer and read back by nats-py from a creds file."""

from __future__ import annotations

import pytest

from clipline.docs import routers
from shared.contracts import Event, JobAcceptedV1, JobCompletedV1
from shared.identities import SERVICES, tenant_imports, tenant_permissions
from shared.natsjwt import (
    ACCOUNT,
    USER,
    Key,
    Permissions,
    creds,
    creds_jwt,
    decode,
    user_jwt,
    verify,
)
from shared.streams import JOBS_STREAM_NAME


def test_every_service_has_an_identity_matching_its_router() -> None:
    described = {r.service: r for r in routers()}
    assert set(described) == set(SERVICES)
    for name, router in described.items():
        identity = SERVICES[name]
        assert set(router.emits) == set(identity.emits), name
        assert set(router.consumers) == {*identity.consumes, *identity.consumes_requests}, name
        assert router.inbox_prefix == identity.inbox_prefix + "."


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_service_may_publish_only_its_events_and_no_stream_admin(name: str) -> None:
    perms = SERVICES[name].permissions()
    assert not perms.everything
    events = {p for p in perms.pub if p.startswith("clipline.job.")}
    assert events == {e.subject_filter() for e in SERVICES[name].emits}
    forbidden = ("STREAM.DELETE", "STREAM.CREATE", "STREAM.UPDATE", "CONSUMER.DURABLE.DELETE")
    assert not [p for p in perms.pub if any(f in p for f in forbidden)]
    assert not [p for p in perms.pub if p.endswith(">") and p.count(".") < 2]
    heard = [Event.subject_filter_any()] if SERVICES[name].follows else []
    assert perms.sub == (f"_INBOX_{name}.>", *heard, *SERVICES[name].answers)
    assert perms.responds == bool(SERVICES[name].answers)
    jobs = f"$JS.API.CONSUMER.%s.{JOBS_STREAM_NAME}"
    # no unnamed (or wildcard-named) consumer on the jobs stream: either could change a durable
    assert jobs % "CREATE" not in perms.pub
    assert not [p for p in perms.pub if p.startswith(jobs % "CREATE" + ".*")]
    assert not [p for p in perms.pub if p.startswith(jobs % "MSG.NEXT" + ".*")]
    assert not [p for p in perms.pub if p.startswith("clipline.job.requested.")]  # no forging


def test_a_tenant_reaches_only_its_own_subjects() -> None:
    perms = tenant_permissions("acme")
    assert perms.pub == ("clipline.job.requested.v1.acme",)
    assert set(perms.sub) == {"clipline.job.*.v1.acme.*", "_INBOX.>"}
    imports = tenant_imports("acme", "ACLIPLINE")
    subjects = {str(i["subject"]) for i in imports}
    assert "clipline.job.requested.v1.acme" in subjects
    assert JobAcceptedV1.subject_filter("acme") in subjects
    assert JobCompletedV1.subject_filter("acme") in subjects
    # only its own; and no budget alert (a global window's alert tells of every tenant's spend)
    assert all(".v1.acme" in s for s in subjects)
    assert not any(s.startswith("clipline.job.budget_alert.") for s in subjects)


def test_a_user_jwt_is_signed_by_its_account_and_carries_its_permissions() -> None:
    account, user = Key.new(ACCOUNT), Key.new(USER)
    token = user_jwt(user, account, "svc", Permissions(pub=("a.b",), sub=("_INBOX_x.>",)))
    claims = decode(token)
    assert claims["iss"] == account.public
    assert claims["sub"] == user.public
    assert claims["nats"]["pub"] == {"allow": ["a.b"]}
    assert verify(token, account.public)
    assert not verify(token, Key.new(ACCOUNT).public)
    tampered = token.split(".")
    tampered[1] = tampered[1][:-2] + ("AA" if tampered[1][-2:] != "AA" else "BB")
    assert not verify(".".join(tampered), account.public)


def test_a_user_without_allowed_subjects_is_denied_everything() -> None:
    claims = decode(user_jwt(Key.new(USER), Key.new(ACCOUNT), "x", Permissions()))
    assert claims["nats"]["pub"] == {"deny": [">"]}
    assert claims["nats"]["sub"] == {"deny": [">"]}


def test_a_creds_file_has_the_nsc_layout_and_no_seed_in_reprs() -> None:
    account, user = Key.new(ACCOUNT), Key.new(USER)
    token = user_jwt(user, account, "t", Permissions(everything=True))
    text = creds(token, user)
    assert creds_jwt(text) == token
    assert f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------" in text
    assert user.seed not in repr(user)
    assert user.seed.startswith("SU")
    assert user.public.startswith("U")
    with pytest.raises(ValueError, match=r"not a NATS \.creds"):
        creds_jwt("nothing here")


def test_only_intake_asks_storage_for_assets_and_only_storage_answers() -> None:
    asking = [
        n for n, s in SERVICES.items() if "clipline.storage.assets.v1.*" in s.permissions().pub
    ]
    answering = [
        n for n, s in SERVICES.items() if "clipline.storage.assets.v1.*" in s.permissions().sub
    ]
    assert (asking, answering) == (["intake"], ["storage"])
    claims = decode(
        user_jwt(Key.new(USER), Key.new(ACCOUNT), "storage", SERVICES["storage"].permissions())
    )
    assert claims["nats"]["resp"] == {"max": 1, "ttl": 0}
    assert (
        "resp"
        not in decode(
            user_jwt(Key.new(USER), Key.new(ACCOUNT), "intake", SERVICES["intake"].permissions())
        )["nats"]
    )
    # a tenant reaches no assets subject: intake asks for it, for the API key's tenant
    assert not [p for p in tenant_permissions("acme").pub if p.startswith("clipline.storage.")]
