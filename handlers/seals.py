"""E-seals: 印章申请 (``POST /api/v1/seals``), 我的印章 (``GET``), 印章注销 (``DELETE``), the image."""

from __future__ import annotations

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
