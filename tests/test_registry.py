"""The service registry is the one list of index declarations: a module that owns collections
and declares ``INDEXES`` but is missing from ``INDEX_MODULES`` would run without its indexes."""

import importlib
import pkgutil

import wx_backend
from wx_backend.services import registry


def test_every_module_declaring_indexes_is_in_the_registry():
    declaring = {}
    for info in pkgutil.walk_packages(wx_backend.__path__, "wx_backend."):
        if ".sandbox" in info.name:
            continue
        module = importlib.import_module(info.name)
        if isinstance(getattr(module, "INDEXES", None), dict):
            declaring[id(module.INDEXES)] = info.name  # a package re-exporting its module's INDEXES counts once
    listed = {id(module.INDEXES) for module in registry.INDEX_MODULES}
    assert declaring, "no module declares INDEXES: the walk found nothing"
    assert sorted(declaring[key] for key in declaring.keys() - listed) == []
    assert listed <= declaring.keys()


def test_indexes_are_collected_from_every_listed_module():
    wanted = registry.indexes()
    for module in registry.INDEX_MODULES:
        for collection in module.INDEXES:
            assert collection in wanted
    assert "web_sessions" in wanted


def test_every_sandbox_module_with_routes_is_served():
    import wx_backend.sandbox
    from wx_backend.sandbox.app import ROUTE_MODULES

    with_routes = set()
    for info in pkgutil.walk_packages(wx_backend.sandbox.__path__, "wx_backend.sandbox."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if isinstance(getattr(module, "routes", None), list):
            with_routes.add(module.__name__)
    served = {module.__name__ for module in ROUTE_MODULES}
    assert with_routes - served == set()
