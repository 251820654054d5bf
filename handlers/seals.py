"""E-seals: 印章申请 (``POST /api/v1/seals``), 我的印章 (``GET``), 印章注销 (``DELETE``), the image."""

from __future__ import annotations

from . import spec
from .base import APIHandler, authenticated


class SealsHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"seals": await self.app.seals.list_for_user(self.current_user)})

    @authenticated
    async def post(self) -> None:
        seal = await self.app.seals.issue(self.current_user, self.json_body())
        self.write_json({"seal": seal}, status=201)


class SealHandler(APIHandler):
    @authenticated
    async def get(self, seal_id: str) -> None:
        doc = await self.app.seals.get_owned(self.current_user, seal_id)
        self.write_json({"seal": self.app.seals.view(doc)})

    @authenticated
    async def delete(self, seal_id: str) -> None:
        seal = await self.app.seals.revoke(self.current_user, seal_id, self.json_body())
        self.write_json({"seal": seal})


class SealImageHandler(APIHandler):
    @authenticated
    async def get(self, seal_id: str) -> None:
        png = await self.app.seals.image(self.current_user, seal_id)
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "private, no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(png)


class SealRootHandler(APIHandler):
    """The seal authority's root certificate (public): import it to check signed contracts elsewhere."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/x-pem-file")
        self.set_header("Content-Disposition", 'attachment; filename="seal-root.pem"')
        self.finish(await self.app.seals.root_pem())


default_handlers = [
    (r"/api/v1/seal-authority/root.pem", SealRootHandler),
    (r"/api/v1/seals", SealsHandler),
    (r"/api/v1/seals/([^/]+)", SealHandler),
    (r"/api/v1/seals/([^/]+)/image", SealImageHandler),
]

_NOT_FOUND = ["seal_not_found"]
_SEAL = spec.obj({"seal": spec.ref("Seal")})

openapi = {
    "/api/v1/seal-authority/root.pem": {
        "get": spec.operation(
            "The seal authority's root certificate (PEM), to check signed contracts elsewhere",
            tag="seals",
            ok={200: {"description": "PEM", "content": {"application/x-pem-file": {"schema": {"type": "string"}}}}},
        ),
    },
    "/api/v1/seals": {
        "get": spec.operation(
            "我的印章: the user's seals", tag="seals", ok={200: spec.obj({"seals": spec.array(spec.ref("Seal"))})}
        ),
        "post": spec.operation(
            "印章申请: a generated seal or one from an uploaded image, proven by an SMS code",
            tag="seals",
            body=spec.obj(
                {
                    "kind": {"type": "string", "enum": ["generated", "uploaded"]},
                    "org_name": spec.STRING,
                    "credit_code": spec.STRING,
                    "legal_rep": spec.STRING,
                    "mobile": spec.STRING,
                    "sms_code": spec.STRING,
                },
                {"file_id": spec.STRING},
            ),
            ok={201: _SEAL},
            errors={
                400: ["sms_code_invalid", "sms_code_expired", "sms_code_exhausted"],
                404: ["file_not_found"],
                409: ["seal_limit_reached"],
                422: ["validation_failed", "seal_image_invalid"],
            },
        ),
    },
    "/api/v1/seals/{seal_id}": {
        "get": spec.operation("One of the user's seals", tag="seals", ok={200: _SEAL}, errors={404: _NOT_FOUND}),
        "delete": spec.operation(
            "印章注销: revoke a seal, proven by an SMS code to its mobile",
            tag="seals",
            body=spec.obj({"mobile": spec.STRING, "sms_code": spec.STRING}),
            ok={200: _SEAL},
            errors={
                400: ["sms_code_invalid", "sms_code_expired", "sms_code_exhausted"],
                404: _NOT_FOUND,
                409: ["seal_already_revoked", "seal_in_use"],
                422: ["validation_failed", "mobile_mismatch"],
            },
        ),
    },
    "/api/v1/seals/{seal_id}/image": {
        "get": spec.operation(
            "The seal's image (PNG)",
            tag="seals",
            ok={
                200: {
                    "description": "PNG",
                    "content": {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}},
                }
            },
            errors={404: _NOT_FOUND},
        ),
    },
}
